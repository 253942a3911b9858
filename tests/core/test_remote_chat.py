"""Chatting through the engine host with a model on a real OpenAI-compatible server started on 127.0.0.1
(llama-cpp-python's own server on the tiny generated model, and `hearth serve` once this checkout has it):
listing, a streamed reply saved to the history, Stop mid-stream, regenerate, the server killed mid-reply,
JSON output on the real gemma-3-270m; every other failure against a stand-in server."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.core.engine import GenerationStats
from app.core.host import EngineHost, Job, wait_for_text
from app.core.messages import ChatMessage
from app.core.remote_backend import RemoteBackend, request_body
from app.core.remote_catalog import RemoteCatalog
from app.core.remote_servers import ServerConfig, Timeouts
from app.core.reply import ReplyChunk, ReplyDone, ReplyRequest, ReplyStarted, create_conversation
from app.core.sampling import SamplingSettings
from app.core.store import Store
from tests.support.openai_servers import KINDS, RunningServer, start_server
from tests.support.openai_stub import Behaviour, OpenAIStub

EOS = 2  # the tiny model's </s>: banned, replies run to max_tokens
SHORT = SamplingSettings(max_tokens=16, seed=1, logit_bias=((EOS, -100.0),))
LONG = SamplingSettings(max_tokens=900, seed=1, logit_bias=((EOS, -100.0),))
ALIAS = "tiny-remote"


@pytest.fixture(scope="module", params=KINDS)
def served(
    request: pytest.FixtureRequest, make_tiny_model: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    model = make_tiny_model("remote-tiny.gguf", name="Remote Tiny", context_length=4096)
    server = start_server(request.param, model, ALIAS, tmp_path_factory.mktemp("servers"), n_ctx=1024)
    yield server
    server.stop()


@pytest.fixture
def history(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite3"


@pytest.fixture
def host(history: Path) -> Iterator[EngineHost]:
    host = EngineHost(store_path=history)
    yield host
    assert host.shutdown(30)


def connect(host: EngineHost, url: str, name: str = "box", **timeouts: float) -> RemoteCatalog:
    catalog = RemoteCatalog(host, timeouts=Timeouts(**timeouts) if timeouts else None)
    catalog.sync([ServerConfig(name, url).validate()])
    return catalog


def conversation(history: Path, text: str) -> tuple[int, int]:
    """A saved conversation with one user message: (conversation id, message id)."""
    with Store.open(history) as store:
        cid = create_conversation(store, model_path=ALIAS, load_settings={}, meta={"remote": {"server": "box"}})
        return cid, store.add_message(cid, "user", text).id


def ask(
    model: str, text: str = "Tell me about rivers.", sampling: SamplingSettings = SHORT, **kw: object
) -> ReplyRequest:
    meta = {"model": model, **kw.pop("meta", {})}  # type: ignore[dict-item]
    return ReplyRequest((ChatMessage("user", text),), sampling, backend="box", meta=meta, **kw)  # type: ignore[arg-type]


def stream_until(job: Job, chunks: int, timeout: float = 60) -> str:
    """Read a reply's events until `chunks` pieces of text arrived; the text so far."""
    text = ""
    seen = 0
    for event in job.events(timeout):
        if isinstance(event, ReplyChunk):
            text += event.text
            seen += 1
            if seen >= chunks:
                return text
        assert not isinstance(event, ReplyDone), f"the reply ended early: {event}"
    raise AssertionError("no terminal event")


# ---- a real server ---------------------------------------------------------------------------------------------


def test_the_servers_models_are_listed(host: EngineHost, served: RunningServer):
    catalog = connect(host, served.url)
    models = catalog.models("box")
    assert [(m.server, m.id) for m in models][:1] == [("box", served.model)]
    assert catalog.check(ServerConfig("box", served.url)).models[0] == served.model


