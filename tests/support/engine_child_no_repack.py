"""An engine child (app/core/isolated_engine.py) with llama.cpp's CPU weight repacking turned off.

Why: on the CPU, llama.cpp keeps a repacked copy of Q4_K weights in this process's RAM and multiplies with
kernels made for it; a worker's CPU gets plain buffers over RPC and multiplies with the ordinary kernels.
The two sum in a different order, so a split and a local load differ in the last bits of the logits, which
flips near-tied greedy picks on random-weight models (measured: gemma-3-270m and the generated 1.1B both
diverge after a few tokens with repacking on, and match byte for byte with it off). With the same kernels
everywhere any difference left would be the split's or the transport's: that is what the tests check.

    IsolatedEngine([sys.executable, "tests/support/engine_child_no_repack.py"])
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.core.native import llama


def main() -> int:
    lib = llama()
    default_params = lib.llama_model_default_params

    def params_without_repack() -> Any:
        params = default_params()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = params_without_repack
    from app.core.isolated_engine import child_main

    return child_main()


if __name__ == "__main__":
    raise SystemExit(main())
