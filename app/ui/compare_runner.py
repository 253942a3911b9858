"""Runs a side-by-side comparison through the engine host: each model loaded in turn (a load job, then a
reply job), its answer streamed into its column, then the window's own model loaded back.

One model is in memory at a time, whatever the machine: the host holds one model, and comparing three 7B
models on a laptop must not need three times the memory. Answers are not saved; "Use this answer" saves
the chosen one (app.ui.compare_page, through the app).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from app.core.host import LoadDone, Unloaded
from app.core.reply import ReplyChunk, ReplyDone, ReplyRequest, ReplyStarted

if TYPE_CHECKING:
    from app.core.engine import GenerationStats, LoadedModel
    from app.core.host import EngineHost, HostClient, Job
    from app.core.load_config import LoadConfig
    from app.core.messages import ChatMessage

log = logging.getLogger("hearth.ui.compare")
CHUNK_INTERVAL_S = 0.03  # streamed text reaches the GUI in one signal per ~frame (a tiny model writes
# thousands of tokens a second: one queued signal each would flood the event loop)


@dataclass
class CompareResult:
    """One column: the model, its answer as it streams, and how it went."""

    path: str
    config: LoadConfig
    text: str = ""
    state: str = "waiting"  # waiting | loading | generating | done | failed | stopped
    stats: GenerationStats | None = None
    error: str = ""
    loaded: LoadedModel | None = None
    template: str = ""
    prompt_text: str = ""

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass
class CompareRun:
    """What is compared: the models (in order), the messages they all answer, the ReplyRequest arguments."""

    results: list[CompareResult]
    messages: tuple[ChatMessage, ...]
    args: dict[str, Any] = field(default_factory=dict)


class _Events(QObject):
    event = Signal(object)


class CompareRunner(QObject):
    """Signals:
    changed(int): column i changed (state, text or stats).
    running_changed(bool): a comparison started / ended (the window's model is back).
    """

    changed = Signal(int)
    running_changed = Signal(bool)

    def __init__(self, host: EngineHost, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self._events = _Events()
        self._events.event.connect(self._on_event)  # a plain method: runs on the GUI thread
        self._buffer: list[str] = []  # reply text not yet sent to the GUI (host side)
        self._buffer_job = -1
        self._last_emit = 0.0
        self._lock = threading.Lock()
        self.client: HostClient = host.client("compare", on_event=self._relay)
        self.run: CompareRun | None = None
        self._index = -1
        self._job: Job | None = None
        self._restore: tuple[Path, LoadConfig] | None = None
        self._restoring = False
        self._stopped = False
        self._busy = False  # from start() until the window's model is back

    @property
    def running(self) -> bool:
        return self._busy

    def start(self, run: CompareRun) -> None:
        """Answer with each model in turn; the model loaded now is loaded back afterwards (none: unloaded)."""
        if self.running:
            return
        model = self.host.model
        self._restore = (model.path, model.config) if model is not None else None
        self.run = run
        self._stopped = False
        self._restoring = False
        self._index = -1
        self._busy = True
        self.running_changed.emit(True)
        self._next()

    def stop(self) -> None:
        """Stop the comparison: the current load or answer stops, the rest is skipped, the model goes back."""
        if not self.running or self._restoring:
            return
        self._stopped = True
        if self._job is not None:
            self._job.cancel()

    def _relay(self, event: object) -> None:
        """On a host thread: pass the event on, reply text gathered into ~frame-sized pieces."""
        with self._lock:
            if isinstance(event, ReplyChunk):
                if event.job_id != self._buffer_job:
                    self._buffer, self._buffer_job = [], event.job_id
                self._buffer.append(event.text)
                now = time.monotonic()
                if now - self._last_emit < CHUNK_INTERVAL_S:
                    return
                self._last_emit = now
                event = ReplyChunk(event.job_id, "".join(self._buffer))
                self._buffer = []
            elif isinstance(event, ReplyDone) and self._buffer and event.job_id == self._buffer_job:
                self._events.event.emit(ReplyChunk(event.job_id, "".join(self._buffer)))
                self._buffer = []
        self._events.event.emit(event)

    # ---- the sequence (GUI thread) --------------------------------------------------------------------------
    def _next(self) -> None:
        assert self.run is not None
        self._index += 1
        if self._index >= len(self.run.results) or self._stopped:
            for index, result in enumerate(self.run.results):
                if result.state in ("waiting", "loading", "generating"):
                    result.state = "stopped"
                    self.changed.emit(index)
            self._finish()
            return
        result = self.run.results[self._index]
        result.state = "loading"
        self.changed.emit(self._index)
        self._job = self.client.load(result.path, result.config)

    def _finish(self) -> None:
        self._index = -1
        self._restoring = True
        if self._restore is not None:
            self._job = self.client.load(*self._restore)
        else:
            self._job = self.client.unload()

    def _current(self) -> CompareResult | None:
        if self.run is None or not 0 <= self._index < len(self.run.results):
            return None
        return self.run.results[self._index]

    def _on_event(self, event: object) -> None:
        job = self._job
        if job is None:
            return
        if self._restoring:
            if isinstance(event, (LoadDone, Unloaded)) and event.job_id == job.id:
                if isinstance(event, LoadDone) and event.error:
                    log.warning("could not load the model back after comparing: %s", event.error)
                self._job = None
                self._restoring = False
                self._busy = False
                self.running_changed.emit(False)
            return
        result = self._current()
        if result is None:
            return
        index = self._index
        if isinstance(event, LoadDone) and event.job_id == job.id:
            if event.error or event.model is None:
                result.state, result.error = ("stopped", "") if self._stopped else ("failed", event.error or "")
                self.changed.emit(index)
                self._next()
                return
            result.loaded = event.model
            result.state = "generating"
            self.changed.emit(index)
            assert self.run is not None
            request = ReplyRequest(self.run.messages, key=("compare", index), **self.run.args)
            self._job = self.client.reply(request)
        elif isinstance(event, ReplyStarted) and event.job_id == job.id:
            result.template, result.prompt_text = event.template, event.prompt_text
        elif isinstance(event, ReplyChunk) and event.job_id == job.id:
            result.text += event.text
            self.changed.emit(index)
        elif isinstance(event, ReplyDone) and event.job_id == job.id:
            result.stats = event.stats
            result.error = event.error or ""
            finished = event.stats is not None and event.stats.finish_reason in ("stop", "length")
            stopped = not finished and (
                self._stopped or (event.stats is not None and event.stats.finish_reason == "cancelled")
            )
            result.state = "stopped" if stopped else "failed" if result.error else "done"
            if stopped:
                result.error = ""
            self.changed.emit(index)
            self._next()
