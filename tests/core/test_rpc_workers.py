"""A model split over real `hearth rpc-worker` processes on 127.0.0.1 (llama.cpp's RPC backend).

The venv's llama-cpp-python is built without RPC, so the workers and the engine child that talks to them
use llama.cpp built from the same vendored source with GGML_RPC=ON (tests/support/llama_tools.py: a few
minutes the first time on a machine, then cached). The model is the generated 1.1B (TinyLlama's shape)
quantized to Q4_K_M, as the benchmarks use it, cached in .test-cache.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.engine import GenerationStats, PromptRequest, TextChunk
from app.core.errors import ModelLoadError
from app.core.isolated_engine import IsolatedEngine
from app.core.llama_engine import LlamaCppEngine
from app.core.load_config import LoadConfig
from app.core.rpc import REBUILD_COMMAND, query_worker
from app.core.sampling import SamplingSettings
from tests.benchmarks.bench_models import bench_model
from tests.conftest import MODEL_CACHE
from tests.support import llama_tools
from tests.support.rpc_workers import REPO, Worker, free_port, rpc_env, start_worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

NO_REPACK_CHILD = [sys.executable, str(REPO / "tests" / "support" / "engine_child_no_repack.py")]
PROMPT = "<|im_start|>user\nTell me about rivers.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="session")
def rpc_lib() -> Path:
    """llama.cpp's shared libraries with the RPC backend (built once per machine, then cached)."""
    return llama_tools.lib_dir()


@pytest.fixture(scope="session")
def model_1b() -> Path:
    """The generated 1.1B-shape model in Q4_K_M (about 2 minutes to make the first time, 668 MB)."""
    return bench_model("1.1b", folder=MODEL_CACHE, keep_f16=False)


@pytest.fixture(scope="module")
def workers(rpc_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Worker]]:
    home = tmp_path_factory.mktemp("rpc-workers")
    started = [start_worker(rpc_lib, home / "a"), start_worker(rpc_lib, home / "b")]
    yield started
    for worker in started:
        assert worker.stop() == 0, worker.output()
        assert "RPC worker stopped" in worker.output()


