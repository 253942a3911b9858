"""A stand-in OpenAI-compatible server on 127.0.0.1 for the failure cases a real server will not produce on
demand: 401/404/429/503 answers, a stream that drops mid-reply, a server that goes silent, an error event.

It speaks the same HTTP as llama-server (SSE `data:` events, `[DONE]`) and records every request as received
(path, headers, exact body bytes), so tests can compare what Hearth showed with what was sent.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    """How the next chat completions are answered.

    status: answer with this status and an OpenAI error body (retry_after adds the header).
    words: the reply, one SSE chunk per word, delay_s apart. drop_after: close the connection after that
    many chunks (no finish, no [DONE]). stall_after: go silent after that many chunks until released.
    error_after: send an {"error": ...} event after that many chunks. usage: end with a usage chunk.
    key: the API key required (401 otherwise)."""

    status: int = 200
    message: str = ""
    retry_after: str | None = None
    words: tuple[str, ...] = ("Hello", " from", " the", " stand-in", " server", ".")
    delay_s: float = 0.0
    drop_after: int | None = None
    stall_after: int | None = None
    error_after: int | None = None
    usage: bool = True
    finish_reason: str = "stop"
    models: tuple[str, ...] = ("stub-model",)
    key: str | None = None


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class OpenAIStub:
    behaviour: Behaviour = field(default_factory=Behaviour)
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                stub._record(self, b"")
                if not stub._authorised(self):
                    return
                if self.path.rstrip("/") != "/v1/models":
                    stub._send_json(self, 404, {"error": {"message": f"no route {self.path}"}})
                    return
                data = [{"id": m, "object": "model", "owned_by": "stub"} for m in stub.behaviour.models]
                stub._send_json(self, 200, {"object": "list", "data": data})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                stub._record(self, body)
                if not stub._authorised(self):
                    return
                stub._chat(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="openai-stub", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def chats(self) -> list[Received]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # ---- answers ------------------------------------------------------------------------------------------------
    def _record(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        self.requests.append(Received(handler.command, handler.path, headers, body))

    def _authorised(self, handler: BaseHTTPRequestHandler) -> bool:
        key = self.behaviour.key
        if key is None or handler.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._send_json(handler, 401, {"error": {"message": "Invalid API key", "type": "invalid_request_error"}})
        return False

    def _send_json(self, handler: BaseHTTPRequestHandler, status: int, data: Any, extra: dict | None = None) -> None:
        payload = json.dumps(data).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in (extra or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def _event(self, handler: BaseHTTPRequestHandler, data: Any) -> None:
        text = data if isinstance(data, str) else json.dumps(data)
        handler.wfile.write(f"data: {text}\n\n".encode())
        handler.wfile.flush()

    def _chunk(self, model: str, delta: dict, finish: str | None = None) -> dict:
        return {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def _chat(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        b = self.behaviour
        request = json.loads(body or b"{}")
        model = request.get("model", "")
        if b.status != 200:
            extra = {"Retry-After": b.retry_after} if b.retry_after is not None else {}
            message = b.message or f"stand-in status {b.status}"
            self._send_json(handler, b.status, {"error": {"message": message, "code": b.status}}, extra)
            return
        if model not in b.models:
            self._send_json(handler, 404, {"error": {"message": f"model '{model}' not found"}})
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        self._event(handler, self._chunk(model, {"role": "assistant", "content": ""}))
        for index, word in enumerate(b.words):
            if b.drop_after is not None and index == b.drop_after:
                handler.close_connection = True
                handler.wfile.flush()
                handler.connection.shutdown(2)  # the connection breaks mid-reply (no finish, no [DONE])
                return
            if b.stall_after is not None and index == b.stall_after:
                self.release.wait(60)
                return
            if b.error_after is not None and index == b.error_after:
                self._event(handler, {"error": {"message": "the model crashed (stand-in)", "code": 500}})
                return
            if b.delay_s:
                time.sleep(b.delay_s)
            self._event(handler, self._chunk(model, {"content": word}))
        self._event(handler, self._chunk(model, {}, b.finish_reason))
        if b.usage and (request.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 11, "completion_tokens": len(b.words), "total_tokens": 11 + len(b.words)}
            self._event(
                handler, {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "choices": [], "usage": usage}
            )
        self._event(handler, "[DONE]")
        handler.close_connection = True
