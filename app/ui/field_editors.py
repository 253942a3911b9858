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
    QSpinBox,
    QWidget,
)

from app.core.fields import Field

_NUMBER = object()  # the "a number" entry beside named special values


class FieldEditor(QWidget):
    """One field: a combo box for choices; a spin box for numbers, with a combo in front when the field has
    named special values ("Auto", "All", "Model's own"); a line edit for an optional number (a seed).

    Signals:
        changed(): the user changed the value (not emitted by set_value).
    """

    changed = Signal()

    def __init__(self, field: Field, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.field = field
        self._quiet = False
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
        else:
            if field.special:
                self.combo = QComboBox(self)
                for choice in field.special:
                    self.combo.addItem(choice.label, choice.stored)
                self.combo.addItem("Number", _NUMBER)
                self.combo.currentIndexChanged.connect(self._on_special)
                layout.addWidget(self.combo)
            self.spin = self._make_spin()
            layout.addWidget(self.spin, 1)
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
        if field.choices and self.combo is not None:
            return self.combo.currentData()
        if self.line is not None:
            text = self.line.text().strip()
            return int(text) if text else None
        if self.combo is not None and self.combo.currentData() is not _NUMBER:
            return self.combo.currentData()
        assert self.spin is not None
        return self.spin.value()  # type: ignore[attr-defined]

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
            else:
                special = self.combo.findData(stored) if self.combo is not None else -1
                if self.combo is not None:
                    self.combo.setCurrentIndex(special if special >= 0 else self.combo.count() - 1)
                if special < 0 and isinstance(stored, (int, float)) and not isinstance(stored, bool):
                    self.spin.setValue(stored)  # type: ignore[union-attr]
                self._update_spin()
        finally:
            self._quiet = False

    # ---- edits ------------------------------------------------------------------------------------------------
    def _update_spin(self) -> None:
        if self.spin is not None and self.combo is not None:
            self.spin.setVisible(self.combo.currentData() is _NUMBER)

    def _on_special(self) -> None:
        self._update_spin()
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