def test_a_streamed_reply_is_saved_to_the_history(host: EngineHost, served: RunningServer, history: Path):
    connect(host, served.url)
    cid, user_id = conversation(history, "Tell me about rivers.")
    events: list[object] = []
    job = host.client("t", on_event=events.append).reply(ask(served.model, conversation_id=cid, parent_id=user_id))
    text, done = wait_for_text(job, timeout=120)
    assert done.error is None and done.stats is not None, done
    assert done.stats.finish_reason == "length" and done.stats.generated_tokens >= 1 and text
    assert done.stats.ttft_ms > 0 and done.stats.gen_tps > 0
    started = next(e for e in events if isinstance(e, ReplyStarted))
    body = json.loads(started.prompt_text)
    assert body["model"] == served.model and body["messages"] == [{"role": "user", "content": "Tell me about rivers."}]
    assert body["stream"] is True and body["max_tokens"] == 16 and body["logit_bias"] == {"2": -100.0}
    with Store.open(history) as store:
        saved = store.message(done.message_id)
        assert saved.content == text and saved.complete and saved.finish_reason == "length"
        assert saved.model == f"{served.model} · box" and saved.template == "server"
        assert saved.meta["backend"] == "box" and saved.meta["model"] == served.model
        assert saved.meta["load"] == {"server": "box", "url": served.url, "model": served.model}
        assert saved.gen_tps == pytest.approx(done.stats.gen_tps) and saved.ttft_ms == pytest.approx(done.stats.ttft_ms)
        assert store.prompt_text(saved.id) == started.prompt_text
        assert [m.role for m in store.messages(cid)] == ["user", "assistant"]
        words = re.findall(r"[A-Za-z]{3,}", text)
        if words:  # searchable like any reply (the tiny model's text is random: it nearly always has a word)
            assert done.message_id in [hit.message_id for hit in store.search(max(words, key=len))]


def test_stop_mid_stream_closes_the_stream_and_keeps_the_text(host: EngineHost, served: RunningServer, history: Path):
    connect(host, served.url)
    cid, user_id = conversation(history, "A long story, please.")
    job = host.client("t").reply(ask(served.model, sampling=LONG, conversation_id=cid, parent_id=user_id))
    partial = stream_until(job, 3)
    stopped_at = time.monotonic()
    job.cancel()
    done = job.wait(10)
    took = time.monotonic() - stopped_at
    assert isinstance(done, ReplyDone) and done.stats is not None
    assert done.stats.finish_reason == "cancelled" and done.error is None
    assert took < 2.0, f"Stop took {took:.2f} s"
    assert done.text.startswith(partial) and done.stats.generated_tokens < 900
    with Store.open(history) as store:
        saved = store.message(done.message_id)
        assert saved.content == done.text and saved.finish_reason == "cancelled"
    again, after = wait_for_text(host.client("t").reply(ask(served.model)), timeout=120)
    assert after.error is None and again  # the server goes on serving


def test_regenerate_adds_a_branch(host: EngineHost, served: RunningServer, history: Path):
    connect(host, served.url)
    cid, user_id = conversation(history, "Name a river.")
    first = wait_for_text(host.client("t").reply(ask(served.model, conversation_id=cid, parent_id=user_id)), 120)[1]
    seeded = SamplingSettings(max_tokens=16, seed=2, logit_bias=((EOS, -100.0),))
    second = wait_for_text(
        host.client("t").reply(ask(served.model, sampling=seeded, conversation_id=cid, parent_id=user_id)), 120
    )[1]
    assert first.error is None and second.error is None
    with Store.open(history) as store:
        assert store.siblings(second.message_id) == [first.message_id, second.message_id]
        assert store.messages(cid)[-1].id == second.message_id  # the new branch is the active one
        assert store.message(second.message_id).meta["sampling"]["seed"] == 2


def test_a_server_killed_mid_reply_keeps_the_partial_reply_marked(
    host: EngineHost,
    history: Path,
    make_tiny_model: Callable[..., Path],
    tmp_path: Path,
    request: pytest.FixtureRequest,
):
    kind = "llama-cpp-python"
    model = make_tiny_model("remote-tiny.gguf", name="Remote Tiny", context_length=4096)
    server = start_server(kind, model, ALIAS, tmp_path, n_ctx=1024)
    try:
        connect(host, server.url)
        cid, user_id = conversation(history, "A long story, please.")
        job = host.client("t").reply(ask(server.model, sampling=LONG, conversation_id=cid, parent_id=user_id))
        partial = stream_until(job, 3)
        server.kill()
        done = job.wait(30)
    finally:
        server.kill()
    assert isinstance(done, ReplyDone) and done.stats is not None
    assert done.stats.finish_reason == "error"
    assert done.error and "server 'box'" in done.error and "broke mid-reply" in done.error
    assert "the text received so far is kept" in done.error
    assert done.text.startswith(partial) and partial
    with Store.open(history) as store:
        saved = store.message(done.message_id)
        assert saved.content == done.text and saved.complete and saved.finish_reason == "error"
        assert saved.meta["error"] == done.error
    unreachable = wait_for_text(host.client("t").reply(ask(server.model)), 30)[1]
    assert (
        unreachable.error
        and "cannot reach server 'box'" in unreachable.error
        and "connection refused" in unreachable.error
    )


