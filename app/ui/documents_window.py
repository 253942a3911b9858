"""The Documents window: collections (named sets of folders and files) to create, edit, index and remove;
an index run's progress with pause and cancel; the files that could not be read, with the reason; the
embedding model (keyword-only search until one is set, with one offered from Discover).

A view only: every action goes to the DocumentsController as a signal or a call; it redraws from the
controller's signals.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.ui.documents_controller import EMBEDDING_LABEL, CollectionView, DocumentsController


class DocumentsWindow(QDialog):
    """Signals: attach_requested(str name): "Use in this chat" for the selected collection."""

    attach_requested = Signal(str)

    def __init__(self, controller: DocumentsController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setWindowTitle("Documents")
        self.resize(860, 560)
        self.setModal(False)
        outer = QVBoxLayout(self)

        self.model_bar = QFrame(self)
        self.model_bar.setObjectName("Notice")
        bar = QHBoxLayout(self.model_bar)
        bar.setContentsMargins(10, 6, 6, 6)
        self.model_label = QLabel(self.model_bar)
        self.model_label.setWordWrap(True)
        self.offer_button = QPushButton(f"Get {EMBEDDING_LABEL} from Discover", self.model_bar)
        self.offer_button.clicked.connect(controller.offer_embedding_model)
        self.choose_button = QPushButton("Choose a file…", self.model_bar)
        self.choose_button.clicked.connect(self._choose_model)
        bar.addWidget(self.model_label, 1)
        bar.addWidget(self.offer_button)
        bar.addWidget(self.choose_button)
        outer.addWidget(self.model_bar)

        body = QHBoxLayout()
        outer.addLayout(body, 1)
        left = QVBoxLayout()
        self.list = QListWidget(self)
        self.list.currentRowChanged.connect(self._show_selected)
        left.addWidget(self.list, 1)
        row = QHBoxLayout()
        self.new_button = QPushButton("New collection…", self)
        self.new_button.clicked.connect(self._new)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.clicked.connect(self._remove)
        row.addWidget(self.new_button)
        row.addWidget(self.remove_button)
        left.addLayout(row)
        body.addLayout(left, 1)

        right = QVBoxLayout()
        self.title = QLabel(self)
        self.title.setObjectName("Heading")
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        right.addWidget(self.title)
        self.summary = QLabel(self)
        self.summary.setObjectName("Muted")
        self.summary.setWordWrap(True)
        right.addWidget(self.summary)
        right.addWidget(QLabel("Folders and files", self))
        self.sources = QListWidget(self)
        self.sources.setMaximumHeight(120)
        right.addWidget(self.sources)
        buttons = QHBoxLayout()
        self.add_folder_button = QPushButton("Add folder…", self)
        self.add_folder_button.clicked.connect(self._add_folder)
        self.add_files_button = QPushButton("Add files…", self)
        self.add_files_button.clicked.connect(self._add_files)
        self.remove_source_button = QPushButton("Remove from collection", self)
        self.remove_source_button.clicked.connect(self._remove_source)
        self.index_button = QPushButton("Index now", self)
        self.index_button.clicked.connect(self._index)
        self.attach_button = QPushButton("Use in this chat", self)
        self.attach_button.setObjectName("Primary")
        self.attach_button.clicked.connect(self._attach)
        for button in (self.add_folder_button, self.add_files_button, self.remove_source_button, self.index_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.attach_button)
        right.addLayout(buttons)

        progress_row = QHBoxLayout()
        self.progress = QProgressBar(self)
        self.progress.setTextVisible(False)  # the figures are in the line below, readable in every theme
        self.pause_button = QPushButton("Pause", self)
        self.pause_button.clicked.connect(self._pause)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.clicked.connect(controller.cancel)
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.pause_button)
        progress_row.addWidget(self.cancel_button)
        right.addLayout(progress_row)
        self.progress_label = QLabel(self)
        self.progress_label.setObjectName("Muted")
        self.progress_label.setTextFormat(Qt.TextFormat.PlainText)
        right.addWidget(self.progress_label)

        self.failures_title = QLabel("Files that could not be read", self)
        right.addWidget(self.failures_title)
        self.failures = QTreeWidget(self)
        self.failures.setHeaderLabels(["File", "Why"])
        self.failures.setRootIsDecorated(False)
        self.failures.setColumnWidth(0, 220)
        self.failures.setMinimumHeight(110)
        right.addWidget(self.failures)
        self.message = QLabel(self)
        self.message.setObjectName("Error")
        self.message.setWordWrap(True)
        self.message.hide()
        right.addWidget(self.message)
        right.addStretch(1)
        body.addLayout(right, 2)

        controller.collections_changed.connect(self.set_collections)
        controller.progress.connect(self._on_progress)
        controller.busy_changed.connect(self._on_busy)
        controller.indexed.connect(self._on_indexed)
        controller.failed.connect(self.show_error)
        controller.embedding_changed.connect(self._on_embedding)
        controller.offer_status.connect(self._on_offer_status)
        self._offer_text = ""
        self.set_collections(controller.views)
        self._on_busy(controller.busy)
        self._on_embedding(controller.embedding_model)
        controller.refresh()

    # ---- showing ----------------------------------------------------------------------------------------------
    def selected(self) -> CollectionView | None:
        item = self.list.currentItem()
        name = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        return next((view for view in self.controller.views if view.name == name), None)

    def select(self, name: str) -> None:
        for row in range(self.list.count()):
            if self.list.item(row).data(Qt.ItemDataRole.UserRole) == name:
                self.list.setCurrentRow(row)

    def set_collections(self, views: list[CollectionView]) -> None:
        current = self.selected()
        keep = current.name if current is not None else ""
        self.list.blockSignals(True)
        self.list.clear()
        for view in views:
            info = view.info
            item = QListWidgetItem(f"{info.name}\n{info.files} files · {info.chunks} passages", self.list)
            item.setData(Qt.ItemDataRole.UserRole, info.name)
        self.list.blockSignals(False)
        if views:
            names = [v.name for v in views]
            self.list.setCurrentRow(names.index(keep) if keep in names else 0)
        self._show_selected()

    def _show_selected(self, *_args: object) -> None:
        view = self.selected()
        has = view is not None
        for widget in (self.remove_button, self.add_folder_button, self.add_files_button, self.index_button,
                       self.attach_button, self.remove_source_button):  # fmt: skip
            widget.setEnabled(has)
        self.sources.clear()
        self.failures.clear()
        if view is None:
            self.title.setText("No collections yet")
            self.summary.setText(
                "A collection is a set of folders and files (PDF, Word, Markdown, HTML, text, code) that a chat "
                "can answer from, citing the passages it used. Make one with New collection."
            )
            self.failures_title.hide()
            self.failures.hide()
            return
        info = view.info
        self.title.setText(info.name)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.indexed_at)) if info.indexed_at else "not yet"
        vectors = (
            f"{info.embedded} of {info.chunks} with vectors"
            if self.controller.embedding_model
            else "keyword search only"
        )
        self.summary.setText(
            f"{info.files} files, {info.pages} pages, {info.chunks} passages ({vectors}); indexed {when}."
        )
        for source in info.sources:
            QListWidgetItem(source, self.sources)
        for path, reason in view.failures:
            row = QTreeWidgetItem([Path(path).name, reason])
            row.setToolTip(0, path)
            row.setToolTip(1, reason)
            self.failures.addTopLevelItem(row)
        self.failures_title.setVisible(bool(view.failures))
        self.failures.setVisible(bool(view.failures))

    def _on_busy(self, name: str) -> None:
        running = bool(name)
        self.progress.setVisible(running)
        self.pause_button.setVisible(running)
        self.cancel_button.setVisible(running)
        self.pause_button.setText("Pause")
        if running:
            self.progress.setRange(0, 0)
            self.progress_label.setText(f"Indexing {name}…")

    def _on_progress(self, name: str, progress: object) -> None:
        done, total, path, phase = (getattr(progress, k) for k in ("done", "total", "path", "phase"))
        if phase == "reading" and total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            paused = " (paused)" if self.controller.paused else ""
            self.progress_label.setText(f"{name}: {done} of {total} files, reading {Path(path).name}{paused}")
        elif phase == "embedding":
            self.progress.setRange(0, 0)
            self.progress_label.setText(f"{name}: computing vectors ({done} passages so far)")

    def _on_indexed(self, name: str, report: object) -> None:
        cancelled = getattr(report, "cancelled", False)
        added, updated, removed = (getattr(report, k) for k in ("added", "updated", "removed"))
        failed = len(getattr(report, "failed", []))
        text = f"{name}: {added} added, {updated} updated, {removed} removed"
        text += f", {failed} could not be read" if failed else ""
        self.progress_label.setText(f"{text} (cancelled: finished files stay indexed)" if cancelled else text)

    def _on_embedding(self, path: str) -> None:
        if path:
            self.model_label.setText(f"Embedding model: {Path(path).name}. Searches combine keywords and meaning.")
            self.offer_button.hide()
        else:
            self.model_label.setText(
                self._offer_text
                or "No embedding model yet: searches use keywords only (BM25). An embedding model also finds "
                "passages that say the same thing in other words."
            )
            self.offer_button.show()
        self._show_selected()

    def _on_offer_status(self, text: str) -> None:
        self._offer_text = text
        self.offer_button.setEnabled(not text or text.startswith(("The download failed", "Could not")))
        if not self.controller.embedding_model:
            self._on_embedding("")

    def show_error(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    # ---- actions ----------------------------------------------------------------------------------------------
    def _new(self) -> None:
        name, ok = QInputDialog.getText(self, "New collection", "Name of the collection:")
        if not ok or not name.strip():
            return
        folder = QFileDialog.getExistingDirectory(self, "A folder of documents for the collection", str(Path.home()))
        if folder:
            self.show_error("")
            self.controller.create(name, [folder])
            self._pending_select = name.strip()

    def _remove(self) -> None:
        view = self.selected()
        if view is None:
            return
        answer = QMessageBox.question(
            self, "Remove collection", f"Remove {view.name!r} and its index? Your files are not touched."
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.controller.remove(view.name)

    def _add_folder(self) -> None:
        view = self.selected()
        folder = QFileDialog.getExistingDirectory(self, "Add a folder", str(Path.home())) if view else ""
        if view is not None and folder:
            self.controller.add_sources(view.name, [folder])

    def _add_files(self) -> None:
        view = self.selected()
        if view is None:
            return
        files, _ = QFileDialog.getOpenFileNames(self, "Add files", str(Path.home()))
        if files:
            self.controller.add_sources(view.name, files)

    def _remove_source(self) -> None:
        view, item = self.selected(), self.sources.currentItem()
        if view is not None and item is not None:
            self.controller.remove_source(view.name, item.text())

    def _index(self) -> None:
        view = self.selected()
        if view is not None:
            self.controller.index(view.name)

    def _attach(self) -> None:
        view = self.selected()
        if view is not None:
            self.attach_requested.emit(view.name)

    def _pause(self) -> None:
        if self.controller.paused:
            self.controller.resume()
            self.pause_button.setText("Pause")
            self.progress_label.setText(self.progress_label.text().removesuffix(" (paused)"))
        else:
            self.controller.pause()
            self.pause_button.setText("Resume")
            self.progress_label.setText(self.progress_label.text() + " (paused)")

    def _choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a GGUF embedding model", str(Path.home()), "GGUF models (*.gguf)"
        )
        if path:
            self.controller.choose_embedding_model(path)
