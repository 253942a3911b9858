"""The model library for the GUI: scans, imports and deletes run on the task pool; results come back here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from app.core.errors import HearthError
from app.ui.workers import TaskRunner

if TYPE_CHECKING:
    from app.core.library import Library, LibraryEntry
    from app.core.paths import AppPaths
    from app.core.settings import Settings

FitRule = Callable[["LibraryEntry"], str]


@dataclass(frozen=True)
class LibrarySnapshot:
    """One scan: the entries, a fit label per path, and per path None (deletable) or why not."""

    entries: list[LibraryEntry]
    fits: dict[str, str] = field(default_factory=dict)
    deletable: dict[str, str | None] = field(default_factory=dict)
    folder: str = ""

    @property
    def usable(self) -> list[LibraryEntry]:
        return [e for e in self.entries if e.ok and not (e.info is not None and e.info.is_adapter)]

    def find(self, path: str) -> LibraryEntry | None:
        return next((e for e in self.entries if str(e.path) == path), None)


def size_fit(entry: LibraryEntry) -> str:
    """Fit from the file size and this machine's memory (the Hub's rule until the hardware module's
    estimate, which knows the GPU and the context, is wired in)."""
    from app.core.hub_files import quant_fit

    return {"fits": "Fits", "tight": "Tight", "too_big": "Too big"}.get(str(quant_fit(entry.size_bytes)), "")


class LibraryController(QObject):
    """Signals:
    scanned(object LibrarySnapshot), import_progress(str name, object fraction or None),
    imported(str path), failed(str).
    """

    scanned = Signal(object)
    import_progress = Signal(str, object)
    imported = Signal(str)
    failed = Signal(str)

    def __init__(self, paths: AppPaths, settings: Settings, tasks: TaskRunner, fit: FitRule = size_fit) -> None:
        super().__init__()
        self.paths = paths
        self.settings = settings
        self.tasks = tasks
        self.fit = fit
        self.snapshot: LibrarySnapshot | None = None
        self._library: Library | None = None
        self._scanning = False
        self._rescan = False
        self._imports: list[str] = []

    def _get_library(self) -> Library:
        """The Library, created on first use on a pool thread (its import pulls in numpy)."""
        if self._library is None:
            from app.core.library import Library

            self._library = Library(self.paths, self.settings)
        return self._library

    # ---- scan -------------------------------------------------------------------------------------------------
    def scan(self) -> None:
        if self._scanning:
            self._rescan = True
            return
        self._scanning = True
        self.tasks.run(self._scan_job, self._on_scanned, self._on_scan_failed)

    def _scan_job(self) -> LibrarySnapshot:  # pool thread
        library = self._get_library()
        entries = library.scan()
        fits = {}
        for entry in entries:
            if entry.ok:
                try:
                    fits[str(entry.path)] = self.fit(entry)
                except Exception:  # a fit estimate must never hide a model
                    fits[str(entry.path)] = ""
        deletable = {str(e.path): library.can_delete(e) for e in entries}
        return LibrarySnapshot(entries, fits, deletable, str(self.paths.models_dir))

    def _on_scanned(self, snapshot: LibrarySnapshot) -> None:
        self._scanning = False
        self.snapshot = snapshot
        self.scanned.emit(snapshot)
        if self._rescan:
            self._rescan = False
            self.scan()

    def _on_scan_failed(self, error: BaseException) -> None:
        self._scanning = False
        self.failed.emit(f"Scanning the model folders failed: {error}")

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