@pytest.mark.slow
def test_json_output_on_a_real_model(host: EngineHost, gemma_path: Path, tmp_path: Path):
    # llama.cpp's grammar sampler cannot start on the generated models' random vocabularies; gemma's works.
    server = start_server("llama-cpp-python", gemma_path, "gemma", tmp_path, n_ctx=1024, timeout=180)
    try:
        connect(host, server.url)
        sampling = SamplingSettings(temperature=0.0, max_tokens=200, seed=1)
        text, done = wait_for_text(
            host.client("t").reply(
                ask(
                    "gemma",
                    'Reply with a JSON object like {"ok": true}.',
                    sampling,
                    response_format={"type": "json_object"},
                )
            ),
            300,
        )
        assert done.error is None, done.error
        assert isinstance(json.loads(text), dict)
        # (OpenAI's "json_schema" response format is refused by llama-cpp-python's server, which knows only
        # "json_object"; its shape is checked against the stand-in below.)
    finally:
        server.stop()


# ---- what was sent -----------------------------------------------------------------------------------------------


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    server = OpenAIStub()
    yield server
    server.close()


def test_show_prompt_is_byte_for_byte_the_body_sent(host: EngineHost, stub: OpenAIStub):
    connect(host, stub.url)
    events: list[object] = []
    sampling = SamplingSettings(temperature=0.3, top_p=0.9, top_k=20, min_p=0.1, repeat_penalty=1.2, seed=7)
    request = ReplyRequest(
        (ChatMessage("system", "Be brief."), ChatMessage("user", "Grüße! 👋")),
        sampling,
        stop=("###",),
        backend="box",
        meta={"model": "stub-model"},
        response_format={"type": "json_object"},
    )
    text, done = wait_for_text(host.client("t", on_event=events.append).reply(request), 30)
    assert text == "Hello from the stand-in server." and done.error is None
    started = next(e for e in events if isinstance(e, ReplyStarted))
    sent = stub.chats()[-1]
    assert sent.body == started.prompt_text.encode("utf-8")
    body = sent.json()
    assert body["messages"][1]["content"] == "Grüße! 👋" and body["stop"] == ["###"] and body["seed"] == 7
    assert (body["temperature"], body["top_p"], body["top_k"], body["min_p"], body["repeat_penalty"]) == (
        0.3,
        0.9,
        20,
        0.1,
        1.2,
    )
    assert body["response_format"] == {"type": "json_object"}
    assert body["stream_options"] == {"include_usage": True}
    assert "authorization" not in sent.headers  # no key configured: none sent
    assert done.stats is not None and done.stats.prompt_tokens == 11 and done.stats.generated_tokens == 6  # usage
    assert done.stats.seed == 7


def test_openai_only_servers_get_openai_fields_only():
    request = ReplyRequest((ChatMessage("user", "hi"),), SamplingSettings(), meta={"model": "m"})
    body = request_body("m", request, llama_fields=False)
    assert not {"top_k", "min_p", "repeat_penalty", "typical_p", "repeat_last_n"} & set(body)
    grammar = ReplyRequest((ChatMessage("user", "hi"),), grammar='root ::= "x"', meta={"model": "m"})
    assert request_body("m", grammar)["grammar"] == 'root ::= "x"'
    with pytest.raises(Exception, match="takes no GBNF grammar"):
        request_body("m", grammar, llama_fields=False)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    formatted = ReplyRequest(
        (ChatMessage("user", "hi"),), meta={"reply_format": {"kind": "json_schema", "schema": schema}}
    )
    assert request_body("m", formatted)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "strict": True, "schema": schema},
    }
    plain = ReplyRequest((ChatMessage("user", "hi"),), meta={"reply_format": {"kind": "text"}})
    assert "response_format" not in request_body("m", plain)


# ---- failures, each in words with the server's name ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "says"),
    [
        (
            Behaviour(key="sk-123456789"),
            r"server 'box' refused access \(401 Unauthorized: Invalid API key\); add or correct its API key",
        ),
        (
            Behaviour(status=403, message="forbidden here"),
            r"server 'box' refused access \(403 Forbidden: forbidden here\)",
        ),
        (
            Behaviour(models=("other",)),
            r"server 'box' answered 404 Not Found for model 'stub-model': model 'stub-model' not found",
        ),
        (
            Behaviour(status=429, retry_after="7"),
            r"server 'box' is rate-limiting requests \(429 Too Many Requests: .*\); retry in 7 s",
        ),
        (
            Behaviour(status=503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),
            r"server 'box' is busy or unavailable \(503 Service Unavailable: .*\); retry in 0 s",
        ),
        (
            Behaviour(status=503),
            r"server 'box' is busy or unavailable \(503 Service Unavailable: .*\); retry in a moment",
        ),
        (Behaviour(status=500, message="boom"), r"server 'box' failed \(500 Internal Server Error: boom\)"),
        (
            Behaviour(status=400, message="bad temperature"),
            r"server 'box' refused the request \(400 Bad Request: bad temperature\)",
        ),
    ],
)
def test_refusals_are_named_errors_in_place(host: EngineHost, stub: OpenAIStub, behaviour: Behaviour, says: str):
    stub.behaviour = behaviour
    connect(host, stub.url)
    text, done = wait_for_text(host.client("t").reply(ask("stub-model")), 30)
    assert text == "" and done.error is not None
    assert re.search(says, done.error), done.error
    assert done.stats is not None and done.stats.finish_reason == "error"


