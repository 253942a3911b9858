"""`hearth search / files / download / downloads / token` as a user runs them: real subprocesses."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.core.paths import AppPaths
from app.core.transfer import CHUNK_SIZE
from tests.core.hub.conftest import BIG, GATED, Q4, REPO
from tests.support.child_signals import default_signals
from tests.support.fake_hub import FakeHub

BIG_NAME = Path(BIG).name


def env_for(hub_url: str) -> dict[str, str]:
    env = os.environ.copy()
    env["HF_ENDPOINT"] = hub_url
    return env


def hearth(hub_url: str, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        capture_output=True, text=True, env=env_for(hub_url), input=stdin, timeout=timeout,
    )  # fmt: skip


def start(hub_url: str, *args: str, preexec=None) -> subprocess.Popen:
    """A `hearth` child that a test may interrupt: SIGINT handling is reset in it (see child_signals)."""

    def prepare() -> None:
        default_signals()
        if preexec is not None:
            preexec()

    return subprocess.Popen(
        [sys.executable, "-m", "app", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(hub_url), preexec_fn=prepare,
    )  # fmt: skip


def part_of(paths: AppPaths, name: str) -> Path:
    return paths.downloads_dir / f"{REPO.replace('/', '--')}--{name}.part"


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_search_json_and_table(fake_hub: FakeHub):
    out = hearth(fake_hub.url, "search", "mistral", "--sort", "likes", "--json")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert results[0]["repo_id"] == "hearth-test/Liked-Mistral-GGUF"
    assert set(results[0]) >= {"repo_id", "downloads", "likes", "last_modified", "gated"}
    table = hearth(fake_hub.url, "search", "gguf")
    assert table.returncode == 0 and "hearth-test/Popular-Mistral-GGUF" in table.stdout
    assert "(gated)" in table.stdout


def test_files_lists_quants_with_size_fit_and_license(fake_hub: FakeHub):
    out = hearth(fake_hub.url, "files", REPO)
    assert out.returncode == 0, out.stderr
    assert "license  apache-2.0" in out.stdout and "gated    no" in out.stdout
    assert "Q4_K_M" in out.stdout and "(3 parts)" in out.stdout and "fits" in out.stdout
    assert "Suggested for this machine: Q4_K_M" in out.stdout
    data = json.loads(hearth(fake_hub.url, "files", REPO, "--json").stdout)
    q4 = next(o for o in data["options"] if o["quant"] == "Q4_K_M")
    assert q4["files"][0]["sha256"] == fake_hub.repos[REPO].files[Q4].sha256
    assert q4["fit"] == "fits"


def test_download_by_quant_lands_in_the_library(fake_hub: FakeHub, hearth_home: AppPaths):
    out = hearth(fake_hub.url, "download", REPO, "--quant", "q4_k_m")
    assert out.returncode == 0, out.stderr
    target = hearth_home.models_dir / REPO / Q4
    assert f"Downloaded and verified (sha256): {target}" in out.stdout
    assert "100%" in out.stderr  # progress, a line per 10 % when stderr is not a terminal
    models = json.loads(hearth(fake_hub.url, "models", "--json").stdout)
    assert str(target) in [m["path"] for m in models]
    again = hearth(fake_hub.url, "download", REPO, Q4)
    assert again.returncode == 0 and "Already downloaded" in again.stdout


def test_download_without_a_choice_picks_what_fits(fake_hub: FakeHub):
    out = hearth(fake_hub.url, "download", REPO, "--dest", str(Path(os.environ["HEARTH_HOME"]) / "picked"))
    assert out.returncode == 0, out.stderr
    assert "Picked Q4_K_M" in out.stderr


def test_download_errors_are_one_line(fake_hub: FakeHub):
    cases = {
        ("download", REPO, "--quant", "Q3_K_S"): "no Q3_K_S file (available: F16, Q4_K_M, Q6_K, Q8_0)",
        ("download", GATED, "--quant", "Q4_K_M"): f"{GATED} is gated: accept its terms",
        ("download", "nobody/nothing"): "repository not found: nobody/nothing",
        ("files", "not//valid"): "not a valid repository id",
    }
    for args, message in cases.items():
        out = hearth(fake_hub.url, *args)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, out.stderr)


def test_offline_is_a_fast_clear_error(hearth_home: AppPaths):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for args in (("search", "llama"), ("files", REPO), ("download", REPO)):
        begun = time.monotonic()
        out = hearth(closed, *args)
        assert out.returncode == 2 and "(offline?)" in out.stderr, out.stderr
        assert time.monotonic() - begun < 10  # interpreter start included; no retry-with-backoff


def test_ctrl_c_leaves_a_resumable_partial_and_the_same_command_resumes(fake_hub, hearth_home, repo_files):
    sent = 5 * CHUNK_SIZE + 300_000
    fault = fake_hub.fault(BIG)
    fault.stall_after = sent  # then silence, the connection open
    child = start(fake_hub.url, "download", REPO, BIG_NAME)
    part = part_of(hearth_home, BIG_NAME)
    # The partial grows in whole chunks: the last 300,000 bytes wait in the client's buffer once it has
    # read everything the server sent.
    wait_for(lambda: part.exists() and part.stat().st_size == 5 * CHUNK_SIZE)
    wait_for(lambda: fake_hub.bytes_served[BIG] == sent and fake_hub.unread_by_clients() == 0)
    child.send_signal(signal.SIGINT)
    _out, err = child.communicate(timeout=20)
    assert child.returncode == 130, err
    assert "paused at" in err and "run the same command again to resume" in err
    assert part.stat().st_size == sent  # stopping wrote out what the buffer held
    listed = json.loads(hearth(fake_hub.url, "downloads", "--json").stdout)
    assert [(d["name"], d["state"], d["done_bytes"]) for d in listed] == [(BIG_NAME, "paused", sent)]
    fault.release.set()
    again = hearth(fake_hub.url, "download", REPO, BIG_NAME)
    assert again.returncode == 0, again.stderr
    assert [r for _, _, r in fake_hub.requests if r][-1] == f"bytes={sent}-"
    assert fake_hub.bytes_served[BIG] == repo_files[BIG].size  # not a byte fetched twice
    assert (hearth_home.models_dir / REPO / BIG_NAME).read_bytes() == repo_files[BIG].data


def test_ctrl_c_reaches_the_child_even_when_the_tests_run_as_a_background_job(fake_hub, hearth_home):
    """`pytest &` from a script: SIGINT is ignored in this process and would be in the child too."""
    fake_hub.fault(BIG).stall_after = 2 * CHUNK_SIZE
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        child = start(fake_hub.url, "download", REPO, BIG_NAME)
    finally:
        signal.signal(signal.SIGINT, previous)
    part = part_of(hearth_home, BIG_NAME)
    try:
        wait_for(lambda: part.exists() and part.stat().st_size >= CHUNK_SIZE)
        child.send_signal(signal.SIGINT)
        _out, err = child.communicate(timeout=20)
        assert child.returncode == 130, err
    finally:
        child.kill()
        fake_hub.fault(BIG).release.set()


def test_a_killed_process_resumes_in_a_new_one_fetching_at_most_one_chunk_twice(fake_hub, hearth_home, repo_files):
    fault = fake_hub.fault(BIG)
    fault.stall_after = 7 * CHUNK_SIZE + 900_000  # the connection goes silent mid-file
    child = start(fake_hub.url, "download", REPO, BIG_NAME)
    part = part_of(hearth_home, BIG_NAME)
    wait_for(lambda: part.exists() and part.stat().st_size == 7 * CHUNK_SIZE)
    child.kill()  # a crash or power cut: no chance to write out the buffer
    child.communicate(timeout=20)
    assert part.stat().st_size == 7 * CHUNK_SIZE
    fault.release.set()
    out = hearth(fake_hub.url, "download", REPO, BIG_NAME)
    assert out.returncode == 0, out.stderr
    twice = fake_hub.bytes_served[BIG] - repo_files[BIG].size
    assert twice == 900_000 <= CHUNK_SIZE  # only what the killed process had not written yet
    assert (hearth_home.models_dir / REPO / BIG_NAME).read_bytes() == repo_files[BIG].data


def _limit_file_size() -> None:
    """In the child: the kernel refuses to grow any file past 3 MB (EFBIG), like a disk filling up."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (3_000_000, 3_000_000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_real_write_failure_from_the_kernel_leaves_a_resumable_partial(fake_hub, hearth_home, repo_files):
    child = start(fake_hub.url, "download", REPO, BIG_NAME, preexec=_limit_file_size)
    _out, err = child.communicate(timeout=60)
    assert child.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("hearth: disk full writing") and "kept for resuming" in last
    part = part_of(hearth_home, BIG_NAME)
    assert part.stat().st_size == 3_000_000
    served = fake_hub.bytes_served[BIG]
    out = hearth(fake_hub.url, "download", REPO, BIG_NAME)  # space freed: the same command resumes
    assert out.returncode == 0, out.stderr
    assert fake_hub.bytes_served[BIG] - served == repo_files[BIG].size - 3_000_000


