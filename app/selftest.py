"""`hearth --self-test`: prove, headless and without opening a window, that this install really works.

It is written for the frozen bundle above all: a missing hidden import, Qt plugin, shared library or CPU
variant of llama.cpp shows up here instead of on a user's desktop. Each component has one check function
(`check_modules`, `check_qt`, `check_engine`, `check_store`, `check_documents`) taking a scratch folder and
returning a short detail string, or raising. The engine and store checks go through Hearth's own engine and store, so a
bundle that lost one of their native libraries (libllama, the ggml CPU variants, SQLite's FTS5) fails here.

The checks run in a child process (the same executable with HEARTH_SELF_TEST_DIR set), so that a crash
— SIGILL from a CPU variant the machine lacks, Qt aborting for want of a platform plugin, a segfault in
a native library — is still reported as one line and exit status 1 rather than a core dump.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from app import APP_NAME, __version__

DIR_ENV = "HEARTH_SELF_TEST_DIR"  # set in the child: its scratch folder, where it writes results.jsonl
RESULTS_FILE = "results.jsonl"
CHILD_TIMEOUT_S = 180.0
GENERATED_TOKENS = 4
EXIT_PASSED = 0
EXIT_FAILED = 1


class SelfTestError(Exception):
    """A check found something wrong; str() is the one-line reason."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: detail is what was found (ok) or why it failed."""

    name: str
    ok: bool
    detail: str
    seconds: float


# --- the checks (run in the child) ----------------------------------------------------------------------

_qt_app: object | None = None


def check_modules(workdir: Path) -> str:
    """Every module of the `app` package imports: a bundle that lacks a hidden import fails here."""
    import app

    names = sorted(
        info.name
        for info in pkgutil.walk_packages(app.__path__, "app.")
        if info.name.rsplit(".", 1)[-1] != "__main__"  # importing it would start Hearth
    )
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise SelfTestError(f"cannot import {name}: {type(exc).__name__}: {exc}") from exc
    if len(names) < 5:
        raise SelfTestError(f"only {len(names)} modules of the app package were found; the install is damaged")
    return f"{len(names)} imported"


def check_qt(workdir: Path) -> str:
    """Qt starts (offscreen without a display), renders the SVG app icon and a widget; no window opens."""
    from PySide6 import __version__ as pyside_version
    from PySide6.QtCore import QSize
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication, QLabel

    from app.resources import icon_path

    global _qt_app
    if QApplication.instance() is None:
        _qt_app = QApplication([sys.argv[0] if sys.argv else "hearth"])  # lives until the child exits
    # Rendering the SVG needs Qt's svg icon engine and image format plugins to be in the bundle.
    image = QIcon(str(icon_path("hearth.svg"))).pixmap(QSize(64, 64)).toImage()
    if image.isNull() or image.pixelColor(32, 40).alpha() == 0:
        raise SelfTestError("the SVG app icon did not render: Qt's svg plugins are missing from the install")
    label = QLabel(f"{APP_NAME} self-test")
    label.resize(240, 40)
    if label.grab().isNull():  # grab() paints the widget without showing it
        raise SelfTestError("Qt could not paint a widget")
    label.deleteLater()
    return f"{QApplication.platformName()}, PySide6 {pyside_version}"


def check_engine(workdir: Path) -> str:
    """Hearth's engine (llama.cpp) loads a tiny generated GGUF and generates a few tokens on the CPU."""
    import llama_cpp

    from app.core.engine import GenerationStats, PromptRequest
    from app.core.llama_engine import LlamaCppEngine
    from app.core.load_config import LoadConfig
    from app.core.sampling import SamplingSettings
    from app.core.tiny_model import write_tiny_model

    model_path = write_tiny_model(workdir / "self-test.gguf")
    engine = LlamaCppEngine()
    try:
        loaded = engine.load(model_path, LoadConfig(n_gpu_layers=0, n_ctx=256, n_threads=1))
        eos = loaded.info.eos_token_id if loaded.info.eos_token_id is not None else 2
        # Forbidding end-of-sequence makes exactly GENERATED_TOKENS come out of any random tiny model.
        sampling = SamplingSettings(temperature=0.0, max_tokens=GENERATED_TOKENS, seed=1, logit_bias=((eos, -100.0),))
        stats = None
        for event in engine.generate(PromptRequest(text="hello world", sampling=sampling)):
            if isinstance(event, GenerationStats):
                stats = event
    finally:
        engine.unload()
    if stats is None or stats.error:
        raise SelfTestError(f"llama.cpp failed to generate: {stats.error if stats else 'no result'}")
    if stats.generated_tokens != GENERATED_TOKENS:
        raise SelfTestError(f"llama.cpp generated {stats.generated_tokens} tokens instead of {GENERATED_TOKENS}")
    return f"{stats.generated_tokens} tokens, llama-cpp-python {llama_cpp.__version__}, CPU {_cpu_level(llama_cpp)}"


