"""The Models page: every GGUF in the library (broken ones with their reason; LoRA adapters listed under the
bases they fit), import by dialog or by dropping .gguf files (a dropped PEFT adapter folder gets the command
that converts it), open the folder, load, delete."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.core.lora import peft_adapter, place_adapters
from app.ui import theme
from app.ui.formatting import format_bytes, format_context, format_params
from app.ui.untrusted import plain, tooltip

if TYPE_CHECKING:
    from app.core.library import LibraryEntry
    from app.core.load_policy import FitSummary
    from app.core.lora import PeftAdapter

PathRole = Qt.ItemDataRole.UserRole + 1
SortRole = Qt.ItemDataRole.UserRole + 2  # the Model column sorts adapters right under their base
AdviceRole = Qt.ItemDataRole.UserRole + 3  # what to tell the user when the row is selected
COLUMNS = ("Model", "Params", "Quant", "Size", "Context", "Fit", "Source", "Status")


def gguf_paths(urls: Sequence[object]) -> list[str]:
    """The local .gguf files among dropped URLs, and PEFT adapter folders (or files in one): the import
    refuses those with the command that converts them, which is what the user needs to hear."""
    paths = []
    for url in urls:
        local = url.toLocalFile() if hasattr(url, "toLocalFile") else str(url)
        if not local:
            continue
        if (local.lower().endswith(".gguf") and Path(local).is_file()) or peft_adapter(local) is not None:
            paths.append(local)
    return paths


class ModelsPage(QWidget):
    """Signals: import_requested(list), load_requested(str), delete_requested(str), refresh_requested(),
    open_folder_requested()."""

    import_requested = Signal(list)
    load_requested = Signal(str)
    delete_requested = Signal(str)
    refresh_requested = Signal()
    open_folder_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self._entries: dict[str, LibraryEntry] = {}
        self._deletable: dict[str, str | None] = {}
        self._peft: list[PeftAdapter] = []
        self._advice_shown = False
        self._peft_dir = Path()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(28, 20, 28, 16)
        layout.setSpacing(10)
        header = QHBoxLayout()
        title = QLabel("Models", self)
        title.setObjectName("Heading")
        header.addWidget(title)
        header.addStretch(1)
        self.import_button = QPushButton("Import GGUF…", self)
        self.import_button.setObjectName("Primary")
        self.import_button.clicked.connect(self._on_import_dialog)
        folder = QPushButton("Open models folder", self)
        folder.clicked.connect(self.open_folder_requested)
        refresh = QPushButton("Refresh", self)
        refresh.clicked.connect(self.refresh_requested)
        for button in (refresh, folder, self.import_button):
            header.addWidget(button)
        layout.addLayout(header)
        self.summary = plain(QLabel("Scanning…", self))
        self.summary.setObjectName("Muted")
        layout.addWidget(self.summary)

        self.model = QStandardItemModel(0, len(COLUMNS), self)
        self.model.setHorizontalHeaderLabels(list(COLUMNS))
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        # Headers aligned as their cells are (left), so each title stands over its values.
        self.table.horizontalHeader().setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        # Qt's default indicator is descending: start with names A to Z (each base's adapters under it).
        self.table.horizontalHeader().setSortIndicator(0, Qt.SortOrder.AscendingOrder)
        self.table.setSortingEnabled(True)
        self.table.doubleClicked.connect(self._on_load)
        self.table.selectionModel().selectionChanged.connect(self._update_buttons)
        layout.addWidget(self.table, 1)

        self.progress_label = plain(QLabel(self))
        self.progress_label.setObjectName("Muted")
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        for widget in (self.progress_label, self.progress):
            widget.hide()
            layout.addWidget(widget)
        self.message = plain(QLabel(self))  # file names and errors
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)  # commands to copy
        self.message.hide()
        layout.addWidget(self.message)

        footer = QHBoxLayout()
        hint = QLabel("Drop .gguf files here to add them to your library.", self)
        hint.setObjectName("Muted")
        footer.addWidget(hint, 1)
        self.load_button = QPushButton("Load in chat", self)
        self.load_button.clicked.connect(self._on_load)
        self.delete_button = QPushButton("Delete…", self)
        self.delete_button.clicked.connect(self._on_delete)
        footer.addWidget(self.load_button)
        footer.addWidget(self.delete_button)
        layout.addLayout(footer)
        self._update_buttons()

    # ---- content -------------------------------------------------------------------------------------------
    def set_entries(
        self,
        entries: Sequence[LibraryEntry],
        fits: dict[str, FitSummary],
        deletable: dict[str, str | None],
        folder: str,
    ) -> None:
        """Show the library. deletable: path -> None when Hearth may delete it, else the reason it will not.
        LoRA adapters are listed under each base they fit (architecture and tensor shapes checked); one that
        fits none comes last, with the reason."""
        self._entries = {str(e.path): e for e in entries}
        self._deletable = dict(deletable)
        self.table.setSortingEnabled(False)
        self.model.removeRows(0, self.model.rowCount())
        placements = place_adapters(entries)
        under: dict[str, list[LibraryEntry]] = {}
        for placement in placements:
            for base in placement.bases:
                under.setdefault(str(base.path), []).append(placement.adapter)
        for entry in entries:
            if entry.info is not None and entry.info.is_adapter:
                continue
            group = f"{entry.display_name.lower()}\x00{entry.path}"
            self._append(entry, fits, group)
            for adapter in under.get(str(entry.path), []):
                self._append(adapter, fits, f"{group}\x01{adapter.display_name.lower()}", base=entry)
        for placement in placements:
            if not placement.bases:
                self._append(
                    placement.adapter, fits, "\uffff" + placement.adapter.display_name.lower(), reason=placement.reason
                )
        self._append_peft()
        self.model.setSortRole(SortRole)  # by name: each base's adapters right under it
        self.table.setSortingEnabled(True)  # re-sorts by the column the user chose
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        broken = sum(1 for e in entries if not e.ok)
        usable = len(entries) - broken
        text = f"{usable} model{'s' if usable != 1 else ''}"
        if broken:
            text += f" · {broken} unusable file{'s' if broken != 1 else ''}"
        self.summary.setText(f"{text} · models folder: {folder}")
        self._update_buttons()

    def _append(
        self,
        entry: LibraryEntry,
        fits: dict[str, FitSummary],
        group: str,
        *,
        base: LibraryEntry | None = None,
        reason: str = "",
    ) -> None:
        path = str(entry.path)
        fit = fits.get(path)
        advice = ""
        if entry.ok and entry.info is not None:
            info = entry.info
            if base is not None:
                status = f"LoRA adapter for {base.display_name}"
                advice = f"{entry.path.name} fits {base.display_name}: add it under Model in an assistant's settings."
            elif info.is_adapter:
                status = "LoRA adapter: fits no model here" if reason else "LoRA adapter"
                advice = f"{entry.path.name} fits no model in your library: {reason}" if reason else ""
            else:
                status = "Ready"
            name = f"    ↳ {entry.display_name}" if base is not None else entry.display_name
            cells = [
                name,
                info.size_label or format_params(info.parameters),
                info.file_type,
                format_bytes(entry.size_bytes),
                "" if info.is_adapter else format_context(info.context_length),
                fit.label if fit is not None and not info.is_adapter else "",
                entry.source.value,
                status,
            ]
        else:
            cells = [entry.path.name, "", "", format_bytes(entry.size_bytes), "", "", entry.source.value]
            cells.append(f"Unusable: {entry.error}")
        row = [QStandardItem(text) for text in cells]
        colour = QColor(theme.current().error if not entry.ok else theme.current().muted)
        for index, cell in enumerate(row):
            cell.setData(path, PathRole)
            cell.setData(group if index == 0 else cell.text().lower(), SortRole)
            cell.setData(advice, AdviceRole)
            cell.setToolTip(tooltip(path if index == 0 else (advice or cell.text())))
            if not entry.ok or (entry.info is not None and entry.info.is_adapter and base is None):
                cell.setForeground(colour)
        if fit is not None and entry.info is not None and not entry.info.is_adapter:
            row[COLUMNS.index("Fit")].setToolTip(fit.tooltip)
        self.model.appendRow(row)

    def set_peft_adapters(self, adapters: Sequence[PeftAdapter], models_dir: Path) -> None:
        """PEFT adapter folders found in the library's folders (Library.peft_adapters(), read off the GUI
        thread): listed as needing conversion; selecting one shows the exact command."""
        self._peft = list(adapters)
        self._peft_dir = Path(models_dir)
        for row in reversed(range(self.model.rowCount())):
            if self.model.item(row, 0).data(PathRole).startswith("peft:"):
                self.model.removeRow(row)
        self._append_peft()
        header = self.table.horizontalHeader()
        self.table.sortByColumn(header.sortIndicatorSection(), header.sortIndicatorOrder())

    def _append_peft(self) -> None:
        muted = QColor(theme.current().muted)
        for adapter in self._peft:
            cells = [adapter.name, "", "PEFT", "", "", "", "folder", "LoRA adapter to convert to GGUF"]
            row = [QStandardItem(text) for text in cells]
            advice = adapter.advice(self._peft_dir)
            for index, cell in enumerate(row):
                cell.setData(f"peft:{adapter.folder}", PathRole)
                cell.setData("\uffff\uffff" + adapter.name.lower() if index == 0 else cell.text().lower(), SortRole)
                cell.setData(advice, AdviceRole)
                cell.setToolTip(tooltip(str(adapter.folder) if index == 0 else advice))
                cell.setForeground(muted)
            self.model.appendRow(row)

    def selected_path(self) -> str:
        rows = self.table.selectionModel().selectedRows()
        return str(rows[0].data(PathRole)) if rows else ""

    def select(self, path: str) -> None:
        for row in range(self.model.rowCount()):
            if self.model.item(row, 0).data(PathRole) == path:
                self.table.selectRow(row)
                return

    # ---- feedback ------------------------------------------------------------------------------------------
    def set_import_progress(self, name: str, fraction: float | None) -> None:
        """fraction None hides the bar (import finished or failed)."""
        visible = fraction is not None
        self.progress.setVisible(visible)
        self.progress_label.setVisible(visible)
        self.import_button.setEnabled(not visible)
        if visible:
            self.progress_label.setText(f"Importing {name}… {fraction:.0%}")
            self.progress.setValue(int((fraction or 0) * 1000))

    def show_message(self, text: str, error: bool = False) -> None:
        self.message.setObjectName("Error" if error else "Muted")
        self.message.style().unpolish(self.message)
        self.message.style().polish(self.message)
        self.message.setText(text)
        self.message.setVisible(bool(text))

    # ---- events --------------------------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        path = self.selected_path()
        rows = self.table.selectionModel().selectedRows()
        advice = str(rows[0].data(AdviceRole) or "") if rows else ""
        if advice:
            self.show_message(advice, error=path.startswith("peft:") or "fits no model" in advice)
        elif self._advice_shown:
            self.show_message("")
        self._advice_shown = bool(advice)
        entry = self._entries.get(path)
        usable = entry is not None and entry.ok and not (entry.info is not None and entry.info.is_adapter)
        self.load_button.setEnabled(usable)
        reason = self._deletable.get(path) if entry is not None else "Select a model first"
        self.delete_button.setEnabled(entry is not None and reason is None)
        self.delete_button.setToolTip(reason or "Delete the model's files from disk")

    def _on_load(self) -> None:
        path = self.selected_path()
        entry = self._entries.get(path)
        if entry is not None and entry.ok:
            self.load_requested.emit(path)

    def _on_delete(self) -> None:
        path = self.selected_path()
        if path:
            self.delete_requested.emit(path)

    def _on_import_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Import GGUF models", str(Path.home()), "GGUF models (*.gguf)")
        if files:
            self.import_requested.emit(files)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if gguf_paths(event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = gguf_paths(event.mimeData().urls())
        if paths:
            event.acceptProposedAction()
            self.import_requested.emit(paths)