def test_downloads_cancel_removes_the_partial(fake_hub, hearth_home):
    fake_hub.fault(BIG).stall_after = 2_500_000
    child = start(fake_hub.url, "download", REPO, BIG_NAME)
    part = part_of(hearth_home, BIG_NAME)
    wait_for(lambda: part.exists() and part.stat().st_size >= 2 * CHUNK_SIZE)
    child.send_signal(signal.SIGINT)
    child.communicate(timeout=20)
    item = json.loads(hearth(fake_hub.url, "downloads", "--json").stdout)[0]
    out = hearth(fake_hub.url, "downloads", "cancel", item["id"])
    assert out.returncode == 0 and "cancelled" in out.stdout
    assert not part.exists()
    bad = hearth(fake_hub.url, "downloads", "resume", "nope")
    assert bad.returncode == 2 and "no download with id 'nope'" in bad.stderr


def test_token_status_without_a_keyring_is_clear_and_set_fails_soft(fake_hub):
    status = hearth(fake_hub.url, "token")
    assert status.returncode == 0 and "Token: none" in status.stdout
    assert "no OS keyring is available" in status.stdout
    saved = hearth(fake_hub.url, "token", "set", stdin="hf_secretvalue123456\n")
    assert saved.returncode == 2
    assert "cannot save the token: no OS keyring is available" in saved.stderr
    assert "hf_secretvalue123456" not in saved.stderr + saved.stdout
    home = Path(os.environ["HEARTH_HOME"])
    for path in home.rglob("*"):
        if path.is_file():
            assert b"hf_secretvalue123456" not in path.read_bytes(), path


def test_token_from_the_huggingface_login_is_used(fake_hub):
    env_token = "hf_fromenvironment0001"
    out = subprocess.run(
        [sys.executable, "-m", "app", "token"], capture_output=True, text=True,
        env={**env_for(fake_hub.url), "HF_TOKEN": env_token}, timeout=60,
    )  # fmt: skip
    assert "Token: hf_…0001 (source: huggingface_hub login" in out.stdout
    assert env_token not in out.stdout
