"""The GUI's side of document collections: listing, editing and indexing them on TaskRunner workers (one
index run at a time, with progress, pause and cancel), indexing files dropped on a chat, and the embedding
model (set from a file, or offered from the Hub the first time).

Nothing here runs on the GUI thread but signal handling: the index (numpy, SQLite extensions) is opened on
a worker, and every read or write goes through one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

if TYPE_CHECKING:
    from app.core.documents.index import CollectionInfo, DocumentIndex
    from app.core.documents.indexer import IndexControl, IndexProgress, IndexReport
    from app.core.downloads import DownloadStatus
    from app.core.paths import AppPaths
    from app.core.settings import Settings
    from app.ui.hub_controller import HubController
    from app.ui.workers import TaskRunner

log = logging.getLogger("hearth.ui.documents")

# Offered the first time documents are used without an embedding model: BAAI's bge-small-en-v1.5 (MIT),
# 384 dimensions, as GGUF; the Q8_0 file is about 36 MB and embeds a page in a few hundred ms on a laptop.
EMBEDDING_REPO = "CompendiumLabs/bge-small-en-v1.5-gguf"
EMBEDDING_QUANT = "Q8_0"
EMBEDDING_LABEL = "bge-small-en-v1.5 (Q8_0, about 36 MB)"


@dataclass(frozen=True)
class CollectionView:
    """A collection as the Documents window shows it: the index's figures and its unreadable files."""

    info: CollectionInfo
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.info.name


