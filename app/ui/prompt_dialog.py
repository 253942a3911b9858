"""'Show prompt': the exact text sent to the model for a reply, with the template and why it was chosen."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from app.ui import theme
from app.ui.untrusted import escape, plain


class PromptDialog(QDialog):
    def __init__(self, text: str, template: str, reason: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Prompt sent to the model")
        self.resize(720, 560)
        layout = QVBoxLayout(self)
        header = QLabel(f"<b>Template:</b> {escape(template)}", self)
        header.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(header)
        why = plain(QLabel(reason, self))
        why.setObjectName("Muted")
        why.setWordWrap(True)
        layout.addWidget(why)
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setFont(theme.mono_font())
        self.text.setPlainText(text or "(The prompt of this reply was not recorded.)")
        layout.addWidget(self.text, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        copy = QPushButton("Copy prompt", self)
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(text))
        buttons.addButton(copy, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
