"""`hearth serve` with the official openai client (and raw HTTP where the wire format is the point), on real
GGUF files: the endpoints in OpenAI's shapes, usage equal to the engine's counts, errors, parallel streams,
disconnects, just-in-time loads, the history switch and Ctrl-C."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest

from app.core.engine import GenerationStats, PromptRequest
from app.core.gguf_info import inspect
from app.core.llama_engine import LlamaCppEngine
from app.core.load_config import LoadConfig
from app.core.messages import ChatMessage
from app.core.sampling import SamplingSettings
from app.core.templates import render_prompt
from app.core.tiny_model import TinyModelSpec, _vocabulary
from tests.support.serve import REPO_ROOT, ServeProcess

KEY = "test-key-123"
EOS = 2
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_SPEC = {
    "name": "Server Chat",
    "chat_template": CHATML,
    "extra_control_tokens": ("<|im_start|>", "<|im_end|>"),
    "eot_token": "<|im_end|>",
    "context_length": 4096,
}
TOKENS, _, _ = _vocabulary(TinyModelSpec(**CHAT_SPEC))  # type: ignore[arg-type]
IM_START, IM_END = TOKENS.index("<|im_start|>"), TOKENS.index("<|im_end|>")
NO_END = {str(EOS): -100, str(IM_START): -100, str(IM_END): -100}  # replies run to max_tokens (no turn ends)


def forced(word: str) -> dict[str, int]:
    """A logit bias that makes every token the piece " word" (SentencePiece writes the space as ▁)."""
    return {**NO_END, str(TOKENS.index("\u2581" + word)): 100}


# ---- servers -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, make_tiny_model: Callable[..., Path]) -> Path:
    """A Hearth home whose library holds chat.gguf (ChatML, as real chat models) and other.gguf."""
    home = tmp_path_factory.mktemp("serve-home")
    folder = home / "hearth" / "models"
    folder.mkdir(parents=True)
    shutil.copy(make_tiny_model("server-chat.gguf", **CHAT_SPEC), folder / "chat.gguf")
    shutil.copy(
        make_tiny_model("server-other.gguf", **{**CHAT_SPEC, "name": "Other", "seed": 3}), folder / "other.gguf"
    )
    return home


def serve(home: Path, *args: str) -> ServeProcess:
    """hearth serve in a home of its own: HOME and the app folders point inside it (no real model folder)."""
    fake = home / "home"
    env = {"HOME": str(fake), "XDG_CACHE_HOME": str(fake / "cache"), "HF_HOME": str(fake / "hf")}
    return ServeProcess([*args, "--threads", "1", "--ngl", "0"], home / "hearth", env=env)


@pytest.fixture(scope="module")
def server(models: Path) -> Iterator[ServeProcess]:
    process = serve(models, "chat.gguf", "--api-key", KEY, "--ctx", "1024", "--parallel", "4")
    yield process
    code, err = process.stop()
    assert code == 0, err


@pytest.fixture(scope="module")
def client(server: ServeProcess) -> openai.OpenAI:
    return server.client(KEY)


@pytest.fixture(scope="module")
def chat_path(models: Path) -> Path:
    return models / "hearth" / "models" / "chat.gguf"


def raw(
    server: ServeProcess, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request (status, headers, body), for what the openai client hides."""
    host, port = server.base.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    result = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    connection.close()
    return result


def authorized() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def health(server: ServeProcess) -> dict[str, Any]:
    return json.loads(raw(server, "GET", "/health")[2])


def wait_idle(server: ServeProcess, timeout: float = 30) -> float:
    """Seconds until no sequence is busy (fails after timeout)."""
    started = time.monotonic()
    while health(server)["slots"]["busy"]:
        assert time.monotonic() - started < timeout, health(server)
        time.sleep(0.005)
    return time.monotonic() - started


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# ---- models ------------------------------------------------------------------------------------------------
def test_models_lists_the_library_with_the_loaded_model_first(client: openai.OpenAI):
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "chat.gguf" and "other.gguf" in ids and len(ids) == 2
    assert client.models.retrieve("other").id == "other.gguf"  # the id without .gguf works too
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope.gguf")


