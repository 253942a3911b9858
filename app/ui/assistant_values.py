"""The small form asked before a chat starts with an assistant whose system prompt has {{variables}}
(the Translator's target language ...): one field each, defaults filled in, the ones without a default required."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

from app.ui.untrusted import plain, tooltip

if TYPE_CHECKING:
    from app.core.assistants import Assistant


class AssistantValuesDialog(QDialog):
    """Asks the values of an assistant's variables; values() once accepted."""

    def __init__(
        self, assistant: Assistant, parent: QWidget | None = None, values: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(parent)
        self.assistant = assistant
        self.setWindowTitle(f"New chat with {assistant.name}")
        self.setMinimumWidth(420)
        layout = QVBoxLayout(self)
        intro = plain(QLabel(assistant.description or f"{assistant.name} needs a few details.", self))
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.fields: dict[str, QLineEdit] = {}
        given = dict(values or {})
        for name in assistant.variables:
            edit = QLineEdit(self)
            edit.setObjectName(f"Variable_{name}")
            edit.setText(given.get(name, assistant.defaults.get(name, "")))
            required = name not in assistant.defaults
            edit.setPlaceholderText("required" if required else "")
            edit.textChanged.connect(self._update)
            form.addRow(name[:1].upper() + name[1:], edit)
            self.fields[name] = edit
        layout.addLayout(form)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok.setText("Start chat")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self._update()
        if self.fields:
            first = next(iter(self.fields.values()))
            first.setFocus()
            first.selectAll()

    def values(self) -> dict[str, str]:
        """The values typed (blank ones left out, so the defaults apply)."""
        return {name: edit.text().strip() for name, edit in self.fields.items() if edit.text().strip()}

    def missing(self) -> list[str]:
        return [n for n, e in self.fields.items() if not e.text().strip() and n not in self.assistant.defaults]

    def _update(self) -> None:
        missing = self.missing()
        self.ok.setEnabled(not missing)
        self.ok.setToolTip(tooltip(f"Fill in: {', '.join(missing)}") if missing else "")
