"""Showing text Hearth did not write (model names, file names, Hub answers, titles) without rendering it.

Qt guesses: a QLabel, a tooltip or a message box whose text merely looks like HTML is rendered as rich
text, and rich text loads the images it names (`<img src="/dev/zero">` aborts the process, a FIFO blocks
it). So labels that can show such text are plain text, tooltips and rich labels escape it, and message
boxes are plain text.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QMessageBox, QWidget


def plain(label: QLabel) -> QLabel:
    """Make label show its text literally, whatever it contains; returns it."""
    label.setTextFormat(Qt.TextFormat.PlainText)
    return label


def escape(text: str) -> str:
    """text for insertion into rich text we write ourselves (an escaped label, a tooltip)."""
    return html.escape(text, quote=True).replace("\n", "<br>")


def tooltip(text: str) -> str:
    """A tooltip that shows text literally: tooltips are always guessed, so this one is rich on purpose
    (a <p> makes Qt take it as rich text) with every character of text escaped."""
    return f"<p>{escape(text)}</p>" if text else ""


def confirm(parent: QWidget, title: str, text: str) -> bool:
    """A Yes/No question whose text is shown literally."""
    box = QMessageBox(QMessageBox.Icon.Question, title, text, QMessageBox.StandardButton.Yes, parent)
    box.addButton(QMessageBox.StandardButton.No)
    box.setTextFormat(Qt.TextFormat.PlainText)
    return box.exec() == QMessageBox.StandardButton.Yes


def warn(parent: QWidget, title: str, text: str) -> None:
    """A warning whose text is shown literally."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, parent)
    box.setTextFormat(Qt.TextFormat.PlainText)
    box.exec()
