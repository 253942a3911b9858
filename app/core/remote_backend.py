"""A chat backend for an OpenAI-compatible server (llama-server, vLLM, Ollama, LM Studio, another Hearth).

prepare() builds the exact request body, which is what "Show prompt" shows (the server applies its own chat
template); stream() POSTs it with server-sent events and measures time to first token and tokens per second
here, as the user sees them. Stop closes the connection; every failure ends the stream with a GenerationStats
whose error names the server, after the text received so far.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from app.core.engine import Event, FinishReason, GenerationStats, TextChunk
from app.core.errors import ConfigError, RemoteError
from app.core.remote_http import KeySource, ServerLink, SseStream, status_error, transport_error
from app.core.remote_servers import RemoteModel, ServerConfig, Timeouts
from app.core.reply import PreparedReply, ReplyRequest

log = logging.getLogger("hearth.remote")

POLL_S = 0.02  # how often Stop and the deadlines are looked at while the server is silent
TEMPLATE = "server"  # stored as a remote reply's template: the server applied its own


@dataclass(frozen=True)
class RemotePayload:
    """What stream() sends: the body bytes exactly as shown, for this model."""

    model: str
    body: bytes
    seed: int | None


def request_body(model: str, request: ReplyRequest, *, llama_fields: bool = True) -> dict[str, Any]:
    """The chat-completions body for request: messages, the sampling fields the API carries, the reply format.

    llama_fields adds top_k, min_p, typical_p, repeat_penalty and repeat_last_n, which llama.cpp-family
    servers take (others ignore them or, like OpenAI's own API, refuse them)."""
    s = request.sampling
    body: dict[str, Any] = {
        "model": model,
        "messages": [message.to_openai() for message in request.messages],
        "stream": True,
        # Servers that count tokens send a last chunk with "usage" (OpenAI, vLLM, llama-server); others ignore it.
        "stream_options": {"include_usage": True},
        "max_tokens": s.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
    }
    if s.seed is not None:
        body["seed"] = s.seed
    if request.stop:
        body["stop"] = list(request.stop)
    if s.logit_bias:
        body["logit_bias"] = {str(token): bias for token, bias in s.logit_bias}
    if llama_fields:
        body.update(
            top_k=s.top_k,
            min_p=s.min_p,
            typical_p=s.typical_p,
            repeat_penalty=s.repeat_penalty,
            repeat_last_n=s.repeat_last_n,
        )
    response_format = request.response_format or reply_format_to_response_format(request.meta.get("reply_format"))
    if response_format is not None:
        body["response_format"] = response_format
    elif request.grammar:
        if not llama_fields:
            raise ConfigError(
                "this server takes no GBNF grammar (only llama.cpp-family servers do); ask for JSON output instead"
            )
        body["grammar"] = request.grammar  # llama-server's and llama-cpp-python's own field
    return body


def reply_format_to_response_format(reply_format: Any) -> dict[str, Any] | None:
    """A conversation's reply format ({"kind": "json"} or {"kind": "json_schema", "schema": {...}}) in
    OpenAI's response_format shape; None for text or anything else."""
    if not isinstance(reply_format, dict):
        return None
    kind = reply_format.get("kind")
    if kind == "json":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(reply_format.get("schema"), dict):
        return {
            "type": "json_schema",
            "json_schema": {"name": "reply", "strict": True, "schema": reply_format["schema"]},
        }
    return None


class RemoteBackend:
    """ChatBackend for one server; which of its models answers comes with each request (meta["model"])."""

    def __init__(
        self, config: ServerConfig, key: KeySource | str | None = None, timeouts: Timeouts | None = None
    ) -> None:
        self.config = config
        self.link = ServerLink(config, key, timeouts)
        self.name = config.name

    @property
    def timeouts(self) -> Timeouts:
        return self.link.timeouts

    def close(self) -> None:
        self.link.close()

    # ---- ChatBackend ----------------------------------------------------------------------------------------
    def prepare(self, request: ReplyRequest) -> PreparedReply:
        model = request.meta.get("model")
        if not isinstance(model, str) or not model:
            raise ConfigError(f"choose one of server {self.name!r}'s models first")
        body = request_body(model, request, llama_fields=self.config.llama_fields)
        text = json.dumps(body, indent=2, ensure_ascii=False)
        return PreparedReply(
            prompt_text=text,
            template=TEMPLATE,
            template_label=f"applied by the server ({self.name})",
            template_reason=(
                f"{self.name} ({self.config.url}) applies its own chat template; this is the exact request body "
                "Hearth sent (the API key travels in a header and is not shown)."
            ),
            template_warning=None,
            dropped=0,
            prompt_tokens=0,  # the server counts them (its usage, when it sends one)
            model_name=RemoteModel(self.name, model).label,
            payload=RemotePayload(model, text.encode("utf-8"), request.sampling.seed),
            load_settings={"server": self.name, "url": self.config.url, "model": model},
            key=request.cache_key,
        )

    def stream(self, prepared: PreparedReply, cancel: threading.Event) -> Iterator[Event]:
        payload: RemotePayload = prepared.payload
        reading = _Reading(self.config, payload, self.timeouts)
        try:
            sse = self.link.stream("chat/completions", payload.body)
        except RemoteError as exc:
            yield reading.stats("error", str(exc))
            return
        try:
            yield from reading.run(sse, cancel)
        finally:
            if not reading.finished:  # the consumer stopped iterating, or an error: never leave it streaming
                sse.abort()


class _Reading:
    """The state of one streamed reply: text so far, timings, the server's counts, how it ended."""

    def __init__(self, config: ServerConfig, payload: RemotePayload, timeouts: Timeouts) -> None:
        self.config = config
        self.payload = payload
        self.timeouts = timeouts
        self.started = time.monotonic()
        self.first: float | None = None  # the first reply text
        self.last: float | None = None
        self.deltas = 0  # content deltas: one per token on llama.cpp-family servers
        self.usage: dict[str, Any] = {}
        self.reason: str | None = None  # the server's finish_reason
        self.finished = False

    @property
    def name(self) -> str:
        return repr(self.config.name)

    def run(self, sse: SseStream, cancel: threading.Event) -> Iterator[Event]:
        deadline = self.started + self.timeouts.first_token
        opened = False
        while True:
            if cancel.is_set():
                sse.abort()
                yield self.stats("cancelled")
                return
            item = sse.next(POLL_S)
            now = time.monotonic()
            if item is None:
                if now > deadline:
                    sse.abort()
                    yield self.stats("error", self._silence())
                    return
                continue
            if item.kind == "open":
                opened = True
            elif item.kind == "status":
                yield self.stats("error", str(self._status(item.status, item.headers, item.data)))
                return
            elif item.kind == "error":
                yield self.stats("error", self._broken(item.exc, opened))
                return
            elif item.kind == "end":
                if self.reason is None:
                    yield self.stats("error", self._dropped("the server closed the connection before the reply ended"))
                else:
                    yield self.stats(self._finish_reason())
                return
            elif item.kind == "data":
                if item.data.strip() == "[DONE]":
                    yield self.stats(self._finish_reason())
                    return
                try:
                    text, problem = self._event(item.data, item.at)
                except ValueError:
                    sse.abort()
                    yield self.stats("error", self._dropped("the server sent something that is not a JSON event"))
                    return
                if problem:
                    sse.abort()
                    yield self.stats("error", f"server {self.name} reported an error mid-reply: {problem}")
                    return
                if text:
                    yield TextChunk(text)
            if self.first is not None:
                deadline = now + self.timeouts.between_chunks

    def _event(self, data: str, at: float) -> tuple[str, str | None]:
        """One data payload: (reply text, the server's error message if it sent one)."""
        event = json.loads(data)
        if not isinstance(event, dict):
            raise ValueError("not an object")
        if "error" in event:
            from app.core.remote_http import server_message

            return "", server_message(data) or "unknown error"
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        text = ""
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                self.deltas += 1
                if content:
                    text += content
                    self.last = at
                    if self.first is None:
                        self.first = at
            if choice.get("finish_reason"):
                self.reason = str(choice["finish_reason"])
        return text, None

    def _finish_reason(self) -> FinishReason:
        return "length" if self.reason == "length" else "stop"

    def stats(self, finish: FinishReason, error: str | None = None) -> GenerationStats:
        self.finished = True
        end = time.monotonic()
        generated = _int(self.usage.get("completion_tokens")) or self.deltas
        prompt = _int(self.usage.get("prompt_tokens"))
        ttft = ((self.first or end) - self.started) * 1000
        span = (self.last - self.first) if self.first is not None and self.last is not None else 0.0
        gen_tps = (generated - 1) / span if generated > 1 and span > 0 else 0.0
        return GenerationStats(
            finish_reason=finish,
            prompt_tokens=prompt,
            evaluated_tokens=prompt,
            generated_tokens=generated,
            ttft_ms=ttft,
            prompt_tps=prompt / (ttft / 1000) if prompt and ttft > 0 else 0.0,
            gen_tps=gen_tps,
            total_ms=(end - self.started) * 1000,
            error=error,
            seed=self.payload.seed,
        )

    # ---- failures in words ----------------------------------------------------------------------------------
    def _kept(self) -> str:
        return "; the text received so far is kept" if self.first is not None else ""

    def _silence(self) -> str:
        if self.first is None:
            return (
                f"server {self.name} sent no reply within {self.timeouts.first_token:g} s; it may be overloaded or "
                "still loading the model (Regenerate to try again)"
            )
        return f"server {self.name} went silent for {self.timeouts.between_chunks:g} s mid-reply{self._kept()}"

    def _status(self, status: int, headers: Any, text: str) -> RemoteError:
        return status_error(self.config, status, headers, text, model=self.payload.model)

    def _dropped(self, what: str) -> str:
        if self.first is None:
            return f"server {self.name}: {what}"
        return f"the connection to server {self.name} broke mid-reply ({what}){self._kept()}"

    def _broken(self, exc: BaseException | None, opened: bool) -> str:
        if "Timeout" in type(exc).__name__ and "Connect" not in type(exc).__name__:
            return self._silence()  # the backstop behind our own deadlines
        if not opened:
            return str(transport_error(self.config, exc or RuntimeError("unknown"), connect_s=self.timeouts.connect))
        return self._dropped(f"{type(exc).__name__}: {exc}" if exc is not None and str(exc) else type(exc).__name__)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
