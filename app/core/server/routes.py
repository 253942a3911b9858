"""The ASGI app: OpenAI's endpoints over the ApiRunner, behind the API-key check, the body size limit and
(only when origins are listed) CORS."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.api_tools import ToolDeltaStream, completion_message
from app.core.engine import PromptRequest
from app.core.errors import HearthError
from app.core.reply import ReplyChunk, ReplyDone, ReplyRequest, ReplyStarted
from app.core.server import shapes
from app.core.server.errors import ApiError, error_body, from_kind
from app.core.server.parsing import (
    ChatParams,
    CompletionParams,
    chat_params,
    completion_params,
    embedding_params,
    parse_json,
)
from app.core.tool_calls import openai_message

if TYPE_CHECKING:
    from app.core.engine import GenerationStats, LoadedModel
    from app.core.server.config import ServerConfig
    from app.core.server.runner import ApiRunner, JobEvents, Ticket

log = logging.getLogger("hearth.server")


def create_app(runner: ApiRunner, config: ServerConfig) -> Starlette:
    api = _Api(runner)
    routes = [Route("/health", api.health, methods=["GET"])]
    for prefix in ("/v1", ""):  # llama-server and LM Studio answer without the /v1 too
        routes += [
            Route(f"{prefix}/models", api.models, methods=["GET"]),
            Route(f"{prefix}/models/{{model_id:path}}", api.model, methods=["GET"]),
            Route(f"{prefix}/chat/completions", api.chat, methods=["POST"]),
            Route(f"{prefix}/completions", api.completions, methods=["POST"]),
            Route(f"{prefix}/embeddings", api.embeddings, methods=["POST"]),
        ]
    middleware = []
    if config.cors_origins:  # outermost: preflights are answered before the key check, errors carry CORS
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type"],
                max_age=600,
            )
        )
    if config.api_key:
        middleware.append(Middleware(ApiKeyCheck, key=config.api_key))
    middleware.append(Middleware(BodyLimit, limit=config.max_body_bytes))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error},
    )


# ---- errors -----------------------------------------------------------------------------------------------------
def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path} (the API is under /v1)"
    else:
        message = f"{request.method} {request.url.path}: {exc.detail}"
    error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return JSONResponse(error_body(message, error_type), status_code=exc.status_code, headers=exc.headers)


async def _server_error(_request: Request, exc: Exception) -> Response:
    log.exception("API request failed", exc_info=exc)
    message = f"internal error: {type(exc).__name__}: {exc}"
    return JSONResponse(error_body(message, "server_error"), status_code=500)


async def _send_error(send: Send, error: ApiError) -> None:
    await _error_response(error)({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


# ---- middleware -------------------------------------------------------------------------------------------------
class ApiKeyCheck:
    """Every endpoint but /health needs `Authorization: Bearer KEY` (compared in constant time)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if not header:
            message = "no API key given: send it in an Authorization header (Authorization: Bearer YOUR_KEY)"
            await _send_error(send, ApiError(401, message, code="missing_api_key"))
        elif scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.key):
            message = "incorrect API key: use the key set with --api-key or in Hearth's Settings -> Local server"
            await _send_error(send, ApiError(401, message, code="invalid_api_key"))
        else:
            await self.app(scope, receive, send)


