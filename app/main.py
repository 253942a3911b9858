"""Hearth's single entry point (`hearth`, `python -m app`, the frozen app): the GUI or a CLI command."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# No request the user did not ask for: huggingface_hub reads this once, when it is first imported.
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

SELF_TEST_FLAG = "--self-test"
ENGINE_CHILD_FLAG = "--engine-child"  # internal: serve an engine to a parent Hearth (app/core/isolated_engine.py)


def main(argv: Sequence[str] | None = None) -> int:
    """No arguments opens the app; `--self-test` checks the install; any other argument is a CLI command.

    Neither `--self-test` nor a CLI command ever opens a window.
    """
    if (argv if argv is not None else sys.argv[1:2]) == ["--template-worker"]:  # a bundle's template sandbox
        from app.core.template_sandbox import serve

        return serve()
    from app.core.native import preload_llama_libraries

    preload_llama_libraries()  # before anything imports numpy (see app/core/native.py)
    args = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-psn_")]  # macOS Finder
    if args == [SELF_TEST_FLAG]:
        from app.selftest import main as self_test

        return self_test()
    if args == [ENGINE_CHILD_FLAG]:
        from app.core.isolated_engine import child_main

        return child_main()
    if args:
        from app.cli import run

        return run(args)
    from app.ui.app import run_gui  # imported only here so the CLI never loads Qt

    return run_gui()


if __name__ == "__main__":
    raise SystemExit(main())
