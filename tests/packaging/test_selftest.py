"""`hearth --self-test` from the source tree: the real checks pass; real failures give one line and exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app import selftest
from app.selftest import CheckResult, SelfTestError

REPO = Path(__file__).resolve().parents[2]


def run_hearth(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_self_test_passes_with_one_line():
    result = run_hearth("--self-test")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert "self-test passed" in lines[0]
    for name in ("modules ok", "qt ok", "engine ok (4 tokens", "store ok", "templates ok"):
        assert name in lines[0]


def test_a_crashing_check_is_one_line_and_exit_1():
    # Qt aborts the process when the platform plugin cannot be loaded: the child dies of SIGABRT.
    result = run_hearth("--self-test", QT_QPA_PLATFORM="no-such-platform")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert "FAILED" in lines[0]
    assert "qt: crashed (SIGABRT)" in lines[0]
    assert "(passed: modules)" in lines[0]


def test_self_test_flag_does_not_reach_the_cli():
    # Anything else after --self-test is a CLI argument, and the CLI rejects it with its usual exit status.
    result = run_hearth("--self-test", "--json")
    assert result.returncode == 2
    assert "self-test passed" not in result.stdout


def test_failing_check_is_reported_with_its_reason(tmp_path: Path):
    def broken(workdir: Path) -> str:
        raise SelfTestError("the engine is on fire")

    def fine(workdir: Path) -> str:
        return "all good"

    results = selftest.run_checks(tmp_path, [("broken", broken), ("fine", fine)])
    assert [(r.name, r.ok, r.detail) for r in results] == [
        ("broken", False, "the engine is on fire"),
        ("fine", True, "all good"),
    ]
    assert selftest.read_results(tmp_path) == (results, None)
    line = selftest.summarize(results, None, 1.25)
    assert line.endswith("FAILED in 1.2 s: broken: the engine is on fire (passed: fine)")


def test_a_check_that_never_finished_is_named(tmp_path: Path):
    done = CheckResult("modules", True, "23 imported", 0.5)
    (tmp_path / selftest.RESULTS_FILE).write_text(
        "\n".join(
            [
                json.dumps({"started": "modules"}),
                json.dumps(done.__dict__),
                json.dumps({"started": "engine"}),
                '{"na',
            ]
        )
    )
    assert selftest.read_results(tmp_path) == ([done], "engine")


def test_exit_descriptions():
    assert selftest.describe_exit(-4) == "SIGILL"
    assert selftest.describe_exit(0xC000001D) == "0xC000001D"
    assert selftest.describe_exit(3) == "exit status 3"


def test_child_environment_keeps_the_user_home_out(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    env = selftest.child_environment(tmp_path)
    assert env["HEARTH_HOME"] == str(tmp_path / "home")
    assert env[selftest.DIR_ENV] == str(tmp_path)
    if sys.platform.startswith("linux"):
        assert env["QT_QPA_PLATFORM"] == "offscreen"
