"""Every thread the GUI uses: the engine thread (load, generate, unload in order), a small pool for one-off
tasks (scans, Hub requests, imports), and the bridge that brings download events to the GUI thread.

Rules: signals emitted on a worker thread are connected only to plain, non-overridden methods of QObjects
living in the GUI thread (PySide6 delivered a signal connected to a lambda, or to a slot a subclass overrides, on
the worker thread even with Qt.QueuedConnection); those methods are the only code that touches widgets.
Stop never waits in a queue: it sets a threading.Event and the engine's cancel flag directly.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QCoreApplication, QObject, QRunnable, QThread, QThreadPool, QTimer, Signal

from app.core.errors import HearthError

if TYPE_CHECKING:
    from app.core.conversation import ChatRunner
    from app.core.downloads import DownloadEvent, DownloadManager, DownloadStatus
    from app.core.engine import Engine, GenerationStats, LoadedModel
    from app.core.load_config import LoadConfig
    from app.core.messages import ChatMessage
    from app.core.sampling import SamplingSettings

log = logging.getLogger("hearth.ui.workers")

CHUNK_INTERVAL_S = 0.016  # the engine thread batches tokens into one signal per ~frame
PROGRESS_STEP = 0.01  # load progress is reported in 1 % steps


def on_gui_thread() -> bool:
    app = QCoreApplication.instance()
    return app is not None and QThread.currentThread() is app.thread()


# ---- one-off background tasks ------------------------------------------------------------------------------
class _Relay(QObject):
    """Carries a task's outcome from the pool thread to the Task object (which lives in the GUI thread)."""

    done = Signal(object)
    failed = Signal(object)
    progress = Signal(object)


class _Runnable(QRunnable):
    def __init__(self, fn: Callable[..., Any], relay: _Relay, with_progress: bool) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self._fn, self._relay, self._with_progress = fn, relay, with_progress

    def run(self) -> None:  # on a pool thread: touches nothing but its relay
        try:
            result = self._fn(self._relay.progress.emit) if self._with_progress else self._fn()
        except BaseException as exc:  # delivered to the GUI thread; never lost in a pool thread
            if not isinstance(exc, (HearthError, OSError)):
                log.exception("background task failed")
            self._relay.failed.emit(exc)
        else:
            self._relay.done.emit(result)


class Task(QObject):
    """One background call. Its callbacks run on the GUI thread, after which the task deletes itself.

    Signals:
        finished(): after on_done or on_error ran.
    """

    finished = Signal()

    def __init__(
        self,
        fn: Callable[..., Any],
        on_done: Callable[[Any], None] | None,
        on_error: Callable[[BaseException], None] | None,
        on_progress: Callable[[Any], None] | None,
        parent: QObject,
    ) -> None:
        super().__init__(parent)
        self._runner = parent
        self._on_done_cb, self._on_error_cb, self._on_progress_cb = on_done, on_error, on_progress
        self._relay = _Relay()
        self._relay.done.connect(self._on_done)
        self._relay.failed.connect(self._on_failed)
        self._relay.progress.connect(self._on_progress)
        self.runnable = _Runnable(fn, self._relay, on_progress is not None)
        self.callback_threads: list[QThread] = []  # where callbacks ran (tests check: the GUI thread)

    def _dropped(self) -> bool:
        """After the runner closed (the app is shutting down) results are dropped: their widgets may be gone."""
        return bool(getattr(self._runner, "closed", False))

    def _on_done(self, result: object) -> None:
        self.callback_threads.append(QThread.currentThread())
        try:
            if self._on_done_cb is not None and not self._dropped():
                self._on_done_cb(result)
        finally:
            self._finish()

    def _on_failed(self, error: object) -> None:
        self.callback_threads.append(QThread.currentThread())
        try:
            if self._dropped():
                pass
            elif self._on_error_cb is not None:
                self._on_error_cb(error)  # type: ignore[arg-type]
            else:
                log.error("background task failed: %s", error)
        finally:
            self._finish()

    def _on_progress(self, value: object) -> None:
        if self._on_progress_cb is not None and not self._dropped():
            self._on_progress_cb(value)

    def _finish(self) -> None:
        self.finished.emit()
        self.deleteLater()