class BodyLimit:
    """Reads a request's body up to the limit (413 beyond it) and hands it to the app in one message; the
    app's later receive() calls reach the server (to hear of a client that left)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = ApiError(413, f"the request body is larger than {self.limit:,} bytes", code="request_too_large")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.limit:
                    await _send_error(send, too_large)
                    return
            except ValueError:
                await _send_error(send, ApiError(400, "the Content-Length header is not a number"))
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _send_error(send, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# ---- streaming --------------------------------------------------------------------------------------------------
class EventStream(Response):
    """A server-sent-events response. A client that leaves is noticed at once (a task waits for the
    server's disconnect message), not at the next write: on_close cancels the job, in a prompt evaluation
    too. on_close runs once the stream ends, however it ends."""

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(media_type="text/event-stream")
        self.events = events
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # proxies must not buffer the stream
        ]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch, receive, group.cancel_scope)
                async for data in self.events:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        except OSError:  # the connection broke while writing
            pass
        finally:
            self.on_close()
            await self.events.aclose()  # type: ignore[attr-defined]

    async def _watch(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.on_close()
                scope.cancel()
                return


def _closer(events: JobEvents, ticket: Ticket) -> Callable[[], None]:
    """What ends a stream's request: its job stops (if it still runs) and its place in the queue is freed."""

    def close() -> None:
        events.cancel()
        ticket.release()

    return close


async def _watching(request: Request, events: JobEvents, body: Callable[[], Awaitable[Any]]) -> Any:
    """Run body() while a task waits for the client to leave, which cancels the job (body's own errors,
    ApiError answers among them, come out as they are)."""

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                events.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        return await body()
    finally:
        watcher.cancel()


async def _started(events: JobEvents) -> ReplyStarted:
    """Wait for the job to start (queued jobs wait for a free sequence); a job that could not start is
    answered with its error (too long, bad template, bad grammar ...)."""
    while True:
        event = await events.next()
        if isinstance(event, ReplyStarted):
            return event
        if isinstance(event, ReplyDone):
            raise from_kind(event.error_kind, event.error or "the request could not start")


async def _finished(events: JobEvents) -> ReplyDone:
    while True:
        event = await events.next()
        if isinstance(event, ReplyDone):
            return event


def _failure(done: ReplyDone, stopping: bool) -> ApiError | None:
    """The error of a reply that started but did not finish normally."""
    stats = done.stats
    if stats is None:
        return from_kind(done.error_kind, done.error or "the request failed")
    if stats.finish_reason == "cancelled":
        if stopping:
            return ApiError(503, "the server is shutting down", error_type="server_error", headers={"Retry-After": "5"})
        return ApiError(499, "the request was cancelled", error_type="invalid_request_error", code="cancelled")
    if stats.finish_reason == "error":
        return ApiError(500, f"generation failed: {stats.error or done.error}", error_type="server_error")
    return None


# ---- endpoints --------------------------------------------------------------------------------------------------
class _Api:
    def __init__(self, runner: ApiRunner) -> None:
        self.runner = runner

    async def health(self, _request: Request) -> Response:
        host = self.runner.host
        status = "ok" if host.model is not None else "loading" if host.loading is not None else "no model loaded"
        return JSONResponse(
            {
                "status": status,
                "slots": {"total": self.runner.slots, "busy": host.generating},
                "requests": {"in_flight": self.runner.in_flight},
            }
        )

    async def models(self, _request: Request) -> Response:
        entries = await anyio.to_thread.run_sync(self.runner.catalog.entries)
        return JSONResponse(shapes.model_list([shapes.model_object(e.id, e.created) for e in entries]))

    async def model(self, request: Request) -> Response:
        name = request.path_params["model_id"]
        entry = await anyio.to_thread.run_sync(self.runner.catalog.resolve, name)
        if entry is None:
            raise ApiError(404, f"The model `{name}` does not exist", param="model", code="model_not_found")
        return JSONResponse(shapes.model_object(entry.id, entry.created))

    # ---- chat ---------------------------------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        params = chat_params(parse_json(await request.body()))
        ticket = self.runner.admit()
        handed_over = False
        try:
            saved: list[int] = []
            events = await self.runner.reply(params.model, lambda model: self._chat_request(params, model, saved))
            started = await _watching(request, events, lambda: _started(events))
            syntax = started.tool_syntax  # how this template has the model write calls (None: no tools shown)
            ident, created = shapes.new_id("chatcmpl"), shapes.now()

            async def after(done: ReplyDone, message: dict[str, Any]) -> None:
                """message: the reply as the client got it (its calls' ids are the ones it sends back)."""
                if saved and self.runner.history is not None and done.message_id is not None:
                    await self.runner.history.remember(params.messages, message, saved[0], done.message_id)

            if params.stream:
                handed_over = True
                stream = self._chat_stream(events, params, syntax, ident, created, after)
                return EventStream(stream, _closer(events, ticket))
            done = await _watching(request, events, lambda: _finished(events))
            error = _failure(done, self.runner.stopping)
            if error is not None:
                raise error
            assert done.stats is not None
            message, finish = completion_message(done.text, syntax, params.tools, shapes.finish_reason(done.stats))
            await after(done, message)
            return JSONResponse(shapes.chat_completion(ident, created, events.model, message, finish, done.stats))
        finally:
            if not handed_over:
                ticket.release()

    async def _chat_request(self, params: ChatParams, model: LoadedModel | Path, saved: list[int]) -> ReplyRequest:
        conversation, parent = None, "leaf"
        if self.runner.history is not None:
            conversation, parent_id = await self.runner.history.begin(params.messages, model, params.sampling)
            saved.append(conversation)
            parent = parent_id  # type: ignore[assignment]
        return ReplyRequest(
            params.messages,
            params.sampling,
            template_override=self.runner.template_override(model),
            grammar=params.grammar,
            stop=params.stop,
            conversation_id=conversation,
            parent_id=parent,
            meta={"source": "api"},
            response_format=params.response_format,
            trim=False,  # an API client gets its whole conversation or a 400, never a silently cut one
            **params.tools.request_fields(),
        )

    async def _chat_stream(
        self,
        events: JobEvents,
        params: ChatParams,
        syntax: str | None,
        ident: str,
        created: int,
        after: Callable[[ReplyDone, dict[str, Any]], Awaitable[None]],
    ) -> AsyncIterator[bytes]:
        model, usage = events.model, params.include_usage

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return shapes.sse(shapes.chat_chunk(ident, created, model, delta, finish, with_usage=usage))

        yield chunk({"role": "assistant", "content": ""})
        # Prose goes out as it comes; a call's text is held back and sent whole as delta.tool_calls at the end.
        calls = ToolDeltaStream(syntax, params.tools)
        while True:
            event = await events.next()
            if isinstance(event, ReplyChunk):
                for delta in calls.feed(event.text):
                    yield chunk(delta)
            elif isinstance(event, ReplyDone):
                break
        error = _failure(event, self.runner.stopping)
        if error is not None:
            yield shapes.sse(error.body())
            return
        stats: GenerationStats = event.stats  # type: ignore[assignment]
        deltas, finish = calls.finish(shapes.finish_reason(stats))
        for delta in deltas:
            yield chunk(delta)
        # Stored before the stream ends: a client that sends its next turn at once must find this reply
        # (with its calls) in the history, or the turn would start a conversation of its own.
        message = openai_message(calls.parsed) if calls.parsed is not None else {"content": event.text}
        await after(event, message)
        yield chunk({}, finish)
        if usage:
            yield shapes.sse(shapes.chat_usage_chunk(ident, created, model, stats))
        yield shapes.DONE

    # ---- text completions ------------------------------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        params = completion_params(parse_json(await request.body()))
        ticket = self.runner.admit()
        handed_over = False
        try:
            prompt = PromptRequest(params.prompt, params.stop, params.sampling, params.grammar)
            events = await self.runner.complete(params.model, prompt)
            await _watching(request, events, lambda: _started(events))
            ident, created = shapes.new_id("cmpl"), shapes.now()
            if params.stream:
                handed_over = True
                return EventStream(self._text_stream(events, params, ident, created), _closer(events, ticket))
            done = await _watching(request, events, lambda: _finished(events))
            error = _failure(done, self.runner.stopping)
            if error is not None:
                raise error
            assert done.stats is not None
            text = params.prompt + done.text if params.echo else done.text
            finish = shapes.finish_reason(done.stats)
            return JSONResponse(shapes.text_completion(ident, created, events.model, text, done.stats, finish))
        finally:
            if not handed_over:
                ticket.release()

    async def _text_stream(
        self, events: JobEvents, params: CompletionParams, ident: str, created: int
    ) -> AsyncIterator[bytes]:
        model = events.model
        if params.echo:
            yield shapes.sse(shapes.text_completion(ident, created, model, params.prompt, None, None))
        while True:
            event = await events.next()
            if isinstance(event, ReplyChunk):
                yield shapes.sse(shapes.text_completion(ident, created, model, event.text, None, None))
            elif isinstance(event, ReplyDone):
                break
        error = _failure(event, self.runner.stopping)
        if error is not None:
            yield shapes.sse(error.body())
            return
        stats: GenerationStats = event.stats  # type: ignore[assignment]
        yield shapes.sse(shapes.text_completion(ident, created, model, "", None, shapes.finish_reason(stats)))
        if params.include_usage:
            yield shapes.sse(shapes.text_usage_chunk(ident, created, model, stats))
        yield shapes.DONE

    # ---- embeddings ------------------------------------------------------------------------------------------
    async def embeddings(self, request: Request) -> Response:
        params = embedding_params(parse_json(await request.body()))
        ticket = self.runner.admit()
        try:
            model, result = await self.runner.embed(params.model, params.inputs)
        finally:
            ticket.release()
        if isinstance(result, HearthError):
            error = from_kind(type(result).__name__, str(result))
            error.param = "input"
            raise error
        vectors = [vector for vector, _ in result]
        if params.dimensions is not None and vectors and params.dimensions != len(vectors[0]):
            raise ApiError(
                400,
                f"dimensions: this model gives {len(vectors[0])}-dimensional embeddings; got {params.dimensions}",
                param="dimensions",
            )
        tokens = sum(count for _, count in result)
        return JSONResponse(shapes.embedding_list(model, vectors, tokens, params.encoding_format))