def test_a_dropped_stream_keeps_the_text_received(host: EngineHost, stub: OpenAIStub, history: Path):
    stub.behaviour = Behaviour(drop_after=3)
    connect(host, stub.url)
    cid, user_id = conversation(history, "hi")
    text, done = wait_for_text(host.client("t").reply(ask("stub-model", conversation_id=cid, parent_id=user_id)), 30)
    assert text == "Hello from the"
    assert done.error and "the connection to server 'box' broke mid-reply" in done.error and "is kept" in done.error
    with Store.open(history) as store:
        saved = store.message(done.message_id)
        assert (saved.content, saved.finish_reason, saved.meta["error"]) == (text, "error", done.error)


def test_an_error_event_mid_stream(host: EngineHost, stub: OpenAIStub):
    stub.behaviour = Behaviour(error_after=2)
    connect(host, stub.url)
    text, done = wait_for_text(host.client("t").reply(ask("stub-model")), 30)
    assert text == "Hello from"
    assert done.error == "server 'box' reported an error mid-reply: the model crashed (stand-in)"


def test_silence_is_bounded_before_and_during_the_reply(host: EngineHost, stub: OpenAIStub):
    stub.behaviour = Behaviour(stall_after=0)
    connect(host, stub.url, first_token=0.6, between_chunks=0.4)
    began = time.monotonic()
    text, done = wait_for_text(host.client("t").reply(ask("stub-model")), 30)
    assert text == "" and done.error and "server 'box' sent no reply within 0.6 s" in done.error
    assert time.monotonic() - began < 3
    stub.behaviour = Behaviour(stall_after=2)
    text, done = wait_for_text(host.client("t").reply(ask("stub-model")), 30)
    assert text == "Hello from"
    assert done.error == "server 'box' went silent for 0.4 s mid-reply; the text received so far is kept"


def test_stop_while_the_server_is_silent(host: EngineHost, stub: OpenAIStub):
    stub.behaviour = Behaviour(stall_after=1)
    connect(host, stub.url)
    job = host.client("t").reply(ask("stub-model"))
    stream_until(job, 1)
    stopped = time.monotonic()
    job.cancel()
    done = job.wait(5)
    assert isinstance(done, ReplyDone) and done.stats is not None and done.stats.finish_reason == "cancelled"
    assert time.monotonic() - stopped < 0.5 and done.text == "Hello"


def test_unknown_servers_and_unreachable_ones(host: EngineHost):
    connect(host, "http://127.0.0.1:9/v1", name="gone")
    done = wait_for_text(host.client("t").reply(ReplyRequest((ChatMessage("user", "hi"),), backend="nowhere")), 10)[1]
    assert done.error == "no server named 'nowhere' is configured"
    request = ReplyRequest((ChatMessage("user", "hi"),), backend="gone", meta={"model": "m"})
    done = wait_for_text(host.client("t").reply(request), 30)[1]
    assert done.error == "cannot reach server 'gone' at http://127.0.0.1:9/v1: connection refused; is it running?"
    done = wait_for_text(host.client("t").reply(ReplyRequest((ChatMessage("user", "hi"),), backend="gone")), 10)[1]
    assert done.error == "choose one of server 'gone''s models first"


def test_closing_the_host_stops_remote_replies(stub: OpenAIStub, tmp_path: Path):
    stub.behaviour = Behaviour(stall_after=1)
    host = EngineHost(store_path=tmp_path / "h.sqlite3")
    connect(host, stub.url)
    job = host.client("t").reply(ask("stub-model"))
    stream_until(job, 1)
    began = time.monotonic()
    assert host.shutdown(10)
    assert job.done.wait(2) and time.monotonic() - began < 2


def test_the_backend_stream_ends_with_exactly_one_stats(stub: OpenAIStub):
    backend = RemoteBackend(ServerConfig("box", stub.url))
    prepared = backend.prepare(ask("stub-model"))
    events = list(backend.stream(prepared, threading.Event()))
    assert sum(isinstance(e, GenerationStats) for e in events) == 1 and isinstance(events[-1], GenerationStats)
    backend.close()