class TaskRunner(QObject):
    """Runs functions on a small thread pool of its own (so a long import never starves a Hub search)."""

    def __init__(self, parent: QObject | None = None, max_threads: int = 4) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self.pending: set[Task] = set()
        self.violations = 0  # callbacks seen off the GUI thread (must stay 0)
        self.closed = False

    def run(
        self,
        fn: Callable[..., Any],
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_progress: Callable[[Any], None] | None = None,
    ) -> Task:
        """Call fn() on a pool thread (fn(report) when on_progress is given); callbacks on the GUI thread.

        fn must not touch widgets or Qt models: it may only compute and return.
        """
        task = Task(fn, on_done, on_error, on_progress, self)
        self.pending.add(task)
        task.finished.connect(self._on_task_finished)
        self.pool.start(task.runnable)
        return task

    def _on_task_finished(self) -> None:
        task = self.sender()
        if isinstance(task, Task):
            if any(thread is not self.thread() for thread in task.callback_threads):
                self.violations += 1
            self.pending.discard(task)

    def wait(self, timeout_ms: int = 30_000) -> bool:
        return self.pool.waitForDone(timeout_ms)

    def close(self, timeout_ms: int = 10_000) -> bool:
        """Wait for running tasks, and drop every callback from now on (the app is shutting down)."""
        self.closed = True
        return self.wait(timeout_ms)


# ---- the engine thread ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplyJob:
    """A reply to generate: the conversation (rendered by the engine thread) and where to save it."""

    job_id: int
    conversation_id: int
    parent_id: int  # the user message being answered
    messages: tuple[ChatMessage, ...]
    sampling: SamplingSettings
    template_override: str | None
    store_path: Path
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)


@dataclass(frozen=True)
class ReplyStarted:
    job_id: int
    conversation_id: int
    message_id: int
    template: str
    template_label: str
    template_reason: str
    template_warning: str | None
    dropped: int
    prompt_tokens: int


@dataclass(frozen=True)
class ReplyDone:
    job_id: int
    conversation_id: int
    message_id: int | None  # None when the reply never started (no model, prompt too long ...)
    stats: GenerationStats | None
    error: str | None
    context_used: int = 0


AUTO_LAYERS = -2  # the settings' "auto": as many GPU layers as fit


def build_load_config(path: Path, options: dict[str, Any]) -> LoadConfig:
    """Settings-style load options (n_ctx, n_gpu_layers with -2 = auto, n_threads, flash_attention
    'auto'/'on'/'off', kv_cache_type) -> a LoadConfig. Runs on the engine thread (imports are heavy)."""
    from app.core.load_config import CTX_GRANULARITY, LoadConfig

    n_ctx = int(options.get("n_ctx", 4096))
    if n_ctx % CTX_GRANULARITY:
        n_ctx = max(CTX_GRANULARITY, round(n_ctx / CTX_GRANULARITY) * CTX_GRANULARITY)
    kv_type = str(options.get("kv_cache_type", "f16"))
    layers = int(options.get("n_gpu_layers", AUTO_LAYERS))
    if layers == AUTO_LAYERS:
        layers = auto_gpu_layers(path, n_ctx, kv_type)
    flash = {"auto": None, "on": True, "off": False}.get(str(options.get("flash_attention", "auto")))
    return LoadConfig(
        n_gpu_layers=layers,
        n_ctx=n_ctx,
        n_threads=int(options.get("n_threads", 0)),
        flash_attention=flash,
        kv_cache_type=kv_type,
    )


