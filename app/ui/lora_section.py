"""The chat settings panel's LoRA adapters: the GGUF adapters attached to the selected model, each with a scale.

Only adapters that fit the model are offered (the library's adapters checked with lora_mismatch); a file
picked by hand is checked by the caller, which refuses one that does not fit with the reason (show_error).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.load_config import MAX_LORA_SCALE, LoraAdapter
from app.ui.untrusted import plain, tooltip

PathRole = Qt.ItemDataRole.UserRole + 1


class LoraSection(QWidget):
    """Signals:
    adapters_changed(object): the new tuple of LoraAdapter for the model (after add, remove or a scale change).
    file_chosen(str): the user picked an adapter file by hand (the caller checks it, then add() or show_error()).
    """

    adapters_changed = Signal(object)
    file_chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._quiet = False
        self._offered: list[tuple[str, str, str]] = []  # (path, name, reason it does not fit or '')
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        self.table = QTableWidget(0, 2, self)
        self.table.setObjectName("LoraTable")
        self.table.setHorizontalHeaderLabels(["LoRA adapter", "Scale"])
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setFixedHeight(92)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        layout.addWidget(self.table)
        row = QHBoxLayout()
        self.add_button = QPushButton("Add adapter", self)
        self.menu = QMenu(self.add_button)
        self.menu.setToolTipsVisible(True)
        self.add_button.setMenu(self.menu)
        self.menu.aboutToShow.connect(self._fill_menu)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.clicked.connect(self._on_remove)
        row.addWidget(self.add_button, 1)
        row.addWidget(self.remove_button)
        layout.addLayout(row)
        self.error = plain(QLabel(self))
        self.error.setObjectName("Error")
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()
        layout.addWidget(self.error)
        self._model_name = ""  # the model set_model() last named
        self.hint = plain(QLabel("Adapters apply when the model is (re)loaded.", self))  # names the model
        self.hint.setObjectName("Muted")
        self.hint.setWordWrap(True)
        layout.addWidget(self.hint)
        self.set_model(False)

    # ---- filling in (no signals) ------------------------------------------------------------------------------
    def set_model(self, enabled: bool, name: str = "") -> None:
        """Adapters attach to the model selected in the picker (disabled when none is). A refusal shown for
        one model is cleared when another is selected, not when the library is rescanned."""
        if name != self._model_name:
            self.show_error("")
        self._model_name = name
        self.setEnabled(enabled)
        self.hint.setText(
            f"Adapters for {name} apply when it is (re)loaded." if name else "Select a model to attach adapters."
        )

    def set_offered(self, offered: Sequence[tuple[str, str, str]]) -> None:
        """The library's adapters: (path, name, why it does not fit this model or '')."""
        self._offered = list(offered)

    def set_adapters(self, adapters: Sequence[LoraAdapter]) -> None:
        self._quiet = True
        self.table.setRowCount(0)
        for adapter in adapters:
            self._add_row(adapter)
        self._quiet = False
        self._update_buttons()

    def adapters(self) -> tuple[LoraAdapter, ...]:
        found = []
        for row in range(self.table.rowCount()):
            path = self.table.item(row, 0).data(PathRole)
            box = self.table.cellWidget(row, 1)
            assert isinstance(box, QDoubleSpinBox)
            found.append(LoraAdapter(Path(path), round(box.value(), 2)))
        return tuple(found)

    def show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))

    # ---- edits --------------------------------------------------------------------------------------------------
    def add(self, path: str, scale: float = 1.0) -> None:
        """Attach an adapter (one that was checked to fit); a file already attached is not added twice."""
        if any(str(a.path) == path for a in self.adapters()):
            self.show_error(f"{Path(path).name} is attached already.")
            return
        self._add_row(LoraAdapter(Path(path), scale))
        self.show_error("")
        self._changed()

    def _add_row(self, adapter: LoraAdapter) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        item = QTableWidgetItem(adapter.path.name)
        item.setData(PathRole, str(adapter.path))
        item.setToolTip(tooltip(str(adapter.path)))
        self.table.setItem(row, 0, item)
        box = QDoubleSpinBox(self.table)
        box.setRange(-MAX_LORA_SCALE, MAX_LORA_SCALE)
        box.setSingleStep(0.1)
        box.setDecimals(2)
        box.setValue(adapter.scale)
        box.setToolTip("How strongly the adapter applies: 1 as trained, 0 off, up to 10")
        box.valueChanged.connect(self._changed)
        self.table.setCellWidget(row, 1, box)

    def _fill_menu(self) -> None:
        self.menu.clear()
        attached = {str(a.path) for a in self.adapters()}
        fitting = [(p, n) for p, n, reason in self._offered if not reason and p not in attached]
        for path, name in fitting:
            action = QAction(name, self.menu)
            action.setToolTip(tooltip(path))
            action.triggered.connect(lambda _checked=False, p=path: self.add(p))
            self.menu.addAction(action)
        misfits = [(n, reason) for _, n, reason in self._offered if reason]
        if not fitting:
            self.menu.addAction("No adapter in your library fits this model").setEnabled(False)
        for name, reason in misfits:
            action = self.menu.addAction(f"{name} (does not fit)")
            action.setToolTip(tooltip(reason))
            action.setEnabled(False)
        self.menu.addSeparator()
        self.menu.addAction("Other file…", self._on_browse)

    def _on_browse(self) -> None:
        path = self.ask_path()
        if path:
            self.file_chosen.emit(path)

    def ask_path(self) -> str:
        """The adapter file to check and attach ('' when cancelled); replaced in tests."""
        path, _ = QFileDialog.getOpenFileName(self, "Attach a LoRA adapter", str(Path.home()), "GGUF (*.gguf)")
        return path

    def _on_remove(self) -> None:
        rows = sorted({index.row() for index in self.table.selectedIndexes()}, reverse=True)
        for row in rows:
            self.table.removeRow(row)
        if rows:
            self._changed()

    def _update_buttons(self) -> None:
        self.remove_button.setEnabled(bool(self.table.selectedIndexes()))

    def _changed(self) -> None:
        if not self._quiet:
            self._update_buttons()
            self.adapters_changed.emit(self.adapters())
