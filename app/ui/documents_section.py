"""The Documents section of the chat settings panel: what this conversation answers from (collections and
single files), attach and detach, the search mode, and a way to the Documents window."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.documents.attached import AttachedDocuments


class DocumentsSection(QWidget):
    """Signals: attach_collection(str), attach_file(str path), detach(str name or path), manage_requested(),
    offer_requested(): get the recommended embedding model from Discover."""

    attach_collection = Signal(str)
    attach_file = Signal(str)
    detach = Signal(str)
    manage_requested = Signal()
    offer_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._collections: list[str] = []
        self._attached = AttachedDocuments()
        self._pending: set[str] = set()  # files being indexed for this chat
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        title = QLabel("DOCUMENTS", self)
        title.setObjectName("SectionTitle")
        layout.addWidget(title)
        self.items = QVBoxLayout()
        self.items.setSpacing(2)
        layout.addLayout(self.items)
        self.empty = QLabel("This chat answers from no documents. Attach a collection, or drop a file on the chat.")
        self.empty.setObjectName("Muted")
        self.empty.setWordWrap(True)
        layout.addWidget(self.empty)
        row = QHBoxLayout()
        self.attach_button = QToolButton(self)
        self.attach_button.setText("Attach")
        self.attach_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.menu = QMenu(self.attach_button)
        self.menu.aboutToShow.connect(self._fill_menu)
        self.attach_button.setMenu(self.menu)
        self.manage_button = QPushButton("Collections…", self)
        self.manage_button.clicked.connect(self.manage_requested)
        row.addWidget(self.attach_button)
        row.addWidget(self.manage_button)
        row.addStretch(1)
        layout.addLayout(row)
        self.mode = QLabel(self)
        self.mode.setObjectName("Muted")
        self.mode.setWordWrap(True)
        layout.addWidget(self.mode)
        self.offer_button = QPushButton("Get an embedding model (36 MB)", self)
        self.offer_button.setToolTip("bge-small-en-v1.5 from Hugging Face, through Discover: finds passages by meaning")
        self.offer_button.clicked.connect(self.offer_requested)
        layout.addWidget(self.offer_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.set_embedding_model("")

    # ---- filling in -------------------------------------------------------------------------------------------
    def set_collections(self, names: list[str]) -> None:
        self._collections = list(names)

    def set_attached(self, attached: AttachedDocuments, pending: set[str] | None = None) -> None:
        self._attached = attached
        self._pending = set(pending or ())
        while self.items.count():
            widget = self.items.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        entries = [(name, name, "collection") for name in attached.collections]
        entries += [(path, Path(path).name, "file") for path in attached.files]
        entries += [(path, Path(path).name, "indexing…") for path in sorted(self._pending)]
        for key, label, kind in entries:
            self.items.addWidget(self._entry(key, label, kind))
        self.empty.setVisible(not entries)

    def _entry(self, key: str, label: str, kind: str) -> QWidget:
        entry = QWidget(self)
        row = QHBoxLayout(entry)
        row.setContentsMargins(0, 0, 0, 0)
        text = QLabel(f"{label}  ·  {kind}", entry)
        text.setTextFormat(Qt.TextFormat.PlainText)
        text.setToolTip(key)
        row.addWidget(text, 1)
        if kind != "indexing…":
            remove = QToolButton(entry)
            remove.setText("✕")
            remove.setToolTip(f"Detach {label} from this chat")
            remove.setObjectName(f"detach:{key}")
            remove.clicked.connect(lambda _=False, key=key: self.detach.emit(key))
            row.addWidget(remove)
        return entry

    def set_embedding_model(self, path: str) -> None:
        self.mode.setText(
            "Search: keywords and meaning (hybrid)."
            if path
            else "Search: keywords only (BM25) until an embedding model is set."
        )
        self.offer_button.setVisible(not path)

    def set_offer_status(self, text: str) -> None:
        """How the offered model's download goes ('' back to the plain note)."""
        if text:
            self.mode.setText(text)
            self.offer_button.setEnabled(text.startswith(("The download failed", "Could not")))
        else:
            self.offer_button.setEnabled(True)

    # ---- the attach menu ----------------------------------------------------------------------------------------
    def _fill_menu(self) -> None:
        self.menu.clear()
        for name in self._collections:
            action = self.menu.addAction(name)
            action.setCheckable(True)
            action.setChecked(name in self._attached.collections)
            action.triggered.connect(lambda checked, name=name: self._toggle(name, checked))
        if not self._collections:
            self.menu.addAction("No collections yet").setEnabled(False)
        self.menu.addSeparator()
        self.menu.addAction("A file…", self._choose_file)
        self.menu.addAction("Manage collections…", self.manage_requested.emit)

    def _toggle(self, name: str, checked: bool) -> None:
        (self.attach_collection if checked else self.detach).emit(name)

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Attach a document to this chat", str(Path.home()))
        if path:
            self.attach_file.emit(path)