def check_store(workdir: Path) -> str:
    """Hearth's history store opens a fresh SQLite file (WAL), writes a conversation and finds it with FTS5."""
    import sqlite3

    from app.core.store import Store

    db_path = workdir / "self-test.sqlite3"
    store = Store.open(db_path)
    try:
        conversation = store.create_conversation(title="self-test")
        store.add_message(conversation.id, "user", "the hearth is warm")
    finally:
        store.close()
    store = Store.open(db_path)  # a second connection reads what the first committed
    try:
        hits = store.search("hearth")
        mode = store.db.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        store.close()
    if [hit.conversation_id for hit in hits] != [conversation.id]:
        raise SelfTestError(f"the history store did not find what it wrote (got {hits!r})")
    if mode != "wal":
        raise SelfTestError(f"SQLite refused WAL mode (got {mode!r})")
    return f"SQLite {sqlite3.sqlite_version}, WAL, FTS5"


def check_documents(workdir: Path) -> str:
    """The document index opens (sqlean's SQLite with FTS5, the sqlite-vec extension loaded from the install),
    indexes a Markdown file and finds it by keywords and by a vector."""
    import numpy as np
    import sqlite_vec

    from app.core.documents.index import DocumentIndex
    from app.core.documents.indexer import index_collection

    folder = workdir / "documents"
    folder.mkdir()
    (folder / "notes.md").write_text("# Hearth\n\nThe hearth is warm and the kettle sings.\n", encoding="utf-8")
    index = DocumentIndex(workdir / "documents.sqlite3")
    try:
        index.add_collection("self-test", [folder])
        index_collection(index, "self-test")
        ids = [row[0] for row in index.unembedded("self-test")]
        vector = np.ones((len(ids), 4), dtype=np.float32) / 2.0  # unit length
        index.write_vectors("self-test", ids, vector, "self-test")
        found = index.search("kettle", ["self-test"], k=1, query_vector=vector[0])
    finally:
        index.close()
    if found.mode != "hybrid" or not found.hits or "kettle" not in found.hits[0].text:
        raise SelfTestError(f"the document index did not find what it indexed ({found.mode}, {len(found.hits)} hits)")
    return f"FTS5 and sqlite-vec {sqlite_vec.__version__}"


def check_templates(workdir: Path) -> str:
    """A chat template renders in the sandbox's worker process (a bundle starts it as `Hearth --template-worker`)."""
    from app.core import template_sandbox

    text = template_sandbox.render_jinja("{{ messages[0].content }}!", [{"role": "user", "content": "warm"}])
    peak = template_sandbox.worker_peak_bytes()
    template_sandbox.shutdown()
    if text != "warm!" or peak is None:
        raise SelfTestError(f"the template sandbox answered {text!r} (worker running: {peak is not None})")
    return "rendered in the sandbox worker"


CHECKS: tuple[tuple[str, Callable[[Path], str]], ...] = (
    ("modules", check_modules),
    ("qt", check_qt),
    ("engine", check_engine),
    ("store", check_store),
    ("documents", check_documents),
    ("templates", check_templates),
)

# The best instruction set the loaded CPU backend uses, first match wins (llama_print_system_info lists them).
_CPU_LEVELS = ("AMX_INT8", "AVX512", "AVX_VNNI", "AVX2", "AVX", "SSE3", "SVE", "DOTPROD", "NEON")


def _cpu_level(llama_cpp: object) -> str:
    info = llama_cpp.llama_print_system_info().decode(errors="replace")  # type: ignore[attr-defined]
    enabled = {part.split("=")[0].strip() for part in info.split("|") if part.strip().endswith("= 1")}
    return next((level for level in _CPU_LEVELS if level in enabled), "baseline")


# --- the child: run the checks, one JSON line each ------------------------------------------------------


