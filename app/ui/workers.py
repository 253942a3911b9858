"""Every thread the GUI uses: the engine host's (through EngineBridge), a small pool for one-off tasks
(scans, Hub requests, imports), and the bridge that brings download events to the GUI thread.

Rules: signals emitted on a worker thread are connected only to plain, non-overridden methods of QObjects
living in the GUI thread (PySide6 delivered a signal connected to a lambda, or to a slot a subclass overrides, on
the worker thread even with Qt.QueuedConnection); those methods are the only code that touches widgets.
Stop never waits in a queue: it sets a threading.Event and the engine's cancel flag directly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QCoreApplication, QObject, QRunnable, QThread, QThreadPool, QTimer, Signal

from app.core.errors import HearthError
from app.core.host import LoadDone, LoadProgress, Unloaded
from app.core.reply import ReplyChunk, ReplyDone, ReplyStarted

if TYPE_CHECKING:
    from app.core.downloads import DownloadEvent, DownloadManager, DownloadStatus
    from app.core.engine import LoadedModel
    from app.core.host import EngineHost, HostState, Job
    from app.core.load_config import LoadConfig
    from app.core.reply import ReplyRequest

log = logging.getLogger("hearth.ui.workers")

CHUNK_INTERVAL_S = 0.016  # reply text reaches the GUI in one signal per ~frame
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


# ---- the engine host ------------------------------------------------------------------------------------------
class _HostEvents(QObject):
    """Carries host events (raised on the host's threads) to the bridge in the GUI thread."""

    event = Signal(object)
    state = Signal(object)


class EngineBridge(QObject):
    """The window's client of the engine host (app/core/host.py): requests go to the host from the GUI
    thread; its events come back to plain methods here, on the GUI thread, which keep the state and re-emit.

    Reply text is batched on the host's side into one signal per ~frame (a fast model streams thousands of
    tokens a second; one queued signal each would flood the event loop).

    Signals:
        load_progress(float), loaded(object LoadedModel), load_failed(str), unloaded(),
        reply_started(object ReplyStarted), reply_chunk(int job_id, str text), reply_done(object ReplyDone),
        state_changed(): loading / generating / model changed (also by another client, e.g. the local server).
    """

    load_progress = Signal(float)
    loaded = Signal(object)
    load_failed = Signal(str)
    unloaded = Signal()
    reply_started = Signal(object)
    reply_chunk = Signal(int, str)
    reply_done = Signal(object)
    state_changed = Signal()

    def __init__(self, host: EngineHost, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.model: LoadedModel | None = None
        self.loading_path: str | None = None
        self.notes: tuple[str, ...] = ()  # what the last load wants the user to know
        self.violations = 0  # answers handled off the GUI thread (must stay 0; tests check)
        self._load_job: Job | None = None
        self._jobs: dict[int, Job] = {}  # this window's replies in progress
        self._buffers: dict[int, list[str]] = {}  # reply text not yet sent to the GUI, per job (host side)
        self._last_emit: dict[int, float] = {}
        self._buffer_lock = threading.Lock()
        self._events = _HostEvents()
        self._events.event.connect(self._on_event)
        self._events.state.connect(self._on_state)
        self.client = host.client("window", on_event=self._relay)
        self._unsubscribe = host.subscribe(self._events.state.emit)
        self._closed = False

    # ---- state ------------------------------------------------------------------------------------------
    @property
    def loading(self) -> bool:
        return self.loading_path is not None

    @property
    def generating(self) -> bool:
        return bool(self._jobs)

    # ---- requests (GUI thread) -------------------------------------------------------------------------------
    def load(self, path: str | Path, config: LoadConfig) -> None:
        """Load a model (after the window's reply in progress, if any, is stopped)."""
        self.stop()
        self.loading_path = str(path)
        self.state_changed.emit()
        self._load_job = self.client.load(path, config)

    def eject(self) -> None:
        self.stop()
        self.client.unload()

    def reply(self, request: ReplyRequest) -> int:
        """Start a reply; returns its job id (the id in its reply_* signals)."""
        job = self.client.reply(request)
        self._jobs[job.id] = job
        self.state_changed.emit()
        return job.id

    def save_conversation(self, conversation_id: int) -> None:
        """Save a conversation's KV cache to the state cache (it is being left); runs when the engine is idle."""
        self.client.save_conversation(conversation_id)

    def stop(self) -> None:
        """Stop the window's replies and any load it started, now (never a queued call)."""
        for job in list(self._jobs.values()):
            job.cancel()
        if self._load_job is not None:
            self._load_job.cancel()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop, then stop the host (which frees the model after its thread ended)."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        self._unsubscribe()
        if not self.host.shutdown(timeout_s):
            log.error("the engine host did not stop within %.0f s", timeout_s)

    # ---- from the host (its threads) ----------------------------------------------------------------------
    def _relay(self, event: object) -> None:
        """On a host thread: pass the event on, batching reply text per job into ~frame-sized pieces."""
        if isinstance(event, ReplyChunk):
            with self._buffer_lock:
                parts = self._buffers.setdefault(event.job_id, [])
                parts.append(event.text)
                now = time.monotonic()
                if now - self._last_emit.get(event.job_id, 0.0) < CHUNK_INTERVAL_S:
                    return
                self._last_emit[event.job_id] = now
                event = ReplyChunk(event.job_id, "".join(parts))
                parts.clear()
        elif isinstance(event, ReplyDone):
            with self._buffer_lock:
                parts = self._buffers.pop(event.job_id, [])
                self._last_emit.pop(event.job_id, None)
            if parts:
                self._events.event.emit(ReplyChunk(event.job_id, "".join(parts)))
        self._events.event.emit(event)

    # ---- answers (GUI thread) ---------------------------------------------------------------------------------
    def _check_thread(self) -> None:
        if not on_gui_thread():
            self.violations += 1
            log.error("engine answer handled off the GUI thread")

    def _on_event(self, event: object) -> None:
        self._check_thread()
        if self._closed:
            return
        if isinstance(event, ReplyChunk):
            self.reply_chunk.emit(event.job_id, event.text)
        elif isinstance(event, ReplyStarted):
            self.reply_started.emit(event)
        elif isinstance(event, ReplyDone):
            self._jobs.pop(event.job_id, None)
            self.reply_done.emit(event)
            self.state_changed.emit()
        elif isinstance(event, LoadProgress):
            self.load_progress.emit(event.fraction)
        elif isinstance(event, LoadDone):
            self._on_load_done(event)
        elif isinstance(event, Unloaded):
            self.model = None
            self.unloaded.emit()
            self.state_changed.emit()

    def _on_load_done(self, done: LoadDone) -> None:
        if self._load_job is not None and self._load_job.id == done.job_id:
            self._load_job = None
        self.loading_path = None
        self.model = done.model
        self.notes = done.notes
        if done.error is None and done.model is not None:
            self.loaded.emit(done.model)
        else:
            self.load_failed.emit(done.error or "the model could not be loaded")
        self.state_changed.emit()

    def _on_state(self, state: HostState) -> None:
        """The host changed (possibly for another client): follow its model."""
        self._check_thread()
        if self._closed or self._load_job is not None:
            return
        if state.model is not self.model:
            self.model = state.model
            if state.model is not None:
                self.loaded.emit(state.model)
            else:
                self.unloaded.emit()
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