@pytest.fixture
def rpc_environment(rpc_lib: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Engine children started by this test load the RPC-enabled libraries (this process keeps its own)."""
    monkeypatch.setenv("LLAMA_CPP_LIB_PATH", str(rpc_lib))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    return rpc_lib


def reply(engine, max_tokens: int = 48, on_chunk=None) -> tuple[str, GenerationStats]:
    """A greedy reply of exactly max_tokens (the end-of-text and end-of-turn tokens are banned)."""
    info = engine.model.info
    ban = tuple((token, -100.0) for token in {info.eos_token_id, info.eot_token_id} if token is not None)
    sampling = SamplingSettings(temperature=0.0, max_tokens=max_tokens, repeat_penalty=1.0, logit_bias=ban)
    text, stats = "", None
    for event in engine.generate(PromptRequest(PROMPT, sampling=sampling)):
        if isinstance(event, TextChunk):
            text += event.text
            if on_chunk is not None:
                on_chunk(text)
        else:
            stats = event
    assert isinstance(stats, GenerationStats)
    return text, stats


def hearth(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_split_output_is_byte_identical_to_a_local_load(model_1b: Path, workers: list[Worker], rpc_environment):
    config = LoadConfig(n_ctx=512, n_threads=1, n_threads_batch=1)
    local = IsolatedEngine(NO_REPACK_CHILD)
    local.load(model_1b, config)
    try:
        expected, local_stats = reply(local)
    finally:
        local.unload()
    split = IsolatedEngine(NO_REPACK_CHILD)
    endpoints = tuple(worker.endpoint for worker in workers)
    loaded = split.load(model_1b, config.with_changes(rpc_workers=endpoints))
    placement = list(split.placement)
    try:
        text, stats = reply(split)
    finally:
        split.unload()
    assert stats.finish_reason == local_stats.finish_reason == "length" and stats.generated_tokens == 48
    assert text.encode() == expected.encode() and len(text) > 100
    # Layers on this machine's CPU and on both workers, in proportion to free memory, output last.
    assert loaded.backend == "CPU + RPC" and 0 < loaded.n_gpu_layers < 23
    assert [line.split(": layers")[0] for line in placement] == ["CPU"] + [f"RPC {e}" for e in endpoints]
    assert placement[0].startswith("CPU: layers 0-") and "output" in placement[-1]
    assert all("layers none" not in line for line in placement)


def test_cli_chat_and_fit_over_rpc(model_1b: Path, workers: list[Worker], rpc_lib: Path, tmp_path: Path):
    env = rpc_env(rpc_lib, tmp_path / "home")
    rpc = ",".join(worker.endpoint for worker in workers)
    split = hearth(env, *["chat", str(model_1b), "-m", "Hi", "--temperature", "0", "--max-tokens", "8"], "--rpc", rpc)
    assert split.returncode == 0, split.stderr
    assert "CPU + RPC" in split.stderr and split.stdout.strip()
    for worker in workers:
        assert f"  RPC {worker.endpoint}: layers " in split.stderr
    fit = hearth(env, "fit", str(model_1b), "--ctx", "512", "--rpc", rpc, "--json")
    assert fit.returncode == 0, fit.stderr
    plan = json.loads(fit.stdout)
    assert [d["device"] for d in plan["devices"]] == ["CPU"] + [f"RPC {w.endpoint}" for w in workers]
    layers = [layer for device in plan["devices"] for layer in device["layers"]]
    assert layers == list(range(23)) and plan["layers_total"] == 23  # 22 blocks + output, each placed once
    assert plan["devices"][-1]["output_layer"] and plan["fits"]
    assert plan["n_gpu_layers"] == 23 - len(plan["devices"][0]["layers"])
    weights = [d["weights"] for d in plan["devices"]]
    assert sum(weights) > 0.9 * model_1b.stat().st_size and all(w > 0 for w in weights)
    text = hearth(env, "fit", str(model_1b), "--ctx", "512", "--rpc", rpc)
    assert "CPU (this machine)" in text.stdout and "Verdict: fits" in text.stdout


def test_a_worker_with_a_cache_keeps_the_weights_it_received(model_1b: Path, rpc_environment: Path, tmp_path: Path):
    worker = start_worker(rpc_environment, tmp_path / "cached", cache=True)
    try:
        engine = IsolatedEngine()
        config = LoadConfig(n_ctx=512, n_threads=1, rpc_workers=(worker.endpoint,))
        for _ in range(2):  # the second load finds the large tensors in the worker's cache
            engine.load(model_1b, config)
            assert reply(engine, max_tokens=4)[1].finish_reason == "length"
            engine.unload()
        # llama.cpp caches tensors over 10 MB (sent as a hash the next time): here the 54 MB output matrix.
        cached = [p for p in (tmp_path / "cached" / "cache" / "rpc").rglob("*") if p.is_file()]
        assert cached and all(p.stat().st_size > 10_000_000 for p in cached)
    finally:
        assert worker.stop() == 0


def test_a_worker_killed_mid_reply_is_named_and_the_app_goes_on(
    model_1b: Path, workers: list[Worker], rpc_environment: Path, tmp_path: Path
):
    doomed = start_worker(rpc_environment, tmp_path / "doomed")
    engine = IsolatedEngine()
    engine.load(model_1b, LoadConfig(n_ctx=512, n_threads=1, rpc_workers=(workers[0].endpoint, doomed.endpoint)))

    def kill_after_some_text(text: str) -> None:
        if len(text) > 40 and doomed.process.poll() is None:
            doomed.kill()

    started = time.monotonic()
    text, stats = reply(engine, max_tokens=400, on_chunk=kill_after_some_text)
    assert stats.finish_reason == "error" and len(text) > 40
    assert stats.error == (
        f"RPC worker {doomed.endpoint} stopped answering during the reply; the model was unloaded: restart the "
        "worker and load the model again, or load it without it"
    )
    assert time.monotonic() - started < 120 and engine.model is None
    # The app goes on: a local load in this very process, and a load over the worker that is still up.
    local = LlamaCppEngine()
    local.load(model_1b, LoadConfig(n_ctx=512))
    try:
        assert reply(local, max_tokens=4)[1].finish_reason == "length"
    finally:
        local.unload()
    engine.load(model_1b, LoadConfig(n_ctx=512, n_threads=1, rpc_workers=(workers[0].endpoint,)))
    try:
        assert reply(engine, max_tokens=4)[1].finish_reason == "length"
    finally:
        engine.unload()
    query_worker(workers[0].endpoint)  # the surviving worker is free again for the next client


def test_an_unreachable_worker_is_named_at_load(
    model_1b: Path, workers: list[Worker], rpc_environment: Path, tmp_path: Path
):
    closed = f"127.0.0.1:{free_port()}"
    engine = IsolatedEngine()
    with pytest.raises(ModelLoadError) as error:
        engine.load(model_1b, LoadConfig(n_ctx=512, rpc_workers=(workers[0].endpoint, closed)))
    assert str(error.value) == (
        f"RPC worker {closed} is unreachable (Connection refused); start `hearth rpc-worker` there or remove it"
    )
    assert engine.model is None
    result = hearth(rpc_env(rpc_environment, tmp_path / "home"), "chat", str(model_1b), "-m", "Hi", "--rpc", closed)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"hearth: {error.value}"]
    bad = hearth(rpc_env(rpc_environment, tmp_path / "home"), "chat", str(model_1b), "-m", "Hi", "--rpc", "[::1]:5")
    assert bad.returncode == 2 and "must be HOST:PORT" in bad.stderr


def test_rpc_worker_guards_its_address(rpc_lib: Path, tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = hearth(rpc_env(rpc_lib, tmp_path / "home"), "rpc-worker", "--port", str(port), timeout=60)
    assert busy.returncode == 2
    assert busy.stderr.startswith(f"hearth: cannot listen on 127.0.0.1:{port}: ") and busy.stderr.count("\n") == 1
    exposed = start_worker(rpc_lib, tmp_path / "exposed", host="0.0.0.0")
    assert exposed.stop() == 0
    output = exposed.output()
    assert f"warning: listening on 0.0.0.0:{exposed.endpoint.rsplit(':', 1)[1]}" in output
    assert "no authentication" in output and "trusted network only" in output
    assert "RPC worker stopped" in output
    quiet = start_worker(rpc_lib, tmp_path / "quiet")
    assert quiet.stop() == 0 and "warning" not in quiet.output()


def test_hw_and_rpc_worker_say_whether_the_build_has_rpc(rpc_lib: Path, tmp_path: Path):
    with_rpc = hearth(rpc_env(rpc_lib, tmp_path / "a"), "hw", "--json")
    assert with_rpc.returncode == 0 and json.loads(with_rpc.stdout)["rpc"] is True
    # The venv's own build (llama-cpp-python's default: GGML_RPC off, unless someone rebuilt it with RPC).
    import llama_cpp

    package_lib = Path(llama_cpp.__file__).parent / "lib"
    venv_has_rpc = any(package_lib.glob("*ggml-rpc*"))
    env = rpc_env(package_lib, tmp_path / "b")
    info = json.loads(hearth(env, "hw", "--json").stdout)
    assert info["rpc"] is venv_has_rpc
    assert info["rpc_rebuild_command"] == (None if venv_has_rpc else REBUILD_COMMAND)
    text = hearth(env, "hw").stdout
    assert ("RPC       available" in text) if venv_has_rpc else (f"to add it: {REBUILD_COMMAND}" in text)
    if not venv_has_rpc:
        worker = hearth(env, "rpc-worker", "--port", str(free_port()), timeout=60)
        assert worker.returncode == 2
        assert worker.stderr == f"hearth: this llama.cpp build has no RPC backend; rebuild it with: {REBUILD_COMMAND}\n"
