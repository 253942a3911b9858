"""The engine host with the real engine on real GGUF files: several clients, their own events, cancel, the
load policy, and the reply pipeline saving to a real SQLite history."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from app.core.engine import PromptRequest
from app.core.fit import auto_gpu_layers
from app.core.gguf_info import inspect
from app.core.hardware import GpuInfo, HardwareInfo
from app.core.host import CallDone, EngineHost, LoadDone, LoadProgress, ReplyChunk, wait_for_text
from app.core.load_config import AUTO_LAYERS, LoadConfig
from app.core.load_policy import fit_summary, plan_load
from app.core.messages import ChatMessage
from app.core.reply import ReplyRequest, ReplyStarted
from app.core.sampling import SamplingSettings
from app.core.store import Store
from tests.support.model_shapes import write_shape_model

EOS = 2
LONG = SamplingSettings(max_tokens=400, seed=1, logit_bias=((EOS, -100.0),))
SHORT = SamplingSettings(temperature=0.0, max_tokens=12, logit_bias=((EOS, -100.0),))
GIB = 1024**3


@pytest.fixture
def host(tmp_path: Path):
    host = EngineHost(store_path=tmp_path / "history.sqlite3")
    yield host
    assert host.shutdown(30)


def loaded(host: EngineHost, path: Path, **config: object) -> None:
    done = host.client("loader").load(path, LoadConfig(n_ctx=1024, n_threads=1, **config)).wait(60)
    assert isinstance(done, LoadDone) and done.error is None, done


def ask(text: str, sampling: SamplingSettings = SHORT, **kwargs: object) -> ReplyRequest:
    return ReplyRequest((ChatMessage("user", text),), sampling, **kwargs)  # type: ignore[arg-type]


def test_load_reports_progress_and_the_plan(host: EngineHost, tiny_model: Path):
    seen: list[object] = []
    job = host.client("gui", on_event=seen.append).load(tiny_model, LoadConfig(n_ctx=512))
    done = job.wait(60)
    assert isinstance(done, LoadDone) and done.model is not None and done.model.path == tiny_model
    assert any(isinstance(e, LoadProgress) for e in seen) and seen[-1] is done
    assert host.model is done.model and "CPU-only" in done.plan_reason
    bad = host.client("gui").load(tiny_model.with_name("missing.gguf"), LoadConfig()).wait(30)
    assert isinstance(bad, LoadDone) and bad.error and "missing.gguf" in bad.error


def test_two_clients_each_get_only_their_own_reply(host: EngineHost, tiny_model: Path):
    loaded(host, tiny_model)
    a_events: list[object] = []
    b_events: list[object] = []
    a = host.client("a", on_event=a_events.append)
    b = host.client("b", on_event=b_events.append)
    long_job = a.reply(ask("tell me a long story", LONG, key="a"))
    short_job = b.reply(ask("and a short one", SHORT, key="b"))
    text_b, done_b = wait_for_text(short_job, timeout=60)
    assert done_b.error is None and done_b.stats is not None and done_b.stats.generated_tokens == 12
    assert not long_job.done.is_set(), "B's short reply had to wait for A's long one"
    assert all(getattr(e, "job_id", None) == short_job.id for e in b_events)
    assert "".join(e.text for e in b_events if isinstance(e, ReplyChunk)) == text_b
    long_job.cancel()
    _, done_a = wait_for_text(long_job, timeout=60)
    assert done_a.stats is not None and done_a.stats.finish_reason == "cancelled"
    assert all(getattr(e, "job_id", None) == long_job.id for e in a_events)


def test_cancelling_one_client_never_touches_another(host: EngineHost, tiny_model: Path):
    loaded(host, tiny_model)
    a = host.client("a").reply(ask("first", LONG, key="a"))
    b = host.client("b").reply(ask("second", SamplingSettings(max_tokens=60, seed=2, logit_bias=((EOS, -100),))))
    time.sleep(0.05)
    a.cancel()
    _, done_b = wait_for_text(b, timeout=60)
    _, done_a = wait_for_text(a, timeout=60)
    assert done_a.stats.finish_reason == "cancelled"
    assert done_b.stats.finish_reason == "length" and done_b.stats.generated_tokens == 60


def test_a_queued_job_cancelled_before_it_starts_never_runs(host: EngineHost, tiny_model: Path):
    loaded(host, tiny_model, n_parallel=1)
    first = host.client("a").reply(ask("one", LONG))
    second = host.client("b").reply(ask("two", LONG))  # no free sequence: it waits
    second.cancel()
    _, done = wait_for_text(second, timeout=30)
    assert done.stats is None and "cancelled" in (done.error or "")
    first.cancel()
    wait_for_text(first, timeout=30)


def test_a_load_waits_for_running_replies_and_later_replies_wait_for_it(
    host: EngineHost, tiny_model: Path, make_tiny_model
):
    other = make_tiny_model("host-other.gguf", name="Other")
    loaded(host, tiny_model)
    client = host.client("x")
    reply = client.reply(ask("before the load", SamplingSettings(max_tokens=80, seed=3, logit_bias=((EOS, -100),))))
    load = client.load(other, LoadConfig(n_ctx=512))
    after = client.reply(ask("after the load"))
    _, first = wait_for_text(reply, timeout=60)
    assert first.stats.generated_tokens == 80  # not cut short by the load
    assert isinstance(load.wait(60), LoadDone)
    _, second = wait_for_text(after, timeout=60)
    assert second.error is None and host.model.path == other


def test_reply_is_saved_with_its_load_and_sampling_settings(host: EngineHost, tiny_model: Path, tmp_path: Path):
    loaded(host, tiny_model)
    with Store.open(tmp_path / "history.sqlite3") as store:
        conversation = store.create_conversation()
        user = store.add_message(conversation.id, "user", "hello there")
    seen: list[object] = []
    job = host.client("gui", on_event=seen.append).reply(
        ask("hello there", conversation_id=conversation.id, parent_id=user.id, meta={"assistant": "plain"})
    )
    text, done = wait_for_text(job, timeout=60)
    started = next(e for e in seen if isinstance(e, ReplyStarted))
    assert started.message_id == done.message_id and started.prompt_text.endswith("assistant\n")
    with Store.open(tmp_path / "history.sqlite3") as store:
        reply = store.message(done.message_id)
    assert reply.content == text and reply.complete and reply.finish_reason == "length"
    assert reply.meta["load"]["n_ctx"] == 1024 and reply.meta["load"]["n_threads"] == 1
    assert reply.meta["sampling"]["temperature"] == 0.0 and reply.meta["sampling"]["seed"] is not None
    assert reply.meta["assistant"] == "plain" and reply.meta["backend"] == "local"


def test_reply_without_a_model_is_a_clear_error(host: EngineHost):
    _, done = wait_for_text(host.client().reply(ask("anyone?")), timeout=30)
    assert done.stats is None and "no model is loaded" in (done.error or "")


def test_raw_completion_and_calls_on_the_engine_thread(host: EngineHost, tiny_model: Path):
    loaded(host, tiny_model)
    text, done = wait_for_text(host.client().complete(PromptRequest("once upon", sampling=SHORT)), timeout=30)
    assert done.stats.generated_tokens == 12 and len(text) > 0
    threads: list[str] = []
    call = host.client().call(lambda engine: (threads.append(threading.current_thread().name), engine.tokenize("a b")))
    result = call.wait(30)
    assert isinstance(result, CallDone) and result.error is None and threads == ["hearth-engine"]


def test_shutdown_cancels_a_running_reply_and_frees_the_model(tiny_model: Path):
    host = EngineHost()
    loaded(host, tiny_model)
    job = host.client().reply(ask("never ending", SamplingSettings(max_tokens=100_000, logit_bias=((EOS, -100),))))
    time.sleep(0.1)
    assert host.shutdown(30)
    _, done = wait_for_text(job, timeout=5)
    assert done.stats.finish_reason == "cancelled"
    assert host.engine is not None and host.engine.model is None


# ---- the load policy: "auto" GPU layers are what `hearth fit` reports -------------------------------------------


def simulated_gpu(free_gib: float) -> HardwareInfo:
    gpu = GpuInfo("Simulated GPU", int(8 * GIB), int(free_gib * GIB), "test", "CUDA0")
    return HardwareInfo("cpu", 8, 16, 32 * GIB, 24 * GIB, (gpu,), "CUDA", True)


@pytest.mark.parametrize(("layers", "embd", "ff", "vocab"), [(40, 5120, 13824, 32000), (32, 4096, 14336, 128256)])
def test_auto_layers_are_what_hearth_fit_reports(tmp_path: Path, layers: int, embd: int, ff: int, vocab: int):
    """A 13B-shaped and an 8B-shaped model on a 6 GiB GPU: the plan offloads exactly fit's auto count, and
    the Models page label says how many of the layers fit."""
    path = write_shape_model(
        tmp_path / f"shape-{layers}.gguf", n_layer=layers, n_embd=embd, n_ff=ff, n_head=32, n_head_kv=8, n_vocab=vocab
    )
    info = inspect(path)
    assert info.size_bytes > 4 * GIB  # a real-size file (sparse on disk)
    hardware = simulated_gpu(6)
    plan = plan_load(path, LoadConfig(n_gpu_layers=AUTO_LAYERS, n_ctx=4096), hardware)
    expected = auto_gpu_layers(info, hardware, 4096, "f16")
    assert plan.config.n_gpu_layers == expected and 0 < expected < layers + 1
    summary = fit_summary(info, hardware, LoadConfig(n_gpu_layers=AUTO_LAYERS, n_ctx=4096))
    assert summary.label == f"{expected} of {layers + 1} layers on GPU" and summary.gpu_layers == expected


def test_auto_layers_count_a_draft_model_loaded_beside(tmp_path: Path, make_tiny_model):
    """The fit estimate counts both models: with a draft model, fewer of the target's layers fit."""
    target = write_shape_model(tmp_path / "big.gguf", n_layer=40, n_embd=5120, n_ff=13824, n_head=40, n_head_kv=40)
    draft = write_shape_model(tmp_path / "small.gguf", n_layer=16, n_embd=2048, n_ff=5632, n_head=16, n_head_kv=4)
    hardware = simulated_gpu(6)
    alone = plan_load(target, LoadConfig(n_gpu_layers=AUTO_LAYERS), hardware).config.n_gpu_layers
    paired = plan_load(target, LoadConfig(n_gpu_layers=AUTO_LAYERS, draft_model=str(draft)), hardware)
    assert 0 < paired.config.n_gpu_layers < alone
