"""The model library for the GUI: scans, imports and deletes run on the task pool; results come back here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer, Signal

from app.core.errors import HearthError
from app.ui.workers import TaskRunner

if TYPE_CHECKING:
    from app.core.hardware import HardwareInfo
    from app.core.library import Library, LibraryEntry
    from app.core.load_policy import FitSummary
    from app.core.paths import AppPaths
    from app.core.settings import Settings

log = logging.getLogger("hearth.ui.library")
WATCH_INTERVAL_MS = 2000  # how often the model folders are looked at for files added or removed outside Hearth


@dataclass(frozen=True)
class LibrarySnapshot:
    """One scan: the entries, their fit on this machine per path, and per path None (deletable) or why not."""

    entries: list[LibraryEntry]
    fits: dict[str, FitSummary] = field(default_factory=dict)
    deletable: dict[str, str | None] = field(default_factory=dict)
    folder: str = ""

    @property
    def usable(self) -> list[LibraryEntry]:
        return [e for e in self.entries if e.ok and not (e.info is not None and e.info.is_adapter)]

    def find(self, path: str) -> LibraryEntry | None:
        return next((e for e in self.entries if str(e.path) == path), None)

    def signature(self) -> tuple:
        """What a change would show: files, sizes, times, and each fit."""
        return tuple((str(e.path), e.size_bytes, e.mtime_ns, e.ok) for e in self.entries) + tuple(
            sorted((path, fit.label) for path, fit in self.fits.items())
        )


class LibraryController(QObject):
    """The library for the window. It follows the model folders: a GGUF copied in or deleted from outside
    (or imported with `hearth models import` while the app runs) shows up or goes within seconds.

    Signals:
        scanned(object LibrarySnapshot): after a scan that found a change (or was asked for),
        import_progress(str name, object fraction or None), imported(str path), failed(str).
    """

    scanned = Signal(object)
    import_progress = Signal(str, object)
    imported = Signal(str)
    failed = Signal(str)

    def __init__(
        self,
        paths: AppPaths,
        settings: Settings,
        tasks: TaskRunner,
        hardware: Callable[[], HardwareInfo] | None = None,
        watch_interval_ms: int = WATCH_INTERVAL_MS,
    ) -> None:
        super().__init__()
        self.paths = paths
        self.settings = settings
        self.tasks = tasks
        self.hardware = hardware
        self.snapshot: LibrarySnapshot | None = None
        self._library: Library | None = None
        self._scanning = False
        self._rescan = False
        self._announce = False  # the next scan result is emitted even when nothing changed
        self._imports: list[str] = []
        self._watch = QTimer(self)
        self._watch.setInterval(watch_interval_ms)
        self._watch.timeout.connect(self._on_watch)

    def _get_library(self) -> Library:
        """The Library, created on first use on a pool thread (its import pulls in numpy)."""
        if self._library is None:
            from app.core.library import Library

            self._library = Library(self.paths, self.settings)
        return self._library

    # ---- scan -------------------------------------------------------------------------------------------------
    def scan(self) -> None:
        """Scan now and report the result (also when nothing changed); keeps watching afterwards."""
        self._announce = True
        self._start_scan()

    def _on_watch(self) -> None:
        if not self._scanning and not self._imports:
            self._start_scan()

    def _start_scan(self) -> None:
        if self._scanning:
            self._rescan = True
            return
        self._scanning = True
        self.tasks.run(self._scan_job, self._on_scanned, self._on_scan_failed)

    def _scan_job(self) -> LibrarySnapshot:  # pool thread
        from app.core.load_policy import configured_load, fit_summary

        library = self._get_library()
        entries = library.scan()
        hardware = self.hardware() if self.hardware is not None else _detected()
        fits = {}
        for entry in entries:
            if entry.ok and entry.info is not None and not entry.info.is_adapter:
                try:
                    config = configured_load(self.settings, entry.path.name)
                    fits[str(entry.path)] = fit_summary(entry.info, hardware, config)
                except Exception:  # a fit estimate must never hide a model
                    log.exception("fit estimate failed for %s", entry.path.name)
        deletable = {str(e.path): library.can_delete(e) for e in entries}
        return LibrarySnapshot(entries, fits, deletable, str(self.paths.models_dir))

    def _on_scanned(self, snapshot: LibrarySnapshot) -> None:
        self._scanning = False
        changed = self.snapshot is None or snapshot.signature() != self.snapshot.signature()
        self.snapshot = snapshot
        if changed or self._announce:
            self._announce = False
            self.scanned.emit(snapshot)
        if not self._watch.isActive() and self._watch.interval() > 0:
            self._watch.start()
        if self._rescan:
            self._rescan = False
            self._start_scan()

    def _on_scan_failed(self, error: BaseException) -> None:
        self._scanning = False
        self.failed.emit(f"Scanning the model folders failed: {error}")

    def stop_watching(self) -> None:
        self._watch.stop()

    # ---- import ------------------------------------------------------------------------------------------------
    def import_files(self, paths: list[str]) -> None:
        """Copy GGUF files into the library, one after another."""
        start = not self._imports
        self._imports.extend(paths)
        if start:
            self._next_import()

    def _next_import(self) -> None:
        if not self._imports:
            return
        source = self._imports[0]
        name = Path(source).name
        self.import_progress.emit(name, 0.0)

        def job(report: Callable[[Any], None]) -> str:  # pool thread
            from app.core.library import ImportMode

            def progress(done: int, total: int) -> None:
                report((name, done / total if total else 1.0))

            entry = self._get_library().import_model(source, ImportMode.COPY, progress)
            return str(entry.path)

        self.tasks.run(job, self._on_imported, self._on_import_failed, self._on_import_progress)

    def _on_import_progress(self, value: tuple[str, float]) -> None:
        self.import_progress.emit(value[0], value[1])

    def _on_imported(self, path: str) -> None:
        self._imports.pop(0)
        self.import_progress.emit(Path(path).name, None)
        self.imported.emit(path)
        self.scan()
        self._next_import()

    def _on_import_failed(self, error: BaseException) -> None:
        source = self._imports.pop(0)
        self.import_progress.emit(Path(source).name, None)
        reason = str(error) if isinstance(error, (HearthError, OSError)) else f"{type(error).__name__}: {error}"
        self.failed.emit(f"Could not import {Path(source).name}: {reason}")
        self._next_import()

    # ---- delete ------------------------------------------------------------------------------------------------
    def delete(self, path: str) -> None:
        entry = self.snapshot.find(path) if self.snapshot else None
        if entry is None:
            return
        self.tasks.run(lambda: self._get_library().delete(entry), self._on_deleted, self._on_delete_failed)

    def _on_deleted(self, _result: object) -> None:
        self.scan()

    def _on_delete_failed(self, error: BaseException) -> None:
        self.failed.emit(f"Could not delete the model: {error}")


def _detected() -> HardwareInfo:
    from app.core.hardware import current_hardware

    return current_hardware()
