"""The engine host: one thread owns the local engine and serves every client (the window, `hearth chat`,
`hearth serve`) from one job queue; each client sees only its own events.

Threading contract:
- Clients submit jobs from any thread (HostClient.load/unload/reply/complete/call) and get a Job back.
- The host thread runs jobs in order. Replies (and raw completions) are decoded together: each gets one of
  the engine's sequences, and one llama_decode per step advances them all, so a second client's reply never
  waits for the first to finish. Loads, unloads and calls are exclusive: they wait until the replies
  started before them are done, and replies queued after them wait for them.
- Events are delivered on the thread that produced them (the host thread; a remote backend's stream
  thread): to the job's queue (Job.events() / Job.wait() from any thread) and to the client's callback, if
  it has one. A callback must only hand the event on (the GUI emits a Qt signal), never block.
- Job.cancel() stops that job alone (a reply within a token, a load through llama.cpp's progress callback);
  cancelling one client's job never touches another's.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.engine import GenerationStats, LoadedModel, PromptRequest, TextChunk
from app.core.errors import HearthError
from app.core.reply import PreparedReply, ReplyChunk, ReplyDone, ReplyRecorder, ReplyRequest, ReplyStarted

if TYPE_CHECKING:
    from app.core.backends import ChatBackend, LocalBackend
    from app.core.hardware import HardwareInfo
    from app.core.kv_state import StateCache
    from app.core.llama_engine import LlamaCppEngine, Run
    from app.core.load_config import LoadConfig
    from app.core.store import Store

log = logging.getLogger("hearth.host")

EngineFactory = Callable[[], "LlamaCppEngine"]
EventCallback = Callable[[object], None]


# ---- events other than a reply's (app/core/reply.py has those) ----------------------------------------------


@dataclass(frozen=True)
class LoadProgress:
    job_id: int
    fraction: float


@dataclass(frozen=True)
class LoadDone:
    """The last event of a load: the model, or the error (the previous model is gone either way)."""

    job_id: int
    model: LoadedModel | None
    error: str | None = None
    notes: tuple[str, ...] = ()  # e.g. the GPU layers were reduced after running out of memory
    plan_reason: str = ""  # why this many GPU layers
    placement: tuple[str, ...] = ()  # a model split over RPC workers: which layers went where


@dataclass(frozen=True)
class Unloaded:
    job_id: int


@dataclass(frozen=True)
class CallDone:
    """The last event of a call(): what the function returned, or the error."""

    job_id: int
    result: Any = None
    error: str | None = None


@dataclass(frozen=True)
class HostState:
    """Broadcast to every subscriber when the model or the host's activity changes."""

    model: LoadedModel | None
    loading: Path | None
    generating: int  # replies in progress, all clients together
    queued: int  # jobs waiting


TERMINAL = (LoadDone, Unloaded, ReplyDone, CallDone)


# ---- jobs and clients ------------------------------------------------------------------------------------------