# ---- chat --------------------------------------------------------------------------------------------------
def test_chat_reply_and_usage_equal_the_engine_in_process(client: openai.OpenAI, chat_path: Path):
    messages = [{"role": "system", "content": "You count sheep."}, *user("usage check: how many sheep?")]
    reply = client.chat.completions.create(
        model="chat.gguf",
        messages=messages,
        max_tokens=12,
        seed=5,
        logit_bias=NO_END,  # type: ignore[arg-type]
    )
    assert reply.object == "chat.completion" and reply.model == "chat.gguf" and reply.id.startswith("chatcmpl-")
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "length" and choice.message.content
    engine = LlamaCppEngine()
    engine.load_exact(chat_path, LoadConfig(n_ctx=1024, n_threads=1))
    try:
        rendered = render_prompt([ChatMessage(m["role"], m["content"]) for m in messages], inspect(chat_path))
        bias = tuple((int(t), float(b)) for t, b in NO_END.items())
        sampling = SamplingSettings(repeat_penalty=1.0, max_tokens=12, seed=5, logit_bias=bias)
        events = list(engine.generate(PromptRequest(rendered.text, rendered.stop, sampling)))
    finally:
        engine.unload()
    stats = events[-1]
    assert isinstance(stats, GenerationStats)
    usage = reply.usage
    assert usage is not None
    assert (
        (usage.prompt_tokens, usage.completion_tokens)
        == (stats.prompt_tokens, stats.generated_tokens)
        == (
            usage.prompt_tokens,
            12,
        )
    )
    assert usage.total_tokens == usage.prompt_tokens + 12
    assert choice.message.content == "".join(e.text for e in events[:-1])  # the same reply as in-process


def sse_events(server: ServeProcess, path: str, body: dict[str, Any]) -> list[bytes]:
    """The raw `data: ...` payloads of a streamed response, checking the framing on the way."""
    status, headers, data = raw(server, "POST", path, body, authorized())
    assert status == 200 and headers["content-type"].startswith("text/event-stream"), data
    frames = data.split(b"\n\n")
    assert frames[-1] == b"", "every event ends with a blank line"
    assert all(frame.startswith(b"data: ") for frame in frames[:-1])
    return [frame.removeprefix(b"data: ") for frame in frames[:-1]]


def test_streamed_chat_is_framed_exactly_as_openai_sends_it(server: ServeProcess):
    body = {
        "model": "chat.gguf",
        "messages": user("stream framing"),
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logit_bias": forced("water"),
    }
    payloads = sse_events(server, "/v1/chat/completions", body)
    assert payloads[-1] == b"[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert contents == [" water"] * 5  # one chunk per token
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert all(c["usage"] is None for c in chunks[:-1])  # include_usage: usage null until the last chunk
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    body["stream_options"] = None
    plain = [json.loads(p) for p in sse_events(server, "/v1/chat/completions", body)[:-1]]
    assert all("usage" not in c for c in plain) and plain[-1]["choices"][0]["finish_reason"] == "length"


def test_streaming_with_the_openai_client_matches_the_whole_reply(client: openai.OpenAI):
    kwargs: dict[str, Any] = {"model": "chat.gguf", "messages": user("same seed, both ways"), "max_tokens": 20}
    kwargs |= {"seed": 11, "logit_bias": NO_END, "temperature": 1.0}
    whole = client.chat.completions.create(**kwargs)
    parts, usage = [], None
    for chunk in client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(parts) == whole.choices[0].message.content
    assert usage is not None and whole.usage is not None and usage.completion_tokens == 20
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_a_fixed_seed_gives_the_same_reply(client: openai.OpenAI):
    def ask(seed: int) -> str:
        reply = client.chat.completions.create(
            model="chat.gguf", messages=user("seeds"), max_tokens=24, seed=seed, temperature=1.0, logit_bias=NO_END
        )
        return reply.choices[0].message.content or ""

    first = ask(42)
    assert ask(42) == first and ask(43) != first


