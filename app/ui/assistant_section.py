"""The chat settings panel's Assistant row: which assistant this chat runs with, switch it, manage them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.ui.untrusted import plain

if TYPE_CHECKING:
    from app.core.assistants import Assistant

NONE = ""


class AssistantSection(QWidget):
    """A combo box of assistants ("None" first), the variable values in use, and a button to manage them.

    Signals:
        assistant_chosen(str): the user picked an assistant for this chat (its id; '' = none).
        manage_requested(): open the Assistants dialog.
    """

    assistant_chosen = Signal(str)
    manage_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._quiet = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        row = QHBoxLayout()
        self.combo = QComboBox(self)
        self.combo.setToolTip("The assistant this chat runs with: its system prompt, sampling, reply format and load")
        self.combo.currentIndexChanged.connect(self._on_chosen)
        self.manage = QPushButton("Manage…", self)
        self.manage.setToolTip("Create, edit, import and export assistants")
        self.manage.clicked.connect(self.manage_requested)
        row.addWidget(self.combo, 1)
        row.addWidget(self.manage)
        layout.addLayout(row)
        self.summary = plain(QLabel(self))  # an assistant's own text (it may be imported)
        self.summary.setObjectName("Muted")
        self.summary.setWordWrap(True)
        self.summary.hide()
        layout.addWidget(self.summary)
        self.set_assistants([], NONE)

    @property
    def current(self) -> str:
        return str(self.combo.currentData() or NONE)

    def set_assistants(self, assistants: Sequence[Assistant], current: str, summary: str = "", name: str = "") -> None:
        """List the assistants and show the chat's (its id, or '' for none; a deleted one is shown by name)."""
        self._quiet = True
        self.combo.clear()
        self.combo.addItem("None", NONE)
        for assistant in assistants:
            self.combo.addItem(assistant.name, assistant.id)
            self.combo.setItemData(self.combo.count() - 1, assistant.description, Qt.ItemDataRole.ToolTipRole)
        self._quiet = False
        self.set_current(current, summary, name)

    def set_current(self, assistant_id: str, summary: str = "", name: str = "") -> None:
        """Show the chat's assistant (no signal). name: shown for an assistant no longer in the library."""
        self._quiet = True
        index = self.combo.findData(assistant_id or NONE)
        if index < 0 and assistant_id:
            self.combo.addItem(f"{name or assistant_id} (deleted)", assistant_id)
            index = self.combo.count() - 1
        self.combo.setCurrentIndex(max(0, index))
        self._quiet = False
        self.summary.setText(summary)
        self.summary.setVisible(bool(summary))

    def _on_chosen(self) -> None:
        if not self._quiet:
            self.assistant_chosen.emit(self.current)