def run_checks(workdir: Path, checks: Sequence[tuple[str, Callable[[Path], str]]] = CHECKS) -> list[CheckResult]:
    """Run every check in this process, appending to workdir/results.jsonl as each starts and ends.

    The file is flushed line by line so that, if a check kills the process, the parent knows which one.
    """
    results: list[CheckResult] = []
    with (workdir / RESULTS_FILE).open("a", encoding="utf-8") as log:
        for name, check in checks:
            log.write(json.dumps({"started": name}) + "\n")
            log.flush()
            start = time.perf_counter()
            try:
                result = CheckResult(name, True, check(workdir), time.perf_counter() - start)
            except Exception as exc:
                detail = str(exc) if isinstance(exc, SelfTestError) else f"{type(exc).__name__}: {exc}"
                traceback.print_exc(file=sys.stderr)  # the parent shows the last line; the rest helps a bug report
                result = CheckResult(name, False, _one_line(detail), time.perf_counter() - start)
            results.append(result)
            log.write(json.dumps(asdict(result)) + "\n")
            log.flush()
    return results


def _child_main(workdir: Path) -> int:
    results = run_checks(workdir)
    return EXIT_PASSED if all(r.ok for r in results) else EXIT_FAILED


# --- the parent: start the child, read its results, print one line -------------------------------------


def child_command() -> list[str]:
    """How to start this same Hearth again: the frozen executable, or this interpreter with `-m app`."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "--self-test"]
    return [sys.executable, "-m", "app", "--self-test"]


def child_environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env[DIR_ENV] = str(workdir)
    # Nothing the checks do may touch the user's models, history or settings.
    env["HEARTH_HOME"] = str(workdir / "home")
    has_display = any(env.get(var) for var in ("DISPLAY", "WAYLAND_DISPLAY"))
    if sys.platform.startswith("linux") and not has_display:
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
    return env


def read_results(workdir: Path) -> tuple[list[CheckResult], str | None]:
    """The finished checks, and the name of a check that started but never finished (it crashed)."""
    results: list[CheckResult] = []
    unfinished: str | None = None
    path = workdir / RESULTS_FILE
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the crash
        if "started" in record:
            unfinished = record["started"]
        else:
            results.append(CheckResult(**record))
            unfinished = None
    return results, unfinished


def describe_exit(returncode: int) -> str:
    """'SIGILL' for a POSIX signal, '0xC000001D' for a Windows exception code, else 'exit status N'."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-returncode).name
        return f"signal {-returncode}"
    if returncode >= 0xC0000000:
        return f"0x{returncode:08X}"
    return f"exit status {returncode}"


def summarize(results: Sequence[CheckResult], crash: str | None, seconds: float) -> str:
    """The one-line report."""
    head = f"{APP_NAME} {__version__} self-test"
    failed = [r for r in results if not r.ok]
    if crash is None and not failed and results:
        details = "; ".join(f"{r.name} ok ({r.detail})" for r in results)
        return f"{head} passed in {seconds:.1f} s: {details}"
    problems = [f"{r.name}: {r.detail}" for r in failed]
    if crash is not None:
        problems.append(crash)
    passed = ", ".join(r.name for r in results if r.ok) or "none"
    return f"{head} FAILED in {seconds:.1f} s: {'; '.join(problems)} (passed: {passed})"


def run_self_test(timeout_s: float = CHILD_TIMEOUT_S) -> tuple[int, str]:
    """Run every check in a child process; returns (exit status, one-line report)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hearth-self-test-") as tmp:
        workdir = Path(tmp)
        crash: str | None = None
        try:
            proc = subprocess.run(
                child_command(),
                env=child_environment(workdir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout_s,
                check=False,
            )
            returncode, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:
            returncode, stderr = None, exc.stderr or b""
        results, unfinished = read_results(workdir)
        expected = {name for name, _ in CHECKS}
        if returncode is None:
            crash = f"{unfinished or 'start-up'}: no answer after {timeout_s:.0f} s"
        elif unfinished is not None or (returncode != EXIT_PASSED and all(r.ok for r in results)):
            last = _last_line(stderr)
            crash = f"{unfinished or 'start-up'}: crashed ({describe_exit(returncode)})" + (f": {last}" if last else "")
        elif {r.name for r in results} != expected:
            crash = f"only {len(results)} of {len(expected)} checks ran"
    line = summarize(results, crash, time.perf_counter() - start)
    ok = crash is None and bool(results) and all(r.ok for r in results)
    return (EXIT_PASSED if ok else EXIT_FAILED), line


def main() -> int:
    """Entry point for `hearth --self-test`: the parent prints one line; the child runs the checks."""
    workdir = os.environ.get(DIR_ENV)
    if workdir:
        return _child_main(Path(workdir))
    status, line = run_self_test()
    print(line, flush=True)
    return status


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return _one_line(lines[-1], 200) if lines else ""
