"""The model bar above the chat: pick a library model (name, size, quant, context, fit), Load / Eject,
load progress, and load errors shown right there."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.ui.formatting import format_bytes, format_context, format_params
from app.ui.untrusted import plain, tooltip

if TYPE_CHECKING:
    from app.core.library import LibraryEntry

PathRole = Qt.ItemDataRole.UserRole + 1
COLUMNS = ("Model", "Params", "Quant", "Size", "Context", "Fit")


def entry_cells(entry: LibraryEntry, fit: str) -> list[str]:
    info = entry.info
    assert info is not None
    return [
        entry.display_name,
        info.size_label or format_params(info.parameters),
        info.file_type,
        format_bytes(entry.size_bytes),
        format_context(info.context_length),
        fit,
    ]


class ModelPicker(QWidget):
    """Signals: load_requested(str path), eject_requested(), stop_load_requested()."""

    load_requested = Signal(str)
    eject_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("TopBar")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self._loaded_path = ""
        self._loading_path = ""
        outer = QVBoxLayout(self)
        outer.setContentsMargins(28, 8, 28, 8)
        outer.setSpacing(4)
        row = QHBoxLayout()
        row.setSpacing(8)
        self.model = QStandardItemModel(0, len(COLUMNS), self)
        self.model.setHorizontalHeaderLabels(list(COLUMNS))
        self.combo = QComboBox(self)
        self.combo.setModel(self.model)
        self.combo.setMinimumWidth(280)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setPlaceholderText("Choose a model…")
        table = QTableView(self.combo)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.verticalHeader().hide()
        table.setShowGrid(False)
        table.horizontalHeader().setStretchLastSection(False)
        table.setMinimumWidth(640)
        self.combo.setView(table)
        self.table = table
        self.combo.currentIndexChanged.connect(self._update_buttons)
        self.load_button = QPushButton("Load", self)
        self.load_button.setObjectName("Primary")
        self.load_button.clicked.connect(self._on_load)
        self.eject_button = QPushButton("Eject", self)
        self.eject_button.clicked.connect(self.eject_requested)
        self.state = plain(QLabel(self))
        self.state.setObjectName("Muted")
        row.addWidget(self.combo, 1)
        row.addWidget(self.load_button)
        row.addWidget(self.eject_button)
        row.addWidget(self.state)
        outer.addLayout(row)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.hide()
        outer.addWidget(self.progress)
        self.error = plain(QLabel(self))  # the load error quotes the file
        self.error.setObjectName("Error")
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()
        outer.addWidget(self.error)
        self._update_buttons()

    # ---- content -------------------------------------------------------------------------------------------
    def set_entries(self, entries: Sequence[LibraryEntry], fits: dict[str, str]) -> None:
        """Usable models only (broken files are listed on the Models page with their reason)."""
        selected = self.selected_path() or self._loaded_path
        self.combo.blockSignals(True)
        self.model.removeRows(0, self.model.rowCount())
        for entry in entries:
            if not entry.ok or (entry.info is not None and entry.info.is_adapter):
                continue
            cells = [QStandardItem(text) for text in entry_cells(entry, fits.get(str(entry.path), ""))]
            for cell in cells:
                cell.setData(str(entry.path), PathRole)
                cell.setEditable(False)
            cells[0].setToolTip(tooltip(str(entry.path)))
            self.model.appendRow(cells)
        self.combo.blockSignals(False)
        self.select(selected)
        if self.combo.currentIndex() < 0 and self.model.rowCount():
            self.combo.setCurrentIndex(0)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self._update_buttons()

    def select(self, path: str) -> None:
        for row in range(self.model.rowCount()):
            if self.model.item(row, 0).data(PathRole) == path:
                self.combo.setCurrentIndex(row)
                return

    def selected_path(self) -> str:
        row = self.combo.currentIndex()
        if row < 0 or row >= self.model.rowCount():
            return ""
        return str(self.model.item(row, 0).data(PathRole))

    @property
    def count(self) -> int:
        return self.model.rowCount()

    # ---- state ---------------------------------------------------------------------------------------------
    def set_loading(self, path: str) -> None:
        self._loading_path = path
        self.error.hide()
        self.progress.setValue(0)
        self.progress.show()
        self.state.setText("Loading…")
        self._update_buttons()

    def set_progress(self, fraction: float) -> None:
        self.progress.setValue(int(fraction * 1000))

    def set_loaded(self, path: str, summary: str) -> None:
        self._loading_path = ""
        self._loaded_path = path
        self.progress.hide()
        self.error.hide()
        self.state.setText(summary)
        self.select(path)
        self._update_buttons()

    def set_unloaded(self) -> None:
        self._loading_path = ""
        self._loaded_path = ""
        self.progress.hide()
        self.state.setText("")
        self._update_buttons()

    def set_error(self, message: str) -> None:
        self._loading_path = ""
        self.progress.hide()
        self.state.setText("")
        self.error.setText(f"Could not load the model: {message}")
        self.error.show()
        self._update_buttons()

    def _update_buttons(self) -> None:
        selected = self.selected_path()
        loading = bool(self._loading_path)
        self.load_button.setEnabled(bool(selected) and not loading and selected != self._loaded_path)
        self.load_button.setText("Reload" if selected and selected == self._loaded_path else "Load")
        self.eject_button.setEnabled(bool(self._loaded_path) or loading)
        self.eject_button.setText("Cancel" if loading else "Eject")

    def _on_load(self) -> None:
        path = self.selected_path()
        if path:
            self.load_requested.emit(path)
