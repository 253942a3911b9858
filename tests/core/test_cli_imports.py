"""The quick `hearth` commands import only what they use: no Hub client, numpy, gguf, jinja2, Qt or llama.cpp.

Every command imports every command module to build its parser, so one heavy import at the top of any of
them (or of a core module they reach) costs every command hundreds of milliseconds. This is checked by
structure, not by timing: `python -X importtime` lists every module a fresh process imported.
tests/benchmarks/bench_cli.py measures the wall times against the 150 ms target.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.paths import AppPaths
from app.core.store import Store

REPO = Path(__file__).resolve().parents[2]
# Top-level packages that cost 0.1-0.5 s to import between them and that none of these commands needs.
HEAVY = ("huggingface_hub", "httpx2", "numpy", "gguf", "jinja2", "PySide6", "llama_cpp")


def imported_modules(*args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """The modules `python -m app ARGS` imported (its `-X importtime` report), and the finished process."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "app", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ.copy(),
        timeout=120,
    )
    modules = set()
    lines = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:"):  # "import time: <self us> | <cumulative us> | <indented name>"
            name = line.split("|")[2].strip()
            if name != "imported package":  # the report's header line
                modules.add(name)
        else:
            lines.append(line)
    done.stderr = "\n".join(lines)
    assert "app.cli" in modules and "argparse" in modules, done.stderr[-2000:]  # the report was read
    return modules, done


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name.split(".")[0] in HEAVY)


def test_the_report_parser_sees_a_heavy_import(hearth_home: AppPaths, tiny_model: Path) -> None:
    """The check can fail: `hearth templates` renders nothing but imports the template machinery (jinja2)."""
    modules, done = imported_modules("templates")
    assert done.returncode == 0, done.stderr
    assert "jinja2" in heavy_in(modules)


def test_help_imports_nothing_heavy(hearth_home: AppPaths) -> None:
    modules, done = imported_modules("--help")
    assert done.returncode == 0 and "models" in done.stdout, done.stderr
    assert heavy_in(modules) == []


@pytest.mark.parametrize("extra", [[], ["--json", "--tensors"]])
def test_info_reads_the_header_without_gguf_or_numpy(hearth_home: AppPaths, tiny_model: Path, extra: list[str]):
    modules, done = imported_modules("info", str(tiny_model), *extra)
    assert done.returncode == 0 and "Tiny Llama Test" in done.stdout, done.stderr
    assert heavy_in(modules) == []
    assert "app.core.gguf_reader" in modules  # Hearth's own reader did the work


def test_info_on_a_262k_token_vocabulary_needs_no_numpy(hearth_home: AppPaths, gemma_path: Path) -> None:
    modules, done = imported_modules("info", str(gemma_path))
    assert done.returncode == 0 and "262144" in done.stdout, done.stdout + done.stderr
    assert heavy_in(modules) == []


def test_models_imports_nothing_heavy(hearth_home: AppPaths, tiny_model: Path) -> None:
    paths = hearth_home.ensure()
    shutil.copy(tiny_model, paths.models_dir / "tiny.gguf")
    modules, done = imported_modules("models")
    assert done.returncode == 0 and "Tiny Llama Test" in done.stdout and "1 models" in done.stdout, done.stderr
    assert heavy_in(modules) == []
    assert "app.core.library" in modules


def test_history_list_imports_nothing_heavy(hearth_home: AppPaths) -> None:
    paths = hearth_home.ensure()
    with Store.open(paths.history_db) as store:
        store.create_conversation(title="Rivers and towns")
    modules, done = imported_modules("history", "list")
    assert done.returncode == 0 and "Rivers and towns" in done.stdout, done.stderr
    assert heavy_in(modules) == []
    assert "app.core.gguf_info" not in modules  # the history needs no model file either
