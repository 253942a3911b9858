"""From HTTP handlers (asyncio) to the engine host (its own thread): admission into a bounded queue, the
model a request names (loaded just in time), and each job's events delivered to the event loop.

Every request is one host job of its own client, so the host decodes API streams together with each
other and with the window's chat, and cancelling one (a client that left) touches no other.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import ConfigError, HearthError
from app.core.host import TERMINAL, CallDone, LoadDone
from app.core.server.catalog import ModelCatalog, model_id
from app.core.server.errors import ApiError

if TYPE_CHECKING:
    from app.core.engine import LoadedModel, PromptRequest
    from app.core.host import EngineHost, Job
    from app.core.llama_engine import LlamaCppEngine
    from app.core.load_config import LoadConfig
    from app.core.reply import ReplyRequest
    from app.core.server.config import ServerConfig
    from app.core.server.history import ApiHistory

log = logging.getLogger("hearth.server")

DEFAULT_SLOTS = 4  # sequences assumed before a model is loaded (LoadConfig.n_parallel's default)


class JobEvents:
    """One host job's events, handed from the host's thread to the event loop's queue."""

    def __init__(self, runner: ApiRunner, loop: asyncio.AbstractEventLoop) -> None:
        self.runner = runner
        self.loop = loop
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.job: Job | None = None
        self.model = ""  # the id of the model the job runs on

    def deliver(self, event: object) -> None:
        """The host's callback (its thread): never blocks."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the server's loop is gone (stopped): nobody is listening any more
            pass
        if isinstance(event, TERMINAL):
            self.runner._forget(self)

    async def next(self) -> object:
        return await self.queue.get()

    def cancel(self) -> None:
        """Stop the job (any thread): a queued one never starts, a running one stops within a token."""
        if self.job is not None:
            self.job.cancel()


class Ticket:
    """One admitted request; release() (idempotent) gives its place in the queue back."""

    def __init__(self, runner: ApiRunner) -> None:
        self._runner = runner
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._runner._leave()


@dataclass(frozen=True)
class Activity:
    """What the app's status bar shows: API requests running or waiting."""

    in_flight: int