class Job:
    """One request to the host. Its events arrive in order; the last one is terminal (see TERMINAL)."""

    def __init__(self, job_id: int, client: HostClient, kind: str, payload: Any) -> None:
        self.id = job_id
        self.client = client
        self.kind = kind  # "load" | "unload" | "reply" | "complete" | "call"
        self.payload = payload
        self.cancelled = threading.Event()
        self.done = threading.Event()
        self.result: object = None  # the terminal event
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()

    @property
    def exclusive(self) -> bool:
        return self.kind in ("load", "unload", "call")

    def cancel(self) -> None:
        """Stop this job (any thread): a queued job never starts, a running one stops within a token."""
        self.cancelled.set()
        self.client.host._wake()

    def publish(self, event: object) -> None:
        """Deliver an event (the producing thread): to the queue, then the client's callback."""
        if isinstance(event, TERMINAL):
            self.result = event
        self._queue.put(event)
        callback = self.client.on_event
        if callback is not None:
            try:
                callback(event)
            except Exception:  # a client's bug must never stop the host
                log.exception("event callback of client %s failed", self.client.name)
        if isinstance(event, TERMINAL):
            self.done.set()

    def events(self, timeout: float | None = None) -> Iterator[object]:
        """This job's events as they come, up to and including the terminal one. timeout: the longest wait
        for any one event (TimeoutError after it; the job goes on)."""
        while True:
            try:
                event = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no event from job {self.id} for {timeout} s") from None
            yield event
            if isinstance(event, TERMINAL):
                return

    def wait(self, timeout: float | None = None) -> object:
        """Block until the job ends; returns its terminal event (TimeoutError after timeout)."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"job {self.id} ({self.kind}) did not finish within {timeout} s")
        return self.result


class HostClient:
    """One client of the host (the window, a CLI chat, one HTTP request handler ...)."""

    def __init__(self, host: EngineHost, name: str, on_event: EventCallback | None) -> None:
        self.host = host
        self.name = name
        self.on_event = on_event

    def load(self, path: Path | str, config: LoadConfig) -> Job:
        """Load a model (unloading the current one). "auto" GPU layers are resolved with the fit estimate."""
        return self.host._submit(self, "load", (Path(path), config))

    def unload(self) -> Job:
        return self.host._submit(self, "unload", None)

    def reply(self, request: ReplyRequest) -> Job:
        """Generate (and, with a conversation_id, save) a reply to request.messages."""
        return self.host._submit(self, "reply", request)

    def complete(self, request: PromptRequest, key: Any = None) -> Job:
        """A raw completion of request.text (no template, not saved): ReplyChunk events, then ReplyDone."""
        return self.host._submit(self, "complete", (request, key))

    def call(self, fn: Callable[[LlamaCppEngine], Any]) -> Job:
        """Run fn(engine) on the engine thread when no reply is running (tokenize, embeddings, state files).
        The result comes back in CallDone."""
        return self.host._submit(self, "call", fn)

    def save_conversation(self, conversation_id: int) -> Job:
        """The user left this conversation: save its KV cache (CallDone.result: bytes written, 0 if none)."""
        return self.call(lambda engine: self.host._save_state(engine, conversation_id))


# ---- the host ----------------------------------------------------------------------------------------------------


@dataclass
class _Active:
    """A local reply or completion in progress on the engine."""

    job: Job
    run: Run
    recorder: ReplyRecorder


class EngineHost:
    """Owns the local engine on its own thread; see the module docstring for the contract."""

    def __init__(
        self,
        engine_factory: EngineFactory | None = None,
        *,
        store_path: Path | None = None,
        hardware: Callable[[], HardwareInfo] | None = None,
        state_cache: StateCache | None = None,
        name: str = "hearth-engine",
    ) -> None:
        """hardware: what the load policy plans for (default: this machine, detected on the host thread;
        tests inject a simulated GPU). state_cache: where conversations' KV caches are saved when they are
        left (save_conversation, a model change, shutdown) and restored from when they continue."""
        self._factory = engine_factory or _default_engine
        self.store_path = store_path
        self.state_cache = state_cache
        self.hardware = hardware or _detected_hardware
        self._ids = itertools.count(1)
        self._inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._pending: deque[Job] = deque()
        self._active: list[_Active] = []
        self._backends: dict[str, ChatBackend] = {}
        self._subscribers: list[Callable[[HostState], None]] = []
        self._lock = threading.Lock()
        self._engine: LlamaCppEngine | None = None
        self._local: LocalBackend | None = None
        self._store: Store | None = None
        self._loading: Path | None = None
        self._loading_job: Job | None = None
        self._model: LoadedModel | None = None
        self._remote_threads: set[threading.Thread] = set()
        self._remote_jobs: set[Job] = set()  # remote replies in flight: shutdown stops them too
        self._stopping = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    # ---- state (any thread) --------------------------------------------------------------------------------------
    @property
    def model(self) -> LoadedModel | None:
        return self._model

    @property
    def loading(self) -> Path | None:
        return self._loading

    @property
    def generating(self) -> int:
        return len(self._active) + len(self._remote_threads)

    @property
    def thread(self) -> threading.Thread:
        """The host thread (the only one that calls into the engine)."""
        return self._thread

    @property
    def engine(self) -> LlamaCppEngine | None:
        """The engine object (created on the host thread); only the host thread may call into it."""
        return self._engine

    def state(self) -> HostState:
        return HostState(self._model, self._loading, self.generating, len(self._pending))

    def client(self, name: str = "", on_event: EventCallback | None = None) -> HostClient:
        return HostClient(self, name, on_event)

    def subscribe(self, callback: Callable[[HostState], None]) -> Callable[[], None]:
        """callback(HostState) after every change of model or activity (on the host's threads)."""
        with self._lock:
            self._subscribers.append(callback)
        return lambda: self._unsubscribe(callback)

    def _unsubscribe(self, callback: Callable[[HostState], None]) -> None:
        with self._lock:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

    def register_backend(self, name: str, backend: ChatBackend) -> None:
        """Make a backend (a remote server) available to ReplyRequest.backend = name."""
        with self._lock:
            self._backends[name] = backend

    def unregister_backend(self, name: str) -> None:
        with self._lock:
            self._backends.pop(name, None)

    def backend(self, name: str) -> ChatBackend | None:
        with self._lock:
            return self._backends.get(name)

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Cancel everything, wait for the thread, then free the model (a freed llama.cpp context must never
        be in use: that segfaults). True when everything stopped in time."""
        if self._stopping:
            return not self._thread.is_alive()
        self._stopping = True
        for job in list(self._pending):
            job.cancelled.set()
        for active in list(self._active):
            active.job.cancelled.set()
        for job in list(self._remote_jobs):
            job.cancelled.set()
        engine = self._engine
        if engine is not None:
            engine.cancel()
        self._inbox.put(None)
        self._thread.join(timeout)
        for thread in list(self._remote_threads):
            thread.join(max(0.1, timeout / 4))
        return not self._thread.is_alive()

    # ---- submission ---------------------------------------------------------------------------------------------
    def _submit(self, client: HostClient, kind: str, payload: Any) -> Job:
        job = Job(next(self._ids), client, kind, payload)
        if self._stopping:
            job.cancelled.set()
        if kind == "reply" and payload.backend is not None:
            self._start_remote(job)
            return job
        self._inbox.put(job)
        return job

    def _wake(self) -> None:
        """Let a host thread blocked on an empty queue look at its pending jobs again (a None is ignored
        unless the host is stopping)."""
        self._inbox.put(None)

    def _broadcast(self) -> None:
        state = self.state()
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(state)
            except Exception:
                log.exception("host state subscriber failed")

    # ---- the host thread -----------------------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            while True:
                if not self._take_new_jobs():
                    break
                self._admit()
                if self._active:
                    self._step()
        except Exception:
            log.exception("the engine host stopped")
        finally:
            self._close_on_thread()

    def _take_new_jobs(self) -> bool:
        """Move submitted jobs into the pending queue; blocks while there is nothing to do. False: stop."""
        block = not self._active and not self._runnable_pending()
        while True:
            try:
                item = self._inbox.get(block=block, timeout=0.25 if block else None)
            except queue.Empty:
                if self._stopping:
                    return False
                if block and not self._active and not self._runnable_pending():
                    continue
                return True
            if item is None:
                if self._stopping:
                    self._cancel_everything()
                    return False
            else:
                self._pending.append(item)
            block = False

    def _runnable_pending(self) -> bool:
        return any(job.cancelled.is_set() for job in self._pending) or (
            bool(self._pending) and (not self._pending[0].exclusive or not self._active)
        )

    def _admit(self) -> None:
        """Start pending jobs in order: replies while sequences are free, exclusive jobs when idle."""
        while self._pending:
            job = self._pending[0]
            if job.cancelled.is_set():
                self._pending.popleft()
                self._end_cancelled(job)
                continue
            if job.exclusive:
                if self._active:
                    return  # replies started before it finish first; later ones wait behind it
                self._pending.popleft()
                self._run_exclusive(job)
                continue
            engine = self._engine
            if engine is not None and engine.model is not None and getattr(engine, "free_slots", 1) == 0:
                return
            self._pending.popleft()
            if engine is not None and not hasattr(engine, "begin"):
                self._run_whole(job)  # an engine of one sequence (in a child process): one reply at a time
                continue
            self._start_local(job)

    def _end_cancelled(self, job: Job) -> None:
        if job.kind in ("reply", "complete"):
            conversation = job.payload.conversation_id if job.kind == "reply" else None
            job.publish(ReplyDone(job.id, conversation, None, None, "cancelled before it started"))
        elif job.kind == "load":
            job.publish(LoadDone(job.id, self._model, "cancelled before it started"))
        elif job.kind == "unload":
            job.publish(Unloaded(job.id))
        else:
            job.publish(CallDone(job.id, None, "cancelled before it started"))

    def _cancel_everything(self) -> None:
        for active in self._active:
            active.job.cancelled.set()
        while self._active:
            self._step()
        while self._pending:
            self._end_cancelled(self._pending.popleft())

    def _ensure_engine(self) -> LlamaCppEngine:
        from app.core.backends import LocalBackend

        if self._engine is None:
            self._engine = self._factory()
        if self._local is None or self._local.engine is not self._engine:
            self._local = LocalBackend(self._engine)
        return self._engine

    def _ensure_store(self) -> Store | None:
        if self._store is None and self.store_path is not None:
            from app.core.store import Store

            self._store = Store.open(self.store_path)
        return self._store

    # ---- exclusive jobs -----------------------------------------------------------------------------------------
    def _run_exclusive(self, job: Job) -> None:
        if job.kind == "load":
            self._load(job)
        elif job.kind == "unload":
            self._unload(job)
        else:
            self._call(job)

    def _save_state(self, engine: LlamaCppEngine, conversation_id: int) -> int:
        cache = self.state_cache
        if cache is None or engine.model is None:
            return 0
        from app.core.kv_state import conversation_name

        return cache.save(engine, ("conversation", conversation_id), conversation_name(conversation_id))

    def _save_all_states(self, engine: LlamaCppEngine) -> None:
        """Before the KV cache goes (another model, quitting): every cached conversation to the state cache."""
        if self.state_cache is None or engine.model is None or not hasattr(engine, "cached_keys"):
            return
        for key in engine.cached_keys():
            if isinstance(key, tuple) and len(key) == 2 and key[0] == "conversation":
                self._save_state(engine, key[1])

    def _restore_state(self, engine: LlamaCppEngine, request: ReplyRequest) -> None:
        """A conversation continued whose tokens are not cached: bring its saved KV cache back first."""
        key = request.cache_key
        if self.state_cache is None or request.conversation_id is None or not hasattr(engine, "cached_keys"):
            return
        if key in engine.cached_keys():
            return
        from app.core.kv_state import conversation_name

        restored = self.state_cache.restore(engine, key, conversation_name(request.conversation_id))
        if restored.tokens:
            log.info("conversation %s: %d cached tokens restored", request.conversation_id, restored.tokens)

    def _engine_for(self, config: LoadConfig) -> LlamaCppEngine:
        """The engine a load needs: this process's, or (a model split over RPC workers) one in a child
        process, since llama.cpp ends the whole process when a worker drops. Swapping frees the old one."""
        from app.core.isolated_engine import IsolatedEngine

        engine = self._ensure_engine()
        isolated = isinstance(engine, IsolatedEngine)
        if bool(config.rpc_workers) != isolated:
            self._save_all_states(engine)
            with contextlib.suppress(HearthError):
                engine.unload()
            self._model = None
            self._engine = IsolatedEngine() if config.rpc_workers else self._factory()  # type: ignore[assignment]
            self._local = None
            engine = self._ensure_engine()
        return engine

    def _load(self, job: Job) -> None:
        from app.core.load_policy import load_planned, plan_load

        path, config = job.payload
        engine = self._engine_for(config)
        self._save_all_states(engine)
        self._loading, self._loading_job = path, job
        self._broadcast()
        last = [-1.0]

        def progress(fraction: float) -> None:
            if job.cancelled.is_set():
                engine.cancel()  # aborts the load through llama.cpp's progress callback
            if fraction - last[0] >= 0.01 or fraction >= 1.0:
                last[0] = fraction
                job.publish(LoadProgress(job.id, fraction))

        try:
            hardware = self.hardware()
            plan = plan_load(path, config, hardware)
            if job.cancelled.is_set():
                raise _Cancelled
            outcome = load_planned(engine, plan, hardware, progress)
            self._model = outcome.model
            self._forget_conversations()
            placement = tuple(getattr(engine, "placement", ()) or ())
            job.publish(LoadDone(job.id, outcome.model, None, outcome.notes, plan.reason, placement))
        except _Cancelled:
            job.publish(LoadDone(job.id, engine.model, "loading cancelled"))
        except HearthError as exc:
            self._model = engine.model
            job.publish(LoadDone(job.id, engine.model, str(exc)))
        except Exception as exc:  # whatever llama.cpp throws: reported, the host goes on
            log.exception("loading %s failed", path)
            self._model = engine.model
            job.publish(LoadDone(job.id, engine.model, f"{Path(path).name} could not be loaded: {exc}"))
        finally:
            self._loading, self._loading_job = None, None
            self._broadcast()

    def _forget_conversations(self) -> None:
        if self._local is not None:
            from app.core.backends import LocalBackend

            self._local = LocalBackend(self._ensure_engine())  # a new model: remembered cuts no longer apply

    def _unload(self, job: Job) -> None:
        engine = self._engine
        if engine is not None:
            try:
                engine.unload()
            except HearthError as exc:
                log.warning("unload refused: %s", exc)
        self._model = engine.model if engine is not None else None
        job.publish(Unloaded(job.id))
        self._broadcast()

    def _call(self, job: Job) -> None:
        engine = self._ensure_engine()
        try:
            result = job.payload(engine)
        except HearthError as exc:
            job.publish(CallDone(job.id, None, str(exc)))
        except Exception as exc:
            log.exception("call on the engine thread failed")
            job.publish(CallDone(job.id, None, f"{type(exc).__name__}: {exc}"))
        else:
            job.publish(CallDone(job.id, result))

    # ---- local replies ------------------------------------------------------------------------------------------
    def _start_local(self, job: Job) -> None:
        engine = self._ensure_engine()
        assert self._local is not None
        if job.kind == "reply":
            request: ReplyRequest = job.payload
            recorder = ReplyRecorder(job.id, request, None, job.publish)
            try:
                if engine.model is not None:
                    self._restore_state(engine, request)
                prepared = self._local.prepare(request)
                recorder.store = self._ensure_store() if request.conversation_id is not None else None
                recorder.start(prepared)
                run = engine.begin(prepared.payload, key=prepared.key, cancel=job.cancelled)
            except HearthError as exc:
                recorder.finish(None, str(exc))
                return
            except Exception as exc:
                log.exception("reply could not start")
                recorder.finish(None, f"{type(exc).__name__}: {exc}")
                return
        else:
            prompt, key = job.payload
            recorder = ReplyRecorder(job.id, ReplyRequest((), prompt.sampling, key=key), None, job.publish)
            try:
                if engine.model is None:
                    raise HearthError("no model is loaded; load one first")
                run = engine.begin(prompt, key=key, cancel=job.cancelled)
            except HearthError as exc:
                recorder.finish(None, str(exc))
                return
            model = engine.model
            recorder.start(
                PreparedReply(prompt.text, "", "", "raw completion", None, 0, len(run.tokens), model.path.name)
            )
        self._active.append(_Active(job, run, recorder))
        self._broadcast()

    def _run_whole(self, job: Job) -> None:
        """A reply on an engine without steps (the RPC child): streamed here to its end, Stop forwarded."""
        assert self._local is not None and self._engine is not None
        engine = self._engine
        request: ReplyRequest = job.payload if job.kind == "reply" else ReplyRequest((), job.payload[0].sampling)
        recorder = ReplyRecorder(job.id, request, None, job.publish)
        try:
            if job.kind == "reply":
                prepared = self._local.prepare(request)
                recorder.store = self._ensure_store() if request.conversation_id is not None else None
            else:
                prompt, key = job.payload
                model = engine.model
                if model is None:
                    raise HearthError("no model is loaded; load one first")
                prepared = PreparedReply(prompt.text, "", "", "raw completion", None, 0, 0, model.path.name, prompt)
                prepared = replace(prepared, key=key)
            recorder.start(prepared)
            stats = None
            for event in engine.generate(prepared.payload, key=prepared.key):
                if job.cancelled.is_set():
                    engine.cancel()
                if isinstance(event, TextChunk):
                    recorder.chunk(event.text)
                elif isinstance(event, GenerationStats):
                    stats = event
            recorder.finish(stats, None, engine.context_used)
        except HearthError as exc:
            recorder.finish(None, str(exc))
        except Exception as exc:
            log.exception("reply failed")
            recorder.finish(None, f"{type(exc).__name__}: {exc}")
        finally:
            self._broadcast()

    def _step(self) -> None:
        engine = self._engine
        assert engine is not None
        try:
            engine.step([a.run for a in self._active])
        except Exception as exc:  # never leave a client waiting: every reply in flight ends with the error
            log.exception("engine step failed")
            for active in self._active:
                engine.release(active.run)
                active.run.take_events()
                active.recorder.finish(None, f"{type(exc).__name__}: {exc}")
            self._active = []
            self._broadcast()
            return
        finished = []
        for active in self._active:
            for event in active.run.take_events():
                if isinstance(event, TextChunk):
                    active.recorder.chunk(event.text)
                elif isinstance(event, GenerationStats):
                    used = len(active.run.slot.tokens)
                    active.recorder.finish(event, None, used)
            if active.run.done:
                finished.append(active)
        if finished:
            self._active = [a for a in self._active if a not in finished]
            self._broadcast()

    # ---- remote replies ------------------------------------------------------------------------------------------
    def _start_remote(self, job: Job) -> None:
        thread = threading.Thread(target=self._remote_reply, args=(job,), name=f"hearth-remote-{job.id}", daemon=True)
        self._remote_threads.add(thread)
        self._remote_jobs.add(job)
        thread.start()

    def _remote_reply(self, job: Job) -> None:
        request: ReplyRequest = job.payload
        store = None
        recorder = ReplyRecorder(job.id, request, None, job.publish)
        try:
            backend = self.backend(str(request.backend))
            if backend is None:
                recorder.finish(None, f"no server named {request.backend!r} is configured")
                return
            if request.conversation_id is not None and self.store_path is not None:
                from app.core.store import Store

                store = Store.open(self.store_path)  # this thread's own connection
                recorder.store = store
            prepared = backend.prepare(request)
            recorder.start(prepared)
            self._broadcast()
            stats = None
            for event in backend.stream(prepared, job.cancelled):
                if isinstance(event, TextChunk):
                    recorder.chunk(event.text)
                elif isinstance(event, GenerationStats):
                    stats = event
            recorder.finish(stats, None if stats is not None else "the server ended the reply without a result")
        except HearthError as exc:
            recorder.finish(None, str(exc))
        except Exception as exc:
            log.exception("remote reply failed")
            recorder.finish(None, f"{type(exc).__name__}: {exc}")
        finally:
            if store is not None:
                store.close()
            self._remote_threads.discard(threading.current_thread())
            self._remote_jobs.discard(job)
            self._broadcast()

    # ---- closing ----------------------------------------------------------------------------------------------
    def _close_on_thread(self) -> None:
        engine = self._engine
        if engine is not None:
            try:
                self._save_all_states(engine)
            except Exception:  # quitting must never fail over a cache
                log.exception("saving conversation states at exit failed")
            try:
                engine.unload()
            except HearthError as exc:
                log.warning("could not free the model at exit: %s", exc)
        self._model = None
        if self._store is not None:
            self._store.close()
            self._store = None


class _Cancelled(Exception):
    pass


def _detected_hardware() -> HardwareInfo:
    from app.core.hardware import current_hardware

    return current_hardware()


def _default_engine() -> LlamaCppEngine:
    from app.core.llama_engine import LlamaCppEngine  # imported on the host thread: llama_cpp is heavy

    return LlamaCppEngine()


def wait_for_text(job: Job, timeout: float | None = None) -> tuple[str, ReplyDone]:
    """Block on a reply or completion job; its whole text and its ReplyDone (for scripts and tests)."""
    parts: list[str] = []
    done: ReplyDone | None = None
    for event in job.events(timeout):
        if isinstance(event, ReplyChunk):
            parts.append(event.text)
        elif isinstance(event, ReplyDone):
            done = event
    assert done is not None
    return "".join(parts), done


__all__ = [
    "CallDone",
    "EngineHost",
    "HostClient",
    "HostState",
    "Job",
    "LoadDone",
    "LoadProgress",
    "ReplyChunk",
    "ReplyDone",
    "ReplyRequest",
    "ReplyStarted",
    "Unloaded",
    "wait_for_text",
]
