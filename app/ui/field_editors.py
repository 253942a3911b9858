"""Editors for declared settings (app/core/fields.py): the settings dialog and the chat-settings panel build
their load and sampling rows from these, so a range, a choice or "auto" is never spelled in a widget."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QIntValidator
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QSizePolicy,
    QSpinBox,
    QWidget,
)

from app.core.errors import HearthError
from app.core.fields import Field

# Numbers offered in the list of a field with named values (the user may type any other allowed number).
SUGGESTIONS: dict[str, tuple[int, ...]] = {
    "n_ctx": (2048, 4096, 8192, 16384, 32768, 65536, 131072),
    "n_gpu_layers": (),
    "n_threads": (1, 2, 4, 6, 8, 12, 16),
}


class FieldEditor(QWidget):
    """One field: a combo box for choices; for a number with named values ("Auto", "All", "Model's own") an
    editable combo box listing them and common numbers (any allowed number can be typed); a spin box for
    other numbers; a line edit for an optional number (a seed).

    Signals:
        changed(): the user changed the value (not emitted by set_value).
    """

    changed = Signal()

    def __init__(self, field: Field, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.field = field
        self._quiet = False
        self._shown: Any = field.default
        self.combo: QComboBox | None = None
        self.spin: QAbstractSpinBox | None = None
        self.line: QLineEdit | None = None
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        self.setToolTip(field.help)
        if field.choices:
            self.combo = QComboBox(self)
            for choice in field.choices:
                self.combo.addItem(choice.label, choice.stored)
            self.combo.currentIndexChanged.connect(self._on_edit)
            layout.addWidget(self.combo)
        elif field.optional:
            self.line = QLineEdit(self)
            self.line.setPlaceholderText("random")
            self.line.setValidator(QIntValidator(int(field.minimum or 0), min(int(field.maximum or 0), 2**31 - 1)))
            self.line.editingFinished.connect(self._on_edit)
            layout.addWidget(self.line)
        elif field.special:
            self.combo = QComboBox(self)
            self.combo.setEditable(True)
            self.combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
            for choice in field.special:
                self.combo.addItem(choice.label, choice.stored)
            for number in SUGGESTIONS.get(field.name, ()):
                self.combo.addItem(f"{number}", number)
            self.combo.activated.connect(self._on_chosen)
            self.combo.lineEdit().editingFinished.connect(self._on_typed)
            layout.addWidget(self.combo)
        else:
            self.spin = self._make_spin()
            layout.addWidget(self.spin, 1)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.set_value(field.default)

    def _make_spin(self) -> QAbstractSpinBox:
        field = self.field
        if field.kind is float:
            box: QAbstractSpinBox = QDoubleSpinBox(self)
            box.setDecimals(field.decimals)
            box.setRange(field.minimum or 0.0, field.maximum or 0.0)
            box.setSingleStep(field.step)
            box.valueChanged.connect(self._on_edit)
        else:
            box = QSpinBox(self)
            box.setRange(int(field.minimum or 0), min(int(field.maximum or 0), 2**31 - 1))
            box.setSingleStep(int(field.step))
            box.valueChanged.connect(self._on_edit)
            if field.multiple_of:
                box.editingFinished.connect(self._round)
        box.setToolTip(field.help)
        return box

    # ---- value (stored form) ---------------------------------------------------------------------------------
    def value(self) -> Any:
        field = self.field
        if self.line is not None:
            text = self.line.text().strip()
            return int(text) if text else None
        if self.combo is not None:
            if field.choices:
                return self.combo.currentData()
            return self._typed() if self._typed() is not None else field.default
        assert self.spin is not None
        return self.spin.value()  # type: ignore[attr-defined]

    def _typed(self) -> Any:
        """The editable combo's text as an allowed stored value, or None when it is not one."""
        assert self.combo is not None
        try:
            return self.field.validate(self.field.parse(self.combo.currentText()))
        except HearthError:
            return None

    def set_value(self, stored: Any) -> None:
        """Show a value without emitting changed (an unknown value shows the field's default)."""
        self._quiet = True
        try:
            field = self.field
            if field.choices and self.combo is not None:
                index = self.combo.findData(stored)
                self.combo.setCurrentIndex(index if index >= 0 else max(0, self.combo.findData(field.default)))
            elif self.line is not None:
                self.line.setText("" if stored is None else str(stored))
            elif self.combo is not None:
                label = next((c.label for c in field.special if c.stored == stored), None)
                self._shown = stored
                self.combo.setEditText(label if label is not None else str(stored))
            elif isinstance(stored, (int, float)) and not isinstance(stored, bool):
                self.spin.setValue(stored)  # type: ignore[union-attr]
        finally:
            self._quiet = False

    # ---- edits ------------------------------------------------------------------------------------------------
    def _on_typed(self) -> None:
        """A number typed into the combo: kept if allowed (rounded to the step), else the last value back."""
        value = self._typed()
        if value is None and self.field.multiple_of:
            try:
                number = int(self.field.parse(self.combo.currentText()))  # type: ignore[union-attr]
                step = self.field.multiple_of
                value = self.field.validate(max(step, round(number / step) * step))
            except (HearthError, ValueError, TypeError):
                value = None
        previous = self._shown
        self.set_value(previous if value is None else value)
        if value is not None and value != previous:
            self._on_edit()

    def _on_chosen(self) -> None:
        """An entry picked from the list (a named value or a suggested number)."""
        value = self._typed()
        if value is not None and value != self._shown:
            self._shown = value
            self._on_edit()

    def _round(self) -> None:
        step = self.field.multiple_of
        value = self.spin.value()  # type: ignore[union-attr]
        if step and value % step:
            self.spin.setValue(max(step, round(value / step) * step))  # type: ignore[union-attr]

    def _on_edit(self) -> None:
        if not self._quiet:
            self.changed.emit()


def add_rows(form: QFormLayout, fields: tuple[Field, ...], parent: QWidget) -> dict[str, FieldEditor]:
    """One labelled editor per field into form; returns them by field name."""
    editors = {}
    for field in fields:
        editor = FieldEditor(field, parent)
        form.addRow(field.label, editor)
        editors[field.name] = editor
    return editors
