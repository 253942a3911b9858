"""The message box: Enter sends, Shift+Enter adds a line, Esc stops; a hint and notices around it."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontMetricsF, QKeyEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.ui.untrusted import plain

MAX_LINES = 10


class _Editor(QPlainTextEdit):
    """A plain-text box that turns Enter / Esc into signals (Shift+Enter still inserts a newline)."""

    submitted = Signal()
    escaped = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and not event.modifiers() & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.AltModifier):
            self.submitted.emit()
            return
        if event.key() == Qt.Key.Key_Escape:
            self.escaped.emit()
            return
        super().keyPressEvent(event)


class Composer(QWidget):
    """Where the user writes.

    Signals:
        send_requested(str): the text to send (already stripped, never empty).
        stop_requested(): Esc or the Stop button while a reply is written.
        edit_cancelled(): Esc or Cancel while editing an earlier message.
    """

    send_requested = Signal(str)
    stop_requested = Signal()
    edit_cancelled = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._generating = False
        self._can_send = False
        self._editing = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(28, 6, 28, 10)
        layout.setSpacing(6)

        self.notice = QFrame(self)
        self.notice.setObjectName("Notice")
        notice_layout = QHBoxLayout(self.notice)
        notice_layout.setContentsMargins(10, 6, 6, 6)
        self.notice_label = plain(QLabel(self.notice))  # errors quote file and model names
        self.notice_label.setWordWrap(True)
        close = QToolButton(self.notice)
        close.setText("✕")
        close.setToolTip("Dismiss")
        close.clicked.connect(self.clear_notice)
        notice_layout.addWidget(self.notice_label, 1)
        notice_layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.notice.hide()
        layout.addWidget(self.notice)

        self.edit_bar = QFrame(self)
        self.edit_bar.setObjectName("Notice")
        edit_layout = QHBoxLayout(self.edit_bar)
        edit_layout.setContentsMargins(10, 4, 6, 4)
        edit_label = QLabel("Editing a message: sending makes a new branch, the original stays.", self.edit_bar)
        cancel = QPushButton("Cancel", self.edit_bar)
        cancel.clicked.connect(self._on_cancel_edit)
        edit_layout.addWidget(edit_label, 1)
        edit_layout.addWidget(cancel)
        self.edit_bar.hide()
        layout.addWidget(self.edit_bar)

        frame = QFrame(self)
        frame.setObjectName("ComposerFrame")
        row = QHBoxLayout(frame)
        row.setContentsMargins(10, 6, 6, 6)
        self.editor = _Editor(frame)
        self.editor.setPlaceholderText("Message Hearth…")
        self.editor.setTabChangesFocus(True)
        self.editor.submitted.connect(self._on_submit)
        self.editor.escaped.connect(self._on_escape)
        self.editor.document().contentsChanged.connect(self._fit_height)
        self.editor.textChanged.connect(self._update_button)
        self.button = QPushButton("Send", frame)
        self.button.setObjectName("Primary")
        self.button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.button.clicked.connect(self._on_button)
        row.addWidget(self.editor, 1)
        row.addWidget(self.button, 0, Qt.AlignmentFlag.AlignBottom)
        layout.addWidget(frame)

        self.hint = plain(QLabel(self))
        self.hint.setObjectName("Muted")
        layout.addWidget(self.hint)
        self._fit_height()
        self.set_state(can_send=False, generating=False, hint="")

    # ---- state ---------------------------------------------------------------------------------------------
    @property
    def text(self) -> str:
        return self.editor.toPlainText()

    @property
    def editing(self) -> bool:
        return self._editing

    def set_state(self, *, can_send: bool, generating: bool, hint: str) -> None:
        """can_send: a model is loaded and nothing else is being written; hint: shown under the box."""
        self._can_send, self._generating = can_send, generating
        self.button.setText("Stop" if generating else "Send")
        self.button.setToolTip("Stop the reply (Esc)" if generating else "Send (Enter)")
        self.hint.setText(hint or "Enter to send · Shift+Enter for a new line · Esc stops a reply")
        self.hint.setObjectName("Error" if hint and not can_send and not generating else "Muted")
        self.hint.style().unpolish(self.hint)
        self.hint.style().polish(self.hint)
        self._update_button()

    def _update_button(self) -> None:
        self.button.setEnabled(self._generating or (self._can_send and bool(self.text.strip())))

    def set_notice(self, text: str) -> None:
        self.notice_label.setText(text)
        self.notice.setVisible(bool(text))

    def clear_notice(self) -> None:
        self.set_notice("")

    def begin_edit(self, text: str) -> None:
        self._editing = True
        self.edit_bar.show()
        self.editor.setPlainText(text)
        self.editor.setFocus()
        self.editor.moveCursor(self.editor.textCursor().MoveOperation.End)

    def end_edit(self) -> None:
        self._editing = False
        self.edit_bar.hide()

    def focus(self) -> None:
        self.editor.setFocus()

    # ---- events --------------------------------------------------------------------------------------------
    def _fit_height(self) -> None:
        metrics = QFontMetricsF(self.editor.font())
        lines = max(1, min(MAX_LINES, int(self.editor.document().size().height())))
        margins = self.editor.contentsMargins()
        doc_margin = self.editor.document().documentMargin()
        height = lines * metrics.lineSpacing() + 2 * doc_margin + margins.top() + margins.bottom() + 4
        self.editor.setFixedHeight(int(height))

    def _on_submit(self) -> None:
        text = self.text.strip()
        if self._generating or not self._can_send or not text:
            return
        self.send_requested.emit(text)

    def accept_sent(self) -> None:
        """The session took the text: clear the box (it is kept when sending was refused)."""
        self.editor.clear()
        self.end_edit()

    def _on_escape(self) -> None:
        if self._generating:
            self.stop_requested.emit()
        elif self._editing:
            self._on_cancel_edit()

    def _on_cancel_edit(self) -> None:
        self.end_edit()
        self.editor.clear()
        self.edit_cancelled.emit()

    def _on_button(self) -> None:
        if self._generating:
            self.stop_requested.emit()
        else:
            self._on_submit()
