"""The model bar above the chat: pick a library model (name, size, quant, context, fit), Load / Eject,
load progress, and load errors shown right there; below the library, each server's models under the
server's name, marked "remote" (Use sends the chat there)."""

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
    from app.core.load_policy import FitSummary

PathRole = Qt.ItemDataRole.UserRole + 1
RemoteRole = Qt.ItemDataRole.UserRole + 2  # (server, model id) of a remote row
COLUMNS = ("Model", "Params", "Quant", "Size", "Context", "Fit")


def entry_cells(entry: LibraryEntry, fit: FitSummary | None) -> list[str]:
    info = entry.info
    assert info is not None
    return [
        entry.display_name,
        info.size_label or format_params(info.parameters),
        info.file_type,
        format_bytes(entry.size_bytes),
        format_context(info.context_length),
        fit.label if fit is not None else "",
    ]


class ModelPicker(QWidget):
    """Signals: load_requested(str path), eject_requested(), remote_requested(str server, str model)."""

    load_requested = Signal(str)
    eject_requested = Signal()
    remote_requested = Signal(str, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("TopBar")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self._loaded_path = ""
        self._loading_path = ""
        self._entries: list[LibraryEntry] = []
        self._fits: dict[str, FitSummary] = {}
        self._remote: dict[str, tuple[list[str], str]] = {}  # server -> (model ids, why they are missing)
        self._remote_in_use: tuple[str, str] | None = None
        self._local_state = ""  # what the loaded model's summary says
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
    def set_entries(self, entries: Sequence[LibraryEntry], fits: dict[str, FitSummary]) -> None:
        """Usable models only (broken files are listed on the Models page with their reason)."""
        self._entries, self._fits = list(entries), dict(fits)
        self._rebuild()

    def set_remote(self, server: str, models: Sequence[str], error: str = "") -> None:
        """A server's models (or why they cannot be listed), shown under its name after the library."""
        self._remote[server] = (list(models), error)
        self._rebuild()

    def set_servers(self, names: Sequence[str]) -> None:
        """The configured servers: rows of servers no longer configured go away."""
        self._remote = {name: self._remote.get(name, ([], "Listing models…")) for name in names}
        self._rebuild()

    def _rebuild(self) -> None:
        remote = self.selected_remote()
        selected = self.selected_path() or ("" if remote else self._loaded_path)
        self.combo.blockSignals(True)
        self.model.removeRows(0, self.model.rowCount())
        entries, fits = self._entries, self._fits
        for entry in entries:
            if not entry.ok or (entry.info is not None and entry.info.is_adapter):
                continue
            fit = fits.get(str(entry.path))
            cells = [QStandardItem(text) for text in entry_cells(entry, fit)]
            for cell in cells:
                cell.setData(str(entry.path), PathRole)
                cell.setEditable(False)
            cells[0].setToolTip(tooltip(str(entry.path)))
            if fit is not None:
                cells[-1].setToolTip(fit.tooltip)
            self.model.appendRow(cells)
        self._append_remote_rows()
        self.combo.blockSignals(False)
        if remote is not None:
            self.select_remote(*remote)
        else:
            self.select(selected)
        if self.combo.currentIndex() < 0 and self.model.rowCount():
            self.combo.setCurrentIndex(next((r for r in range(self.model.rowCount()) if self._selectable(r)), -1))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self._update_buttons()

    def _append_remote_rows(self) -> None:
        for server, (models, error) in sorted(self._remote.items(), key=lambda item: item[0].lower()):
            header = [QStandardItem("") for _ in COLUMNS]
            header[0].setText(f"{server} — remote server" + (f": {error}" if error else ""))
            header[0].setToolTip(tooltip(error or f"Models offered by the server {server}"))  # a server's answer
            for cell in header:
                cell.setFlags(Qt.ItemFlag.NoItemFlags)  # a heading, not a choice
            self.model.appendRow(header)
            for model in models:
                # The server's name is in the text too: the closed picker shows only this cell.
                cells = [QStandardItem(text) for text in (f"{model} · {server}", "", "", "", "", "remote")]
                for cell in cells:
                    cell.setData((server, model), RemoteRole)
                    cell.setEditable(False)
                cells[0].setToolTip(tooltip(f"{model} on {server} (the server applies its own chat template)"))
                self.model.appendRow(cells)

    def _selectable(self, row: int) -> bool:
        return bool(self.model.item(row, 0).flags() & Qt.ItemFlag.ItemIsEnabled)

    def select(self, path: str) -> None:
        for row in range(self.model.rowCount()):
            if self.model.item(row, 0).data(PathRole) == path:
                self.combo.setCurrentIndex(row)
                return

    def select_remote(self, server: str, model: str) -> bool:
        for row in range(self.model.rowCount()):
            if self.model.item(row, 0).data(RemoteRole) == (server, model):
                self.combo.setCurrentIndex(row)
                return True
        return False

    def selected_path(self) -> str:
        row = self.combo.currentIndex()
        if row < 0 or row >= self.model.rowCount():
            return ""
        path = self.model.item(row, 0).data(PathRole)
        return str(path) if path else ""

    def selected_remote(self) -> tuple[str, str] | None:
        """(server, model id) when a remote model is selected."""
        row = self.combo.currentIndex()
        if row < 0 or row >= self.model.rowCount():
            return None
        value = self.model.item(row, 0).data(RemoteRole)
        return (str(value[0]), str(value[1])) if value else None

    def remote_rows(self, server: str) -> list[str]:
        """The model ids listed under server (for tests and the app)."""
        models, _ = self._remote.get(server, ([], ""))
        return list(models)

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
        self._local_state = summary
        self.progress.hide()
        self.error.hide()
        self.state.setText(self._remote_state() or summary)
        self.select(path)
        self._update_buttons()

    def set_unloaded(self) -> None:
        self._loading_path = ""
        self._loaded_path = ""
        self.progress.hide()
        self.state.setText(self._remote_state())
        self._update_buttons()

    def set_remote_in_use(self, target: tuple[str, str] | None) -> None:
        """The remote model the chat is sent to (None: the loaded model)."""
        self._remote_in_use = target
        if target is not None:
            self.select_remote(*target)
        if not self._loading_path:
            self.state.setText(self._remote_state() or self._local_state)
        self._update_buttons()

    def _remote_state(self) -> str:
        target = self._remote_in_use
        return f"Remote: {target[1]} on {target[0]}" if target else ""

    def set_error(self, message: str) -> None:
        self._loading_path = ""
        self.progress.hide()
        self.state.setText("")
        self.error.setText(f"Could not load the model: {message}")
        self.error.show()
        self._update_buttons()

    def _update_buttons(self) -> None:
        remote = self.selected_remote()
        if remote is not None:
            self.load_button.setText("Use")
            self.load_button.setEnabled(remote != self._remote_in_use)
            self.eject_button.setEnabled(bool(self._loaded_path) or bool(self._loading_path))
            return
        selected = self.selected_path()
        loading = bool(self._loading_path)
        self.load_button.setEnabled(bool(selected) and not loading and selected != self._loaded_path)
        self.load_button.setText("Reload" if selected and selected == self._loaded_path else "Load")
        self.eject_button.setEnabled(bool(self._loaded_path) or loading)
        self.eject_button.setText("Cancel" if loading else "Eject")

    def _on_load(self) -> None:
        remote = self.selected_remote()
        if remote is not None:
            self.remote_requested.emit(*remote)
            return
        path = self.selected_path()
        if path:
            self.load_requested.emit(path)
