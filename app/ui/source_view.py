"""The passage view: what a citation [n] points at. The file, page and lines, the heading path, the
passage with the question's words highlighted, and "Open the file".

"Open the file" is the only place Hearth opens a local file, and only one the document index has read (the
sources of a reply come from its meta, which an imported history could have written): the button stays
disabled until the index confirms the path. A source file of code kind opens its folder instead, since a
desktop may run a script it is asked to open.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.core.documents.retrieval import Source, highlight_spans
from app.ui import theme


class SourceDialog(QDialog):
    """Signals: open_requested(str path) after the user pressed "Open the file" (for tests and logs)."""

    open_requested = Signal(str)

    def __init__(self, source: Source, question: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.source = source
        self.setWindowTitle(f"Source [{source.number}]: {source.file_name}")
        self.resize(780, 480)
        layout = QVBoxLayout(self)
        title = QLabel(f"[{source.number}] {source.file_name}", self)
        title.setTextFormat(title.textFormat().PlainText)
        font = title.font()
        font.setBold(True)
        title.setFont(font)
        layout.addWidget(title)
        where = "the whole file" if source.whole_document else source.location
        self.where = QLabel(where[:1].upper() + where[1:] + (f" · {source.heading}" if source.heading else ""), self)
        self.where.setTextFormat(self.where.textFormat().PlainText)
        self.where.setWordWrap(True)
        layout.addWidget(self.where)
        path = QLabel(source.path, self)
        path.setTextFormat(path.textFormat().PlainText)
        path.setObjectName("Muted")
        path.setWordWrap(True)
        layout.addWidget(path)
        self.passage = QPlainTextEdit(self)
        self.passage.setReadOnly(True)
        self.passage.setPlainText(source.text)
        layout.addWidget(self.passage, 1)
        self.highlighted = self._highlight(question)
        scores = []
        if source.bm25 is not None:
            scores.append(f"BM25 {source.bm25:.2f} (rank {source.bm25_rank})")
        if source.vector is not None:
            scores.append(f"vector {source.vector:.3f} (rank {source.vector_rank})")
        if scores:
            found = QLabel("Found by " + ", ".join(scores), self)
            found.setObjectName("Muted")
            layout.addWidget(found)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        self.open_folder_only = source.kind == "code"
        self.open_button = QPushButton("Open the folder" if self.open_folder_only else "Open the file", self)
        self.open_button.setEnabled(False)
        self.open_button.setToolTip("Checking that Hearth indexed this file…")
        self.open_button.clicked.connect(self._open)
        buttons.addButton(self.open_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _highlight(self, question: str) -> list[str]:
        """Mark the question's words in the passage; returns the words marked."""
        spans = highlight_spans(question, self.source.text) if question else []
        fmt = QTextCharFormat()
        fmt.setBackground(QColor(theme.current().selection))
        fmt.setFontWeight(700)
        document = self.passage.document()
        cursor = QTextCursor(document)
        for start, end in spans:
            cursor.setPosition(start)
            cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
            cursor.mergeCharFormat(fmt)
        return [self.source.text[start:end] for start, end in spans]

    def set_indexed(self, indexed: bool) -> None:
        """The index's answer: whether this path is a file Hearth read (only then may it be opened)."""
        self.open_button.setEnabled(indexed and Path(self.source.path).exists())
        self.open_button.setToolTip(
            self.source.path if self.open_button.isEnabled() else "Hearth has not indexed a file at this path"
        )

    def _open(self) -> None:
        path = Path(self.source.path)
        target = path.parent if self.open_folder_only else path
        self.open_requested.emit(str(target))
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(target)))
