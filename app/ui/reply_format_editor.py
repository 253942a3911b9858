"""The reply-format editor: text, JSON, or JSON matching a schema, with a schema editor checked as you type."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QColor, QTextCharFormat, QTextCursor, QTextFormat
from PySide6.QtWidgets import (
    QButtonGroup,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from app.core.structured import (
    JSON_ANY,
    JSON_SCHEMA,
    REPLY_FORMATS,
    TEXT,
    ReplyFormat,
    SchemaProblem,
    find_schema_problem,
)
from app.ui import theme
from app.ui.untrusted import plain

if TYPE_CHECKING:
    from app.ui.workers import TaskRunner

CHECK_DELAY_MS = 250  # after the last keystroke: typing stays smooth, the verdict still feels immediate
EXAMPLE_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "year": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["title", "year", "tags"],
}
EXPLANATIONS = {
    TEXT: "Replies are free text.",
    JSON_ANY: "Every reply is valid JSON (any shape). Tell the model in the prompt what to put in it.",
    JSON_SCHEMA: "Every reply is JSON that matches this schema: sampling only allows what the schema allows.",
}


class ReplyFormatEditor(QWidget):
    """Choose how replies are shaped; for a schema, edit it with the problem (and its line) shown as you type.

    With a TaskRunner the check runs on its pool (a schema of 50 properties takes ~40 ms in jsonschema's
    metaschema check, 500 take ~0.4 s, and the first check imports jsonschema and llama.cpp's converter: ~0.5 s);
    without one it runs here, which suits small schemas and tests. Only the latest check's verdict is shown.

    Signals:
        format_changed(object): the new ReplyFormat (emitted only for a usable format).
        validity_changed(bool): the schema became usable / unusable (the caller disables Save or Send).
    """

    format_changed = Signal(object)
    validity_changed = Signal(bool)

    def __init__(self, parent: QWidget | None = None, tasks: TaskRunner | None = None) -> None:
        super().__init__(parent)
        self._tasks = tasks
        self._generation = 0  # which check's verdict is awaited (older ones are dropped)
        self._pending = False
        self._quiet = False
        self._valid = True
        self._problem: str | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        row = QHBoxLayout()
        self.kinds = QButtonGroup(self)
        self.buttons: dict[str, QRadioButton] = {}
        for kind, label in REPLY_FORMATS.items():
            button = QRadioButton(label, self)
            button.setObjectName(f"ReplyFormat_{kind}")
            self.kinds.addButton(button)
            self.buttons[kind] = button
            row.addWidget(button)
        row.addStretch(1)
        layout.addLayout(row)
        self.explanation = plain(QLabel(self))
        self.explanation.setObjectName("Muted")
        self.explanation.setWordWrap(True)
        layout.addWidget(self.explanation)

        self.schema = QPlainTextEdit(self)
        self.schema.setFont(theme.mono_font())
        self.schema.setPlaceholderText('{"type": "object", "properties": {"answer": {"type": "string"}}}')
        self.schema.setTabChangesFocus(True)
        self.schema.setMinimumHeight(160)
        self.schema.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        layout.addWidget(self.schema, 1)
        self.problem_label = plain(QLabel(self))  # quotes the schema
        self.problem_label.setObjectName("Error")
        self.problem_label.setWordWrap(True)
        self.problem_label.hide()
        layout.addWidget(self.problem_label)
        tools = QHBoxLayout()
        self.status = plain(QLabel(self))
        self.status.setObjectName("Muted")
        tools.addWidget(self.status, 1)
        self.tidy_button = QPushButton("Tidy", self)
        self.tidy_button.setToolTip("Indent the schema")
        self.tidy_button.clicked.connect(self._on_tidy)
        self.example_button = QPushButton("Example", self)
        self.example_button.setToolTip("Start from an example schema")
        self.example_button.clicked.connect(self._on_example)
        tools.addWidget(self.tidy_button)
        tools.addWidget(self.example_button)
        layout.addLayout(tools)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(CHECK_DELAY_MS)
        self._timer.timeout.connect(self.check_now)
        self.kinds.buttonToggled.connect(self._on_kind)
        self.schema.textChanged.connect(self._on_schema_edited)
        self.set_value(ReplyFormat())

    # ---- state ------------------------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return next((k for k, b in self.buttons.items() if b.isChecked()), TEXT)

    def is_valid(self) -> bool:
        return self._valid

    def problem(self) -> str | None:
        """The schema's problem as last checked (None when usable or not a schema format)."""
        return self._problem

    def value(self) -> ReplyFormat | None:
        """The format as edited, or None while the schema is unusable (an edit not yet checked is checked now)."""
        if self._timer.isActive() or self._pending:
            self._check_here(emit=True)
        return self._checked_value()

    def _checked_value(self) -> ReplyFormat | None:
        """The format from the fields as last checked."""
        if self.kind != JSON_SCHEMA:
            return ReplyFormat(self.kind)
        if not self._valid:
            return None
        return ReplyFormat(JSON_SCHEMA, json.loads(self.schema.toPlainText()))

    def set_value(self, reply_format: ReplyFormat) -> None:
        """Show a format (no signals)."""
        self._quiet = True
        self.buttons.get(reply_format.kind, self.buttons[TEXT]).setChecked(True)
        if reply_format.kind == JSON_SCHEMA and reply_format.schema is not None:
            self.schema.setPlainText(json.dumps(reply_format.schema, indent=2, ensure_ascii=False))
        self._quiet = False
        self._show_kind()
        self.check_now(emit=False)

    def set_read_only(self, read_only: bool) -> None:
        for button in self.buttons.values():
            button.setEnabled(not read_only)
        self.schema.setReadOnly(read_only)
        self.tidy_button.setEnabled(not read_only)
        self.example_button.setEnabled(not read_only)

    # ---- checking ---------------------------------------------------------------------------------------------
    def check_now(self, emit: bool = True) -> None:
        """Check the schema now (the editor does this CHECK_DELAY_MS after the last keystroke): on the task
        pool when there is one, else here."""
        self._timer.stop()
        if self._tasks is None or not emit or self.kind != JSON_SCHEMA:
            self._check_here(emit)
            return
        self._generation += 1
        generation, text = self._generation, self.schema.toPlainText()
        self._pending = True
        # On a pool thread: computes only (find_schema_problem touches no widget).
        self._tasks.run(lambda: (generation, find_schema_problem(text)), self._on_checked)

    def _on_checked(self, result: tuple[int, SchemaProblem | None]) -> None:
        generation, problem = result
        if generation == self._generation and self._pending:
            self._pending = False
            self._apply(problem, emit=True)

    def _check_here(self, emit: bool) -> None:
        self._timer.stop()
        self._generation += 1  # a background verdict still on its way is now stale
        self._pending = False
        problem = find_schema_problem(self.schema.toPlainText()) if self.kind == JSON_SCHEMA else None
        self._apply(problem, emit)

    def _apply(self, problem: SchemaProblem | None, emit: bool) -> None:
        self._problem = problem.message if problem else None
        shown = self._problem or ""
        if problem is not None and problem.line is not None and not shown.startswith("line "):
            shown = f"Line {problem.line}: {shown}"
        self.problem_label.setText(shown)
        self.problem_label.setVisible(problem is not None)
        self._highlight_line(problem.line if problem else None)
        if self.kind == JSON_SCHEMA:
            self.status.setText("" if problem else "✓ The schema is valid and llama.cpp can enforce it.")
        valid = problem is None
        changed = valid != self._valid
        self._valid = valid
        if emit and changed:
            self.validity_changed.emit(valid)
        if emit and valid and not self._quiet:
            self.format_changed.emit(self._checked_value())

    def _highlight_line(self, line: int | None) -> None:
        selections = []
        if line is not None and self.kind == JSON_SCHEMA:
            block = self.schema.document().findBlockByLineNumber(line - 1)
            if block.isValid():
                selection = QTextEdit.ExtraSelection()
                fmt = QTextCharFormat()
                colour = QColor(theme.current().error)
                colour.setAlpha(40)
                fmt.setBackground(colour)
                fmt.setProperty(QTextFormat.Property.FullWidthSelection, True)
                selection.format = fmt
                selection.cursor = QTextCursor(block)
                selections.append(selection)
        self.schema.setExtraSelections(selections)

    # ---- events -----------------------------------------------------------------------------------------------
    def _show_kind(self) -> None:
        kind = self.kind
        self.explanation.setText(EXPLANATIONS[kind])
        is_schema = kind == JSON_SCHEMA
        for widget in (self.schema, self.tidy_button, self.example_button, self.status):
            widget.setVisible(is_schema)
        if not is_schema:
            self.problem_label.hide()

    def _on_kind(self, _button: QRadioButton, checked: bool) -> None:
        if not checked:
            return
        self._show_kind()
        if self._quiet:
            return
        if self.kind == JSON_SCHEMA and not self.schema.toPlainText().strip():
            self._on_example()
            return
        self.check_now()

    def _on_schema_edited(self) -> None:
        if not self._quiet:
            self._timer.start()

    def _on_tidy(self) -> None:
        try:
            value = json.loads(self.schema.toPlainText())
        except ValueError:
            self.check_now()
            return
        self.schema.setPlainText(json.dumps(value, indent=2, ensure_ascii=False))
        self.check_now()

    def _on_example(self) -> None:
        self.schema.setPlainText(json.dumps(EXAMPLE_SCHEMA, indent=2))
        self.check_now()
