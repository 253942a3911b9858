"""Build the real Linux bundle with packaging/build.py, run it, install it from its tarball and remove it.

Slow: PyInstaller takes about a minute. The engine inside is, by HEARTH_BUNDLE_ENGINE:
- "rpc-libs" (default): the RPC-enabled llama.cpp libraries the RPC tests build anyway
  (tests/support/llama_tools.py, cached per machine), so the test suite compiles llama.cpp once;
- "portable": what a release ships, llama.cpp built for any x86-64 CPU with each CPU variant as a backend
  module (about 15 minutes the first time on a machine: ggml's CPU code is compiled 14 times; cached
  afterwards). The checks that only this build promises (no AVX outside the AVX variants, the variants next
  to the executable) run with it; run them before a release (README "Packaging");
- "installed": the venv's own llama.cpp (no RPC), for a quick local try.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "packaging" / "dist"
BUNDLE = DIST / "Hearth"
# Captured at import, before the autouse fixture points HOME into a tmp dir: the engine cache must survive.
BUILD_ENV = {key: value for key, value in os.environ.items() if key != "HEARTH_HOME"}
ENGINE = os.environ.get("HEARTH_BUNDLE_ENGINE", "rpc-libs")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="builds the Linux bundle"),
]


@pytest.fixture(scope="module")
def built() -> Path:
    """Run packaging/build.py once for this module; returns the tarball it made."""
    if ENGINE == "rpc-libs":
        from tests.support import llama_tools

        engine_args = ["--engine-libs", str(llama_tools.lib_dir())]
    else:
        engine_args = ["--engine", ENGINE]
    result = subprocess.run(
        [sys.executable, str(REPO / "packaging" / "build.py"), *engine_args],
        cwd=REPO,
        env=BUILD_ENV,
        capture_output=True,
        text=True,
        timeout=3500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    tarballs = sorted(DIST.glob("Hearth-*-linux-*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    return tarballs[0]


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def clean_env(tmp_path: Path) -> dict[str, str]:
    """A user's environment: no venv, no PYTHONPATH, no display, a home of its own."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8"}
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def test_bundle_self_test_passes(built: Path, tmp_path: Path):
    result = run([str(BUNDLE / "hearth"), "--self-test"], clean_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    line = result.stdout.strip()
    assert "\n" not in line and "self-test passed" in line, line
    assert "qt ok (offscreen" in line and "engine ok (4 tokens" in line and "store ok" in line
    assert not (tmp_path / "home" / ".local").exists(), "the self-test wrote into the user's home"


def test_bundle_layout(built: Path):
    internal = BUNDLE / "_internal"
    assert (internal / "resources" / "icons" / "hearth.svg").is_file()
    plugins = internal / "PySide6" / "Qt" / "plugins"
    assert (plugins / "platforms" / "libqxcb.so").is_file()
    assert (plugins / "platforms" / "libqoffscreen.so").is_file()
    assert (plugins / "iconengines" / "libqsvgicon.so").is_file()
    assert not (plugins / "platforms" / "libqvnc.so").exists()
    assert not (plugins / "platformthemes" / "libqgtk3.so").exists()
    dangling = [p for p in BUNDLE.rglob("*") if p.is_symlink() and not p.exists()]
    assert dangling == []
    engine = internal / "llama_cpp" / "lib"
    assert (engine / "libllama.so").is_file() and (engine / "libggml-base.so").is_file()
    assert not list(internal.glob("libllama.so*")), "the engine libraries are shipped twice"
    if ENGINE == "portable":
        # Every CPU variant sits next to the executable, where ggml looks, and no single-CPU backend is left.
        variants = {p.name for p in BUNDLE.glob("libggml-cpu-*.so")}
        assert {"libggml-cpu-x64.so", "libggml-cpu-haswell.so", "libggml-cpu-skylakex.so"} <= variants
        assert not list(engine.glob("libggml-cpu*"))
        # The RPC backend too (a module of its own in this build, loaded from the same folder).
        assert (BUNDLE / "libggml-rpc.so").is_file() and not list(engine.glob("libggml-rpc*"))


def vex_instructions(library: Path) -> int:
    """How many AVX-family (VEX/EVEX-encoded, v-prefixed) instructions a library's code holds."""
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True, check=True
    ).stdout
    return len(re.findall(r"\tv[a-z0-9]+ ", listing))


@pytest.mark.skipif(ENGINE != "portable", reason="only the portable engine promises this")
def test_engine_runs_on_cpus_without_avx(built: Path):
    # Everything but the AVX variants must run on any x86-64 CPU: a -march=native build would use AVX here.
    baseline = [*(BUNDLE / "_internal" / "llama_cpp" / "lib").glob("*.so"), BUNDLE / "libggml-cpu-x64.so"]
    baseline.append(BUNDLE / "libggml-rpc.so")
    assert {lib.name: vex_instructions(lib) for lib in baseline} == {lib.name: 0 for lib in baseline}
    assert vex_instructions(BUNDLE / "libggml-cpu-haswell.so") > 1000  # the AVX2 variant really is one


@pytest.mark.skipif(ENGINE == "installed", reason="the venv's own llama.cpp is built without RPC")
def test_bundle_engine_has_rpc(built: Path, tmp_path: Path):
    result = run([str(BUNDLE / "hearth"), "hw", "--json"], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rpc"] is True
    worker = subprocess.Popen(
        [str(BUNDLE / "hearth"), "rpc-worker", "--port", str(_free_port())],
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        time.sleep(3)
        assert worker.poll() is None, worker.communicate()[0]
    finally:
        worker.send_signal(signal.SIGINT)
        output = worker.communicate(timeout=30)[0]
    assert worker.returncode == 0 and "RPC worker stopped" in output, output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_cli_runs_from_the_bundle(built: Path, tmp_path: Path):
    from app.core.tiny_model import write_tiny_model

    model = write_tiny_model(tmp_path / "tiny.gguf")
    result = run([str(BUNDLE / "hearth"), "info", str(model), "--json"], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert '"architecture": "llama"' in result.stdout
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"hello")
    result = run([str(BUNDLE / "hearth"), "info", str(bad)], clean_env(tmp_path))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_tarball_installs_menu_entry_and_uninstalls(built: Path, tmp_path: Path):
    env = clean_env(tmp_path)
    home = Path(env["HOME"])
    with tarfile.open(built) as tar:
        tar.extractall(tmp_path / "unpacked", filter="tar")
    (unpacked,) = (tmp_path / "unpacked").iterdir()

    result = run(["sh", str(unpacked / "install.sh")], env)
    assert result.returncode == 0, result.stderr
    app_dir = home / ".local" / "opt" / "Hearth"
    desktop = home / ".local" / "share" / "applications" / "hearth.desktop"
    entry = desktop.read_text()
    assert f"Exec={app_dir}/hearth %F" in entry and "Icon=hearth" in entry and "@EXEC@" not in entry
    icons = home / ".local" / "share" / "icons" / "hicolor"
    assert (icons / "48x48" / "apps" / "hearth.png").is_file()
    assert (icons / "scalable" / "apps" / "hearth.svg").is_file()
    launcher = home / ".local" / "bin" / "hearth"
    result = run([str(launcher), "--self-test"], env)
    assert result.returncode == 0, result.stdout + result.stderr

    result = run(["sh", str(app_dir / "uninstall.sh")], env)
    assert result.returncode == 0, result.stderr
    assert not app_dir.exists() and not desktop.exists() and not launcher.exists()
    assert not (icons / "48x48" / "apps" / "hearth.png").exists()