def auto_gpu_layers(path: Path, n_ctx: int, kv_type: str) -> int:
    """How many layers to offload when the user left it on Auto."""
    import llama_cpp

    return -1 if llama_cpp.llama_supports_gpu_offload() else 0


def _default_engine() -> Engine:
    from app.core.llama_engine import LlamaCppEngine  # imported on the engine thread: llama_cpp is heavy

    return LlamaCppEngine()


class EngineWorker(QObject):
    """Owns the engine; lives on the engine thread, where every method below runs.

    Signals:
        load_progress(float), loaded(object LoadedModel), load_failed(str), unloaded(),
        reply_started(object ReplyStarted), reply_chunk(int job_id, str text), reply_done(object ReplyDone).
    """

    load_progress = Signal(float)
    loaded = Signal(object)
    load_failed = Signal(str)
    unloaded = Signal()
    reply_started = Signal(object)
    reply_chunk = Signal(int, str)
    reply_done = Signal(object)

    def __init__(self, engine_factory: Callable[[], Engine]) -> None:
        super().__init__()
        self._factory = engine_factory
        self.engine: Engine | None = None  # read by EngineClient.stop() from the GUI thread (cancel only)
        self._runner: ChatRunner | None = None
        self._last_progress = -1.0

    def _ensure_engine(self) -> Engine:
        if self.engine is None:
            self.engine = self._factory()
        return self.engine

    def load(self, path: str, options: dict[str, Any]) -> None:
        try:
            engine = self._ensure_engine()
            self._last_progress = -1.0
            config = build_load_config(Path(path), options)
            loaded = engine.load(Path(path), config, progress=self._report_progress)
        except HearthError as exc:
            self.load_failed.emit(str(exc))
            return
        except Exception as exc:  # a crash-free report of anything llama.cpp throws
            log.exception("loading %s failed", path)
            self.load_failed.emit(f"{Path(path).name} could not be loaded: {exc}")
            return
        self.loaded.emit(loaded)

    def _report_progress(self, fraction: float) -> None:
        if fraction - self._last_progress >= PROGRESS_STEP or fraction >= 1.0:
            self._last_progress = fraction
            self.load_progress.emit(fraction)

    def unload(self) -> None:
        if self.engine is not None:
            try:
                self.engine.unload()
            except HearthError as exc:
                log.warning("unload refused: %s", exc)
        self.unloaded.emit()

    def generate(self, job: ReplyJob) -> None:
        from app.core.conversation import ChatRunner
        from app.core.engine import TextChunk
        from app.core.store import ReplyStats, Store

        engine = self._ensure_engine()
        if self._runner is None or self._runner.engine is not engine:
            self._runner = ChatRunner(engine)
        if job.cancel.is_set():
            self.reply_done.emit(ReplyDone(job.job_id, job.conversation_id, None, None, None))
            return
        try:
            prepared = self._runner.prepare(
                job.messages, job.sampling, override=job.template_override, conversation=job.conversation_id
            )
            store = Store.open(job.store_path)
        except HearthError as exc:
            self.reply_done.emit(ReplyDone(job.job_id, job.conversation_id, None, None, str(exc)))
            return
        message_id: int | None = None
        try:
            model = engine.model
            assert model is not None
            choice = prepared.rendered.choice
            writer = store.start_reply(
                job.conversation_id,
                parent_id=job.parent_id,
                model=model.path.name,
                template=choice.name,
                prompt_text=prepared.rendered.text,
            )
            message_id = writer.message_id
            self.reply_started.emit(
                ReplyStarted(
                    job.job_id,
                    job.conversation_id,
                    message_id,
                    choice.name,
                    choice.label,
                    choice.reason,
                    choice.warning,
                    prepared.dropped,
                    prepared.prompt_tokens,
                )
            )
            stats: GenerationStats | None = None
            buffer: list[str] = []
            last_emit = time.monotonic()
            for event in self._runner.stream(
                job.messages, job.sampling, override=job.template_override, prepared=prepared
            ):
                if job.cancel.is_set():
                    engine.cancel()  # again: the engine clears its flag when a generation starts
                if isinstance(event, TextChunk):
                    writer.append(event.text)
                    buffer.append(event.text)
                    now = time.monotonic()
                    if now - last_emit >= CHUNK_INTERVAL_S:
                        self.reply_chunk.emit(job.job_id, "".join(buffer))
                        buffer, last_emit = [], now
                else:
                    stats = event
            if buffer:
                self.reply_chunk.emit(job.job_id, "".join(buffer))
            assert stats is not None
            writer.finish(
                ReplyStats(
                    stats.finish_reason, stats.prompt_tokens, stats.generated_tokens, stats.gen_tps, stats.ttft_ms
                )
            )
            used = int(getattr(engine, "context_used", 0))
            self.reply_done.emit(ReplyDone(job.job_id, job.conversation_id, message_id, stats, stats.error, used))
        except Exception as exc:
            log.exception("reply failed")
            error = str(exc) if isinstance(exc, HearthError) else f"{type(exc).__name__}: {exc}"
            self.reply_done.emit(ReplyDone(job.job_id, job.conversation_id, message_id, None, error))
        finally:
            store.close()