class ApiRunner:
    """Runs API requests on the engine host. Async methods run on the server's event loop."""

    def __init__(
        self,
        host: EngineHost,
        catalog: ModelCatalog,
        config: ServerConfig,
        *,
        load_config: Callable[[Path], LoadConfig],
        template_for: Callable[[str], str | None] = lambda _name: None,
        history: ApiHistory | None = None,
        on_activity: Callable[[Activity], None] | None = None,
    ) -> None:
        self.host = host
        self.catalog = catalog
        self.config = config
        self.load_config = load_config
        self.template_for = template_for
        self.history = history
        self.on_activity = on_activity
        self.in_flight = 0
        self.stopping = False
        self._model_lock: asyncio.Lock | None = None
        self._live: set[JobEvents] = set()
        self._live_lock = threading.Lock()

    # ---- admission ------------------------------------------------------------------------------------------
    @property
    def slots(self) -> int:
        model = self.host.model
        return model.config.n_parallel if model is not None else DEFAULT_SLOTS

    def admit(self) -> Ticket:
        """A place for one request, or 429 when the sequences and the queue are all taken (503 while the
        server stops)."""
        if self.stopping:
            raise ApiError(503, "the server is shutting down", error_type="server_error", headers={"Retry-After": "5"})
        limit = self.slots + self.config.max_queue
        if self.in_flight >= limit:
            raise ApiError(
                429,
                f"the server is busy: {self.in_flight} requests are running or waiting, the most it takes; "
                "retry in a moment",
                error_type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        self._notify()
        return Ticket(self)

    def _leave(self) -> None:
        self.in_flight -= 1
        self._notify()

    def _notify(self) -> None:
        if self.on_activity is not None:
            try:
                self.on_activity(Activity(self.in_flight))
            except Exception:
                log.exception("server activity callback failed")

    def cancel_all(self) -> None:
        """Stop every API job (any thread): the server is stopping."""
        self.stopping = True
        with self._live_lock:
            live = list(self._live)
        for events in live:
            events.cancel()

    def _forget(self, events: JobEvents) -> None:
        with self._live_lock:
            self._live.discard(events)

    # ---- the model a request runs on ---------------------------------------------------------------------------
    def _lock(self) -> asyncio.Lock:
        if self._model_lock is None:
            self._model_lock = asyncio.Lock()
        return self._model_lock

    async def _ensure_model(self, name: str | None) -> LoadedModel | Path:
        """The model the request runs on (called with the model lock held): the named one, loaded just in
        time when another is loaded; None: whatever is loaded (or being loaded by the window)."""
        host = self.host
        if name is None:
            if host.model is not None:
                return host.model
            if host.loading is not None:
                return host.loading
            raise ApiError(
                400,
                'no model is loaded: name one in "model" (GET /v1/models lists them)',
                param="model",
                code="model_not_loaded",
            )
        entry = await asyncio.to_thread(self.catalog.resolve, name)
        if entry is None:
            raise ApiError(
                404,
                f"The model `{name}` does not exist; GET /v1/models lists the models this server has",
                param="model",
                code="model_not_found",
            )
        current = host.model
        if current is not None and _same(current.path, entry.path):
            return current
        log.info("loading %s for an API request", entry.id)
        events = self._events()
        events.job = host.client("api-load", on_event=events.deliver).load(entry.path, self.load_config(entry.path))
        while True:
            event = await events.next()
            if isinstance(event, LoadDone):
                break
        if event.error or event.model is None or not _same(event.model.path, entry.path):
            raise ApiError(
                500,
                f"{entry.id} could not be loaded: {event.error or 'another model was loaded meanwhile'}",
                error_type="server_error",
                param="model",
                code="model_load_failed",
            )
        return event.model

    def _events(self) -> JobEvents:
        events = JobEvents(self, asyncio.get_running_loop())
        with self._live_lock:
            self._live.add(events)
        return events

    # ---- jobs ----------------------------------------------------------------------------------------------
    async def reply(
        self, name: str | None, build: Callable[[LoadedModel | Path], Awaitable[ReplyRequest]]
    ) -> JobEvents:
        """Submit a reply on the named model; build(model) makes the request (it may write the history)."""
        async with self._lock():
            model = await self._ensure_model(name)
            request = await build(model)
            events = self._events()
            events.model = model_id(_path(model))
            events.job = self.host.client("api", on_event=events.deliver).reply(request)
        if self.stopping:
            events.cancel()
        return events

    async def complete(self, name: str | None, prompt: PromptRequest) -> JobEvents:
        """Submit a raw completion (no template) on the named model."""
        async with self._lock():
            model = await self._ensure_model(name)
            events = self._events()
            events.model = model_id(_path(model))
            events.job = self.host.client("api", on_event=events.deliver).complete(prompt, None)
        if self.stopping:
            events.cancel()
        return events

    async def embed(self, name: str | None, inputs: Sequence[str | Sequence[int]]) -> tuple[str, Any]:
        """(model id, [(vector, tokens) ...]) from the loaded model; runs when no reply is decoding (the
        engine's exclusive calls wait for running replies)."""

        def run(engine: LlamaCppEngine) -> Any:
            embed = getattr(engine, "embed", None)
            if embed is None:  # the engine in a child process (a model split over RPC workers) has none
                return ConfigError("embeddings are not available for a model split over RPC workers")
            try:
                return embed(inputs)
            except HearthError as exc:  # handed back whole: its class decides the HTTP status
                return exc

        async with self._lock():
            model = await self._ensure_model(name)
            events = self._events()
            events.job = self.host.client("api-embed", on_event=events.deliver).call(run)
        while True:
            event = await events.next()
            if isinstance(event, CallDone):
                break
        if event.error:
            raise ApiError(500, f"embeddings failed: {event.error}", error_type="server_error")
        return model_id(_path(model)), event.result

    def template_override(self, model: LoadedModel | Path) -> str | None:
        """The template the user chose for this model in the app (None: Hearth's automatic choice)."""
        return self.template_for(_path(model).name) or None


def _path(model: LoadedModel | Path) -> Path:
    return model if isinstance(model, Path) else model.path


def _same(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)
