"""The Tools section of the chat settings panel: which built-in tools and MCP servers this chat may use, the
tools each gives the model (with their descriptions), and servers that cannot be used, with why."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QVBoxLayout, QWidget

if TYPE_CHECKING:
    from app.ui.tool_replies import ToolCatalogue

DESCRIPTION_CHARS = 90


class ToolsSection(QWidget):
    """Signals: changed(tuple of names): the user turned tools on or off for this chat;
    choice_changed(str): "auto", "required" (the first reply must call a tool) or the tool to call first."""

    changed = Signal(object)
    choice_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._quiet = False
        self._boxes: dict[str, QCheckBox] = {}
        self._details: dict[str, QLabel] = {}
        self._order: list[str] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        self.hint = QLabel("The model may ask to run these; every call asks for your approval.", self)
        self.hint.setObjectName("Muted")
        self.hint.setWordWrap(True)
        layout.addWidget(self.hint)
        self.rows = QVBoxLayout()
        self.rows.setSpacing(2)
        layout.addLayout(self.rows)
        self.problem = QLabel(self)
        self.problem.setObjectName("Error")
        self.problem.setWordWrap(True)
        self.problem.setTextFormat(Qt.TextFormat.PlainText)
        self.problem.hide()
        layout.addWidget(self.problem)
        self.empty = QLabel("No MCP servers yet: add them in Settings → Tools.", self)
        self.empty.setObjectName("Muted")
        self.empty.setWordWrap(True)
        layout.addWidget(self.empty)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.choice = QComboBox(self)
        self.choice.setToolTip(
            "Small models rarely call tools on their own: a required call is constrained so that the first "
            "reply is a valid call (later replies are free)."
        )
        self._tool_names: list[str] = []
        self._fill_choice("auto")
        self.choice.currentIndexChanged.connect(self._on_choice)
        form.addRow("First reply", self.choice)
        layout.addLayout(form)

    # ---- filling in (no signals) ---------------------------------------------------------------------------------
    def set_available(self, builtins: Sequence[tuple[str, str]], servers: Sequence[str], config_error: str) -> None:
        """The tools that exist: built-in (name, description) and the configured MCP servers."""
        enabled = self.enabled()
        for box in self._boxes.values():
            box.deleteLater()
        for label in self._details.values():
            label.deleteLater()
        self._boxes, self._details, self._order = {}, {}, []
        for name, description in builtins:
            self._add(name, f"{name} (built-in)", description)
        for server in servers:
            self._add(server, f"{server} (MCP server)", "")
        self.empty.setVisible(not servers and not config_error)
        self.problem.setText(f"The MCP configuration cannot be used: {config_error}" if config_error else "")
        self.problem.setVisible(bool(config_error))
        self.set_enabled(enabled)

    def _add(self, name: str, label: str, tooltip: str) -> None:
        box = QCheckBox(label, self)
        box.setToolTip(tooltip)
        box.toggled.connect(self._on_toggled)
        details = QLabel(self)
        details.setObjectName("Muted")
        details.setWordWrap(True)
        details.setTextFormat(Qt.TextFormat.PlainText)
        details.setContentsMargins(22, 0, 0, 4)
        details.hide()
        self.rows.addWidget(box)
        self.rows.addWidget(details)
        self._boxes[name], self._details[name] = box, details
        self._order.append(name)

    def set_enabled(self, names: Sequence[str]) -> None:
        self._quiet = True
        for name, box in self._boxes.items():
            box.setChecked(name in names)
        self._quiet = False
        for name, details in self._details.items():
            if name not in names:
                details.hide()

    def set_choice(self, value: str) -> None:
        self._fill_choice(value)

    def _fill_choice(self, value: str) -> None:
        self._quiet = True
        self.choice.clear()
        self.choice.addItem("May call a tool", "auto")
        self.choice.addItem("Must call a tool", "required")
        names = list(self._tool_names)
        if value not in ("auto", "required") and value not in names:
            names.append(value)  # chosen before its server listed its tools
        for name in names:
            self.choice.addItem(f"Must call {name}", name)
        self.choice.setCurrentIndex(max(0, self.choice.findData(value)))
        self._quiet = False

    def chosen(self) -> str:
        return str(self.choice.currentData() or "auto")

    def _on_choice(self) -> None:
        if not self._quiet:
            self.choice_changed.emit(self.chosen())

    def set_catalogue(self, catalogue: ToolCatalogue) -> None:
        """Under each server turned on: its tools with their descriptions, or why it cannot be used."""
        self._tool_names = [spec.name for spec in catalogue.specs]
        self._fill_choice(self.chosen())
        for name, details in self._details.items():
            if name not in catalogue.names or not self._boxes[name].isChecked():
                continue
            source = "builtin" if self._boxes[name].text().endswith("(built-in)") else f"mcp:{name}"
            if source == "builtin":
                continue  # its description is the checkbox's tooltip
            problem = catalogue.problems.get(name)
            if problem:
                details.setObjectName("Error")
                details.setText(problem)
            else:
                details.setObjectName("Muted")
                lines = [
                    f"{spec.name} — {_first_line(spec.description)}" if spec.description else spec.name
                    for spec in catalogue.specs
                    if spec.source == source
                ]
                details.setText("\n".join(lines) or "This server offers no tools.")
            details.style().unpolish(details)
            details.style().polish(details)
            details.show()

    def set_listing(self, names: Sequence[str]) -> None:
        """Servers being started to list their tools."""
        for name in names:
            details = self._details.get(name)
            if details is not None and not self._boxes[name].text().endswith("(built-in)"):
                details.setObjectName("Muted")
                details.setText("Starting the server to list its tools…")
                details.show()

    # ---- reading ---------------------------------------------------------------------------------------------------
    def enabled(self) -> tuple[str, ...]:
        return tuple(name for name in self._order if self._boxes[name].isChecked())

    def box(self, name: str) -> QCheckBox:
        return self._boxes[name]

    def details(self, name: str) -> QLabel:
        return self._details[name]

    def _on_toggled(self) -> None:
        if not self._quiet:
            self.changed.emit(self.enabled())


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= DESCRIPTION_CHARS else line[: DESCRIPTION_CHARS - 1] + "…"