class EngineClient(QObject):
    """The GUI's handle on the engine thread: requests go out as queued signals, answers come back to
    plain methods here (GUI thread), which keep the state and re-emit.

    Signals:
        load_progress(float), loaded(object LoadedModel), load_failed(str), unloaded(),
        reply_started(object ReplyStarted), reply_chunk(int, str), reply_done(object ReplyDone),
        state_changed(): loading / generating / model changed.
    """

    load_progress = Signal(float)
    loaded = Signal(object)
    load_failed = Signal(str)
    unloaded = Signal()
    reply_started = Signal(object)
    reply_chunk = Signal(int, str)
    reply_done = Signal(object)
    state_changed = Signal()

    _load_requested = Signal(str, object)
    _unload_requested = Signal()
    _generate_requested = Signal(object)

    def __init__(self, engine_factory: Callable[[], Engine] = _default_engine, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.model: LoadedModel | None = None
        self.loading_path: str | None = None
        self.job: ReplyJob | None = None
        self.violations = 0  # answers handled off the GUI thread (must stay 0; tests check)
        self._ids = itertools.count(1)
        self._thread = QThread()
        self._thread.setObjectName("hearth-engine")
        self.worker = EngineWorker(engine_factory)
        self.worker.moveToThread(self._thread)
        self._load_requested.connect(self.worker.load)
        self._unload_requested.connect(self.worker.unload)
        self._generate_requested.connect(self.worker.generate)
        self.worker.load_progress.connect(self._on_load_progress)
        self.worker.loaded.connect(self._on_loaded)
        self.worker.load_failed.connect(self._on_load_failed)
        self.worker.unloaded.connect(self._on_unloaded)
        self.worker.reply_started.connect(self._on_reply_started)
        self.worker.reply_chunk.connect(self._on_reply_chunk)
        self.worker.reply_done.connect(self._on_reply_done)
        self._thread.start()
        self._closed = False

    # ---- state ------------------------------------------------------------------------------------------
    @property
    def loading(self) -> bool:
        return self.loading_path is not None

    @property
    def generating(self) -> bool:
        return self.job is not None

    @property
    def engine_thread(self) -> QThread:
        return self._thread

    # ---- requests (GUI thread) -------------------------------------------------------------------------------
    def load(self, path: str | Path, options: dict[str, Any]) -> None:
        """Load a model with settings-style options (see build_load_config)."""
        if self.generating:
            self.stop()
        self.loading_path = str(path)
        self.state_changed.emit()
        self._load_requested.emit(str(path), dict(options))

    def eject(self) -> None:
        if self.loading:
            self.stop()  # aborts the load through the engine's progress callback
        if self.generating:
            self.stop()
        self._unload_requested.emit()

    def next_job_id(self) -> int:
        return next(self._ids)

    def generate(self, job: ReplyJob) -> None:
        self.job = job
        self.state_changed.emit()
        self._generate_requested.emit(job)

    def stop(self) -> None:
        """Stop the reply (or load) now: a flag and the engine's cancel, never a queued call."""
        if self.job is not None:
            self.job.cancel.set()
        engine = self.worker.engine
        if engine is not None:
            engine.cancel()

    def shutdown(self, timeout_ms: int = 30_000) -> None:
        """Cancel, quit, wait; only then free the model (using a llama.cpp context after it was freed segfaults)."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        self._thread.quit()
        if not self._thread.wait(timeout_ms):
            log.error("the engine thread did not stop within %d ms", timeout_ms)
            return
        engine = self.worker.engine
        if engine is not None:
            try:
                engine.unload()
            except HearthError as exc:
                log.warning("could not free the model at exit: %s", exc)

    # ---- answers (GUI thread) ---------------------------------------------------------------------------------
    def _check_thread(self) -> None:
        if not on_gui_thread():
            self.violations += 1
            log.error("engine answer handled off the GUI thread")

    def _on_load_progress(self, fraction: float) -> None:
        self._check_thread()
        self.load_progress.emit(fraction)

    def _on_loaded(self, model: LoadedModel) -> None:
        self._check_thread()
        self.model, self.loading_path = model, None
        self.loaded.emit(model)
        self.state_changed.emit()

    def _on_load_failed(self, message: str) -> None:
        self._check_thread()
        self.loading_path = None
        self.model = self.worker.engine.model if self.worker.engine is not None else None
        self.load_failed.emit(message)
        self.state_changed.emit()

    def _on_unloaded(self) -> None:
        self._check_thread()
        self.model = None
        self.unloaded.emit()
        self.state_changed.emit()

    def _on_reply_started(self, started: ReplyStarted) -> None:
        self._check_thread()
        self.reply_started.emit(started)

    def _on_reply_chunk(self, job_id: int, text: str) -> None:
        self._check_thread()
        self.reply_chunk.emit(job_id, text)

    def _on_reply_done(self, done: ReplyDone) -> None:
        self._check_thread()
        if self.job is not None and self.job.job_id == done.job_id:
            self.job = None
        self.reply_done.emit(done)
        self.state_changed.emit()


# ---- downloads -------------------------------------------------------------------------------------------
class DownloadBridge(QObject):
    """Brings DownloadManager events (raised on its download thread) to the GUI thread, at most 10 per second.

    Signals:
        changed(object): the list of DownloadStatus, after any change.
        finished(object): a DownloadStatus that just completed (the library should rescan).
    """

    changed = Signal(object)
    finished = Signal(object)
    _event = Signal(object)

    def __init__(self, manager: DownloadManager, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.manager = manager
        self.violations = 0
        self._closed = False
        self._event.connect(self._on_event)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._publish)
        self._unsubscribe = manager.subscribe(self._observe)

    def _observe(self, event: DownloadEvent) -> None:  # on the download thread: only emits
        self._event.emit(event)

    def _on_event(self, event: DownloadEvent) -> None:
        if not on_gui_thread():
            self.violations += 1
        if self._closed:  # queued before close(): the window it would update may be gone
            return
        if event.status.state == "done" and event.kind != "progress":
            self.finished.emit(event.status)
        if not self._timer.isActive():
            self._timer.start()

    def _publish(self) -> None:
        if not self._closed:
            self.changed.emit(self.manager.statuses())

    def statuses(self) -> list[DownloadStatus]:
        return self.manager.statuses()

    def close(self) -> None:
        self._closed = True
        self._timer.stop()
        self._unsubscribe()
        self.manager.close()