def test_stop_strings_end_the_reply_before_them(client: openai.OpenAI):
    kwargs: dict[str, Any] = {"model": "chat.gguf", "messages": user("stop here"), "max_tokens": 40}
    kwargs |= {"temperature": 0.0, "logit_bias": NO_END}
    text = client.chat.completions.create(**kwargs).choices[0].message.content or ""
    assert len(text) > 30
    stop = text[14:20]
    cut = client.chat.completions.create(**kwargs, stop=[stop, "never-there"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]
    streamed = client.chat.completions.create(**kwargs, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text[: text.index(stop)]


def test_a_clients_next_turn_evaluates_only_its_new_tokens(client: openai.OpenAI, chat_path: Path):
    system = {"role": "system", "content": "You are a patient assistant who answers at length. " * 4}
    turn1 = [system, *user("first question about rivers")]
    first = client.chat.completions.create(model="chat.gguf", messages=turn1, max_tokens=16, logit_bias=NO_END)
    answer = first.choices[0].message.content or ""
    turn2 = [*turn1, {"role": "assistant", "content": answer}, *user("and a second one")]
    second = client.chat.completions.create(model="chat.gguf", messages=turn2, max_tokens=4, logit_bias=NO_END)
    u1, u2 = first.usage, second.usage
    assert u1 is not None and u2 is not None and u2.prompt_tokens_details is not None
    cached = u2.prompt_tokens_details.cached_tokens or 0
    # What turn 2 adds after the reply: the template's end of turn and the new user turn.
    engine = LlamaCppEngine()
    engine.load_exact(chat_path, LoadConfig(n_ctx=1024, n_threads=1))
    try:
        new_turn = len(
            engine.tokenize(
                "<|im_end|>\n<|im_start|>user\nand a second one<|im_end|>\n<|im_start|>assistant\n", add_bos=False
            )
        )
    finally:
        engine.unload()
    # Cached: the whole first prompt and the reply, but the reply's last token (sampled, never decoded).
    assert cached == u1.prompt_tokens + 16 - 1, (cached, u1.prompt_tokens)
    assert u2.prompt_tokens - cached == new_turn + 1, "only the new turn (and the reply's last token) is evaluated"


def test_four_clients_at_once_each_get_only_their_own_text(server: ServeProcess):
    words = ("water", "house", "light", "mother")
    results: dict[str, tuple[str, float, float]] = {}

    def stream(word: str) -> None:
        local = server.client(KEY)
        parts, times = [], []
        for chunk in local.chat.completions.create(
            model="chat.gguf", messages=user(f"say {word}"), max_tokens=200, logit_bias=forced(word), stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
                times.append(time.monotonic())
        results[word] = ("".join(parts), times[0], times[-1])

    threads = [threading.Thread(target=stream, args=(w,)) for w in words]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for word in words:
        assert results[word][0] == f" {word}" * 200  # 4 x 200 tokens share the context of 1024
    assert max(r[1] for r in results.values()) < min(r[2] for r in results.values()), "the streams overlapped"


def test_a_client_that_leaves_mid_stream_frees_its_sequence_at_once(server: ServeProcess, client: openai.OpenAI):
    host, port = server.base.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    body = {"model": "chat.gguf", "messages": user("a very long story"), "stream": True, "logit_bias": NO_END}
    connection.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json", **authorized()}
    )
    sock = connection.sock
    response = connection.getresponse()
    for _ in range(3):
        assert response.readline().startswith(b"data: ")
        response.readline()
    assert health(server)["slots"]["busy"] == 1
    sock.shutdown(socket.SHUT_RDWR)  # the client goes away mid-stream
    sock.close()
    connection.close()
    assert wait_idle(server) < 0.5
    started = time.monotonic()
    client.chat.completions.create(model="chat.gguf", messages=user("next"), max_tokens=1)
    assert time.monotonic() - started < 2.0, "the next request starts at once"


def test_text_completions(server: ServeProcess, client: openai.OpenAI):
    done = client.completions.create(model="chat.gguf", prompt="Once upon a time", max_tokens=6, logit_bias=NO_END)
    assert done.object == "text_completion" and done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 6
    default = client.completions.create(model="chat.gguf", prompt="Once upon a time", logit_bias=NO_END)
    assert default.usage is not None and default.usage.completion_tokens == 16  # OpenAI's default max_tokens
    echoed = client.completions.create(
        model="chat.gguf", prompt="Echo me", max_tokens=3, echo=True, logit_bias=forced("water")
    )
    assert echoed.choices[0].text == "Echo me water water water"
    payloads = sse_events(
        server,
        "/v1/completions",
        {"prompt": "Streamed", "max_tokens": 4, "stream": True, "logit_bias": forced("light")},
    )
    assert payloads[-1] == b"[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == " light" * 4
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and chunks[0]["object"] == "text_completion"


def test_embeddings_are_pooled_unit_vectors(server: ServeProcess, client: openai.OpenAI):
    result = client.embeddings.create(model="chat.gguf", input=["the river", "the river", "a house on a hill"])
    vectors = [item.embedding for item in result.data]  # the client asked for base64 and decoded it
    assert [item.index for item in result.data] == [0, 1, 2] and all(len(v) == 64 for v in vectors)
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-4 for v in vectors)
    assert vectors[0] == vectors[1] and vectors[0] != vectors[2]
    assert result.usage.prompt_tokens > 6
    status, _, data = raw(server, "POST", "/v1/embeddings", {"input": "the river"}, authorized())
    assert status == 200
    floats = json.loads(data)["data"][0]["embedding"]
    assert max(abs(a - b) for a, b in zip(floats, vectors[0], strict=True)) < 1e-6
    too_long = raw(server, "POST", "/v1/embeddings", {"input": "word " * 3000}, authorized())
    assert too_long[0] == 400 and json.loads(too_long[2])["error"]["param"] == "input"


# ---- errors ------------------------------------------------------------------------------------------------
def error_of(server: ServeProcess, body: Any, path: str = "/v1/chat/completions") -> tuple[int, dict[str, Any]]:
    status, _, data = raw(server, "POST", path, body, authorized())
    error = json.loads(data)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return status, error


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 3}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"seed": "x"}, "seed"),
        ({"n": 2}, "n"),
        ({"stop": [""]}, "stop"),
        ({"logit_bias": {"x": 1}}, "logit_bias"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0].type"),
        ({"tools": [{"type": "retrieval"}]}, "tools"),
        ({"messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_bad_fields_are_400s_naming_the_field(server: ServeProcess, change: dict[str, Any], param: str):
    status, error = error_of(server, {"model": "chat.gguf", "messages": user("hi"), **change})
    assert status == 400 and error["param"] == param and error["type"] == "invalid_request_error"
    assert param in error["message"]


def test_malformed_json_is_a_400(server: ServeProcess):
    status, error = error_of(server, b'{"messages": [')
    assert status == 400 and "not valid JSON" in error["message"]


def test_a_missing_or_wrong_api_key_is_a_401(server: ServeProcess):
    status, _, data = raw(server, "GET", "/v1/models")
    assert status == 401 and json.loads(data)["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.AuthenticationError):
        server.client("wrong-key").models.list()
    assert raw(server, "GET", "/health")[0] == 200  # health checks need no key


def test_an_unknown_model_is_a_404(client: openai.OpenAI):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert caught.value.code == "model_not_found"


def test_a_prompt_longer_than_the_context_is_a_400_with_both_numbers(server: ServeProcess):
    status, error = error_of(server, {"model": "chat.gguf", "messages": user("word " * 1500)})
    assert status == 400 and error["code"] == "context_length_exceeded"
    numbers = [int(n) for n in re.findall(r"\d+", error["message"])]
    assert 1024 in numbers and any(n > 1024 for n in numbers), error["message"]


def test_request_bodies_are_size_limited(server: ServeProcess):
    host, port = server.base.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", "/v1/chat/completions")
    connection.putheader("Content-Length", str(64 * 1024 * 1024))
    connection.putheader("Authorization", f"Bearer {KEY}")
    connection.endheaders()  # the body is never sent: the server answers from the header
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"]["code"] == "request_too_large"
    connection.close()


def test_cors_is_off_unless_origins_are_listed(server: ServeProcess):
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    _, headers, _ = raw(server, "OPTIONS", "/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in headers


@pytest.fixture(scope="module")
def narrow(models: Path) -> Iterator[ServeProcess]:
    """One sequence, no queue, CORS for one origin, no key."""
    process = serve(models, "chat.gguf", "--parallel", "1", "--queue", "0", "--cors", "http://app.example")
    yield process
    assert process.stop()[0] == 0


def test_a_full_queue_is_a_429_with_retry_after(narrow: ServeProcess):
    host, port = narrow.base.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    body = {"messages": user("hold the only sequence"), "stream": True, "logit_bias": NO_END}
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.readline().startswith(b"data: ")
    status, headers, data = raw(narrow, "POST", "/v1/chat/completions", {"messages": user("me too")})
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert json.loads(data)["error"]["code"] == "queue_full"
    with pytest.raises(openai.RateLimitError):
        narrow.client().chat.completions.create(model="chat.gguf", messages=user("me too"), max_tokens=1)
    connection.close()
    wait_idle(narrow)
    assert narrow.client().chat.completions.create(model="chat.gguf", messages=user("now"), max_tokens=1).choices


def test_listed_cors_origins_are_allowed(narrow: ServeProcess):
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    status, headers, _ = raw(narrow, "OPTIONS", "/v1/chat/completions", headers=preflight)
    assert status == 200 and headers["access-control-allow-origin"] == "http://app.example"
    _, other, _ = raw(narrow, "OPTIONS", "/v1/chat/completions", headers={**preflight, "Origin": "http://evil.example"})
    assert other.get("access-control-allow-origin") != "http://evil.example"


# ---- no model at start: loads just in time; the history switch ------------------------------------------------
@pytest.fixture
def lazy(models: Path, tmp_path: Path) -> Iterator[ServeProcess]:
    """No model given, nothing loaded last time; API conversations saved (a home of its own)."""
    shutil.copytree(models / "hearth" / "models", tmp_path / "hearth" / "models")
    process = serve(tmp_path, "--ctx", "1024", "--save-history")
    yield process
    assert process.stop()[0] == 0


def test_a_request_naming_a_library_model_loads_it_in_turn(lazy: ServeProcess):
    assert lazy.line.startswith("Serving your library (no model loaded until a request names one) at http://")
    assert health(lazy)["status"] == "no model loaded"
    client = lazy.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="", messages=user("hi"))
    assert caught.value.code == "model_not_loaded"
    reply = client.chat.completions.create(model="other", messages=user("hi"), max_tokens=2)
    assert reply.model == "other.gguf" and client.models.list().data[0].id == "other.gguf"
    long: dict[str, Any] = {"parts": 0}

    def long_stream() -> None:
        for chunk in client.chat.completions.create(
            model="other.gguf",
            messages=user("long"),
            max_tokens=600,
            logit_bias=NO_END,
            stream=True,
            stream_options={"include_usage": True},
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                long["parts"] += 1
            if chunk.choices and chunk.choices[0].finish_reason:
                long["finish"] = chunk.choices[0].finish_reason
            long["usage"] = chunk.usage or long.get("usage")

    thread = threading.Thread(target=long_stream)
    thread.start()
    while not health(lazy)["slots"]["busy"]:
        time.sleep(0.005)
    switched = client.chat.completions.create(model="chat.gguf", messages=user("switch"), max_tokens=2)
    thread.join(60)
    assert switched.model == "chat.gguf" and client.models.list().data[0].id == "chat.gguf"
    # The load waited for the running stream: it ran to its end on the model it started with.
    assert long["finish"] == "length" and long["usage"].completion_tokens == 600


def conversations(home: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    db = sqlite3.connect(home / "hearth" / "data" / "history.sqlite3")
    try:
        rows = db.execute("SELECT id, system_prompt FROM conversations ORDER BY id").fetchall()
        return [
            (
                system,
                db.execute("SELECT role, content FROM messages WHERE conversation_id = ? ORDER BY id", (i,)).fetchall(),
            )
            for i, system in rows
        ]
    finally:
        db.close()


def test_api_conversations_are_saved_only_when_asked(lazy: ServeProcess, tmp_path: Path, models: Path):
    client = lazy.client()
    turn1 = [{"role": "system", "content": "Be brief."}, *user("first")]
    first = client.chat.completions.create(model="chat.gguf", messages=turn1, max_tokens=3, logit_bias=NO_END)
    answer = first.choices[0].message.content or ""
    turn2 = [*turn1, {"role": "assistant", "content": answer}, *user("second")]
    second = client.chat.completions.create(model="chat.gguf", messages=turn2, max_tokens=3, logit_bias=NO_END)
    client.chat.completions.create(model="chat.gguf", messages=user("another chat"), max_tokens=2)
    saved = conversations(tmp_path)
    assert len(saved) == 2, saved  # the second turn continued the first conversation
    system, messages = saved[0]
    assert system == "Be brief."
    assert messages == [
        ("user", "first"),
        ("assistant", answer),
        ("user", "second"),
        ("assistant", second.choices[0].message.content),
    ]
    # the module's server runs without --save-history: its requests saved nothing
    history = models / "hearth" / "data" / "history.sqlite3"
    assert not history.exists() or conversations(models) == []


# ---- Ctrl-C ------------------------------------------------------------------------------------------------
def test_ctrl_c_cancels_requests_in_flight_and_leaves_nothing_running(models: Path):
    process = serve(models, "chat.gguf", "--ctx", "4096")
    client = process.client()
    received: list[str] = []
    ended: list[BaseException | None] = []

    def stream() -> None:
        try:
            for chunk in client.chat.completions.create(
                model="chat.gguf", messages=user("endless"), logit_bias=NO_END, stream=True
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
            ended.append(None)
        except Exception as exc:
            ended.append(exc)

    thread = threading.Thread(target=stream)
    thread.start()
    while len(received) < 5:
        time.sleep(0.005)
    children = psutil.Process(process.proc.pid).children(recursive=True)
    code, err = process.stop(timeout=20)
    thread.join(20)
    assert code == 0, err
    assert ended and len(received) < 4000, "the stream was cut, not finished"
    assert not [c for c in children if c.is_running()]
    port = int(process.base.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


# ---- structured output on a real vocabulary ------------------------------------------------------------------------
@pytest.mark.slow
def test_json_schema_output_validates_on_gemma(gemma_path: Path, tmp_path: Path):
    home = tmp_path / "gemma-home"
    (home / "hearth" / "models").mkdir(parents=True)
    process = serve(home, str(gemma_path), "--ctx", "2048")
    try:
        client = process.client()
        schema = {
            "type": "object",
            "properties": {  # bounded, so a base model's JSON always closes within max_tokens
                "name": {"type": "string", "maxLength": 24},
                "age": {"type": "integer"},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
            },
            "required": ["name", "age", "tags"],
            "additionalProperties": False,
        }
        reply = client.chat.completions.create(
            model=gemma_path.name,
            messages=user("Describe a person as JSON."),
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
            max_tokens=300,
            temperature=0.0,
        )
        assert reply.choices[0].finish_reason == "stop", reply.choices[0].message.content
        value = json.loads(reply.choices[0].message.content or "")
        assert set(value) == {"name", "age", "tags"} and isinstance(value["name"], str)
        assert isinstance(value["age"], int) and all(isinstance(t, str) for t in value["tags"])
        any_json = client.chat.completions.create(
            model=gemma_path.name,
            messages=user("Some JSON please."),
            response_format={"type": "json_object"},
            max_tokens=300,
            temperature=0.0,
            extra_body={"repeat_penalty": 1.5},  # llama.cpp's field: a base model's JSON must not loop
        )
        assert any_json.choices[0].finish_reason == "stop", any_json.choices[0].message.content
        json.loads(any_json.choices[0].message.content or "")
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model=gemma_path.name,
                messages=user("x"),
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 7}}},
            )
    finally:
        assert process.stop()[0] == 0


# ---- refusals at start ---------------------------------------------------------------------------------------
def run_serve(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    fake = home / "home"
    env = {**os.environ, "HEARTH_HOME": str(home / "hearth"), "HOME": str(fake), "XDG_CACHE_HOME": str(fake / "c")}
    command = [sys.executable, "-m", "app", "serve", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=REPO_ROOT)


def test_a_port_in_use_or_an_open_network_without_a_key_is_refused_in_one_line(models: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        busy = run_serve(models, "chat.gguf", "--port", str(port))
    assert busy.returncode == 2 and busy.stdout == ""
    assert busy.stderr.strip() == (
        f"hearth: port {port} is in use (another server?); choose another port (--port, or Settings -> Local server)"
    )
    assert time.monotonic() - started < 30
    open_network = run_serve(models, "chat.gguf", "--host", "0.0.0.0")
    assert open_network.returncode == 2 and "set an API key" in open_network.stderr
    assert len(open_network.stderr.strip().splitlines()) == 1
    unknown = run_serve(models, "missing.gguf")
    assert unknown.returncode == 2 and "no such file or library model" in unknown.stderr