class DocumentsController(QObject):
    """Signals:
    collections_changed(object list[CollectionView]): after every change and index run.
    progress(str name, object IndexProgress): an index run moved on.
    indexed(str name, object IndexReport): an index run ended (report.cancelled when cancelled).
    busy_changed(str name): the collection being indexed ('' none).
    failed(str): something could not be done (one line).
    embedding_changed(str path): the embedding model setting changed ('' none).
    offer_status(str): how the offered embedding model's download goes ('' when done or not started).
    file_ready(str path, str error): a file dropped on a chat was indexed ('' error) or could not be.
    """

    collections_changed = Signal(object)
    progress = Signal(str, object)
    indexed = Signal(str, object)
    busy_changed = Signal(str)
    failed = Signal(str)
    embedding_changed = Signal(str)
    offer_status = Signal(str)
    file_ready = Signal(str, str)

    def __init__(
        self, paths: AppPaths, settings: Settings, tasks: TaskRunner, hub: HubController | None = None
    ) -> None:
        super().__init__()
        self.paths = paths
        self.settings = settings
        self.tasks = tasks
        self.hub = hub
        self._lock = threading.Lock()
        self._index: DocumentIndex | None = None
        self._control: IndexControl | None = None
        self.busy = ""  # the collection being indexed
        self._queue: list[str] = []
        self._offer = ""  # "" none, "asked" (waiting for the Hub to queue it), else the download's id
        self.views: list[CollectionView] = []
        if hub is not None:
            hub.queued.connect(self._on_download_queued)
            hub.downloads_changed.connect(self._on_downloads_changed)
            hub.download_finished.connect(self._on_download_finished)
            hub.failed.connect(self._on_hub_failed)

    # ---- the index (pool threads only) ----------------------------------------------------------------------
    def _open(self) -> DocumentIndex:
        with self._lock:
            if self._index is None:
                from app.core.documents.index import DocumentIndex

                self._index = DocumentIndex(self.paths.documents_db)
            return self._index

    def _list(self) -> list[CollectionView]:
        index = self._open()
        return [CollectionView(info, index.failures(info.name)) for info in index.collections()]

    def _run(self, job: Callable[[DocumentIndex], Any], then: Callable[[Any], None] | None = None) -> None:
        """job(index) on a worker, then the list again; then(result) on the GUI thread."""

        def work() -> tuple[Any, list[CollectionView]]:
            index = self._open()
            return job(index), self._list()

        def done(result: tuple[Any, list[CollectionView]]) -> None:
            self._on_listed(result[1])
            if then is not None:
                then(result[0])

        self.tasks.run(work, done, self._on_failed)

    def _on_listed(self, views: list[CollectionView]) -> None:
        self.views = views
        self.collections_changed.emit(views)

    def _on_failed(self, error: BaseException) -> None:
        self.failed.emit(str(error))

    @property
    def names(self) -> list[str]:
        return [view.name for view in self.views]

    # ---- collections ----------------------------------------------------------------------------------------
    def refresh(self) -> None:
        self.tasks.run(self._list, self._on_listed, self._on_failed)

    def create(self, name: str, paths: Sequence[str]) -> None:
        """A new collection of these folders/files, indexed right away."""
        name = name.strip()
        if not name:
            self.failed.emit("A collection needs a name.")
            return
        if name in self.names:
            self.failed.emit(f"There is already a collection named {name!r}.")
            return
        self._run(lambda index: index.add_collection(name, [Path(p) for p in paths]), lambda _: self.index(name))

    def add_sources(self, name: str, paths: Sequence[str]) -> None:
        self._run(lambda index: index.add_collection(name, [Path(p) for p in paths]), lambda _: self.index(name))

    def remove_source(self, name: str, path: str) -> None:
        """Stop following a folder or file; its files leave the index (an index run follows)."""
        self._run(lambda index: index.remove_source(name, path), lambda _: self.index(name))

    def remove(self, name: str) -> None:
        """Remove the collection and its index (the files themselves stay)."""
        if self.busy == name and self._control is not None:
            self._control.cancel()
        self._queue = [n for n in self._queue if n != name]
        self._run(lambda index: index.remove_collection(name))

    # ---- indexing -------------------------------------------------------------------------------------------
    def index(self, name: str) -> None:
        """Bring a collection's index up to date (queued behind a run in progress)."""
        if name == self.busy or name in self._queue:
            return
        self._queue.append(name)
        self._next()

    def _next(self) -> None:
        if self.busy or not self._queue:
            return
        from app.core.documents.indexer import IndexControl

        name = self._queue.pop(0)
        self.busy, self._control = name, IndexControl()
        control = self._control
        embedding = str(self.settings.get("embedding_model"))

        def work(report: Callable[[object], None]) -> tuple[IndexReport, list[CollectionView]]:
            from app.core.documents.indexer import index_collection

            index = self._open()
            embedder = _open_embedder(embedding)
            try:
                result = index_collection(index, name, embedder=embedder, progress=report, control=control)
            finally:
                if embedder is not None:
                    embedder.close()
            return result, self._list()

        self.busy_changed.emit(name)
        self.tasks.run(work, self._on_index_done, self._on_index_failed, self._on_index_progress)

    def _on_index_progress(self, progress: IndexProgress) -> None:
        if self.busy:
            self.progress.emit(self.busy, progress)

    def _on_index_done(self, result: tuple[IndexReport, list[CollectionView]]) -> None:
        report, views = result
        self._finish_run()
        self._on_listed(views)
        self.indexed.emit(report.collection, report)
        self._next()

    def _on_index_failed(self, error: BaseException) -> None:
        self._finish_run()
        self.failed.emit(str(error))
        self.refresh()
        self._next()

    def _finish_run(self) -> None:
        self.busy, self._control = "", None
        self.busy_changed.emit("")

    @property
    def paused(self) -> bool:
        return self._control is not None and self._control.paused

    def pause(self) -> None:
        if self._control is not None:
            self._control.pause()

    def resume(self) -> None:
        if self._control is not None:
            self._control.resume()

    def cancel(self) -> None:
        """Stop the run in progress after the file at hand (finished files stay indexed)."""
        if self._control is not None:
            self._control.cancel()

    # ---- single files (dropped on a chat) -------------------------------------------------------------------
    def attach_file(self, path: str) -> None:
        """Index one file for a conversation (a hidden collection of its own); file_ready tells the outcome."""
        embedding = str(self.settings.get("embedding_model"))

        def work() -> tuple[str, str]:
            from app.core.documents.indexer import index_collection

            index = self._open()
            embedder = _open_embedder(embedding)
            try:
                report = index_collection(index, index.file_collection(Path(path)), embedder=embedder)
            finally:
                if embedder is not None:
                    embedder.close()
            return path, report.failed[0][1] if report.failed else ""

        self.tasks.run(work, self._on_file_done, lambda error: self.file_ready.emit(path, str(error)))

    def _on_file_done(self, result: tuple[str, str]) -> None:
        self.file_ready.emit(*result)

    def check_indexed(self, path: str, callback: Callable[[bool], None]) -> None:
        """callback(True) on the GUI thread when the index has read this file (what may be opened)."""
        self.tasks.run(lambda: self._open().is_indexed_file(path), callback, lambda _error: callback(False))

    # ---- the embedding model --------------------------------------------------------------------------------
    @property
    def embedding_model(self) -> str:
        return str(self.settings.get("embedding_model"))

    def choose_embedding_model(self, path: str) -> None:
        """Use this GGUF for document search once it has opened as an embedding model (on a worker)."""

        def check() -> str:
            from app.core.embedder import Embedder

            with Embedder.open(Path(path)):  # refuses a chat model or a broken file before it is saved
                return path

        self.tasks.run(check, self._on_embedding_checked, self._on_failed)

    def _on_embedding_checked(self, path: str) -> None:
        self.settings.set("embedding_model", path)
        self.embedding_changed.emit(path)
        for name in self.names:  # vectors for what was indexed by keywords only
            self.index(name)

    def clear_embedding_model(self) -> None:
        self.settings.set("embedding_model", "")
        self.embedding_changed.emit("")

    def offer_embedding_model(self) -> None:
        """Download the recommended embedding model through Discover; it is used when the download ends."""
        if self.hub is None or self._offer:
            return
        self._offer = "asked"
        self.offer_status.emit(f"Asking Hugging Face for {EMBEDDING_LABEL}…")
        self.hub.download_quant(EMBEDDING_REPO, EMBEDDING_QUANT)

    def _on_download_queued(self, status: DownloadStatus) -> None:
        if self._offer == "asked" and status.repo_id == EMBEDDING_REPO:
            self._offer = status.id

    def _on_downloads_changed(self, statuses: list[DownloadStatus]) -> None:
        for status in statuses:
            if status.id == self._offer and status.state != "completed":
                if status.state == "failed":
                    self._offer = ""
                    self.offer_status.emit(f"The download failed: {status.error}")
                else:
                    self.offer_status.emit(f"Downloading {status.name}: {status.fraction:.0%}")

    def _on_download_finished(self, status: DownloadStatus) -> None:
        if status.id == self._offer and status.paths:
            self._offer = ""
            self.offer_status.emit("")
            self.choose_embedding_model(str(status.paths[0]))

    def _on_hub_failed(self, message: str) -> None:
        if self._offer == "asked":
            self._offer = ""
            self.offer_status.emit(f"Could not get the embedding model: {message}")

    def close(self) -> None:
        """Stop an index run (the caller then waits for the task runner) and close the index."""
        self.cancel()
        self._queue.clear()

    def close_index(self) -> None:
        """After the workers stopped: close the index's connections."""
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None


def _open_embedder(path: str) -> Any:
    """The embedding model for an index run (pool thread), or None: none set, or it cannot be opened (the run
    then indexes keywords only and the note says so)."""
    if not path:
        return None
    from app.core.embedder import Embedder
    from app.core.errors import HearthError

    try:
        return Embedder.open(Path(path))
    except HearthError as exc:
        log.warning("documents: the embedding model could not be opened: %s", exc)
        return None
