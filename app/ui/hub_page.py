"""The Hub page: search GGUF repositories, pick a quantization by size and fit, and the download queue
with progress, pause / resume / cancel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.ui.formatting import format_bytes
from app.ui.untrusted import escape, plain, tooltip

if TYPE_CHECKING:
    from app.core.downloads import DownloadStatus
    from app.core.hub import RepoDetails, RepoSummary
    from app.core.hub_files import QuantOption

RepoRole = Qt.ItemDataRole.UserRole + 1
OptionRole = Qt.ItemDataRole.UserRole + 2
FIT_LABELS = {"fits": "Fits", "tight": "Tight", "too_big": "Too big"}


def _count(value: int) -> str:
    if value >= 1_000_000:
        return f"{value / 1e6:.1f}M"
    if value >= 1_000:
        return f"{value / 1e3:.1f}k"
    return str(value)


class DownloadRow(QFrame):
    """One queued model: name, state line, progress bar and the buttons its state allows."""

    def __init__(self, item_id: str, page: HubPage) -> None:
        super().__init__(page)
        self.item_id = item_id
        self.setObjectName("Card")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        layout.setSpacing(4)
        top = QHBoxLayout()
        self.name = QLabel(self)
        self.name.setTextFormat(Qt.TextFormat.RichText)  # our markup; every name in it is escaped
        self.state = plain(QLabel(self))
        self.state.setObjectName("Muted")
        top.addWidget(self.name, 1)
        top.addWidget(self.state)
        self.pause = QPushButton("Pause", self)
        self.resume = QPushButton("Resume", self)
        self.cancel = QPushButton("Cancel", self)
        self.remove = QPushButton("Remove", self)
        for button, signal in (
            (self.pause, page.pause_requested),
            (self.resume, page.resume_requested),
            (self.cancel, page.cancel_requested),
            (self.remove, page.remove_requested),
        ):
            button.setProperty("item_id", item_id)
            button.clicked.connect(self._relay(signal))
            top.addWidget(button)
        layout.addLayout(top)
        self.bar = QProgressBar(self)
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        layout.addWidget(self.bar)

    def _relay(self, signal: Any) -> Any:
        item_id = self.item_id
        return lambda: signal.emit(item_id)  # GUI thread to GUI thread: a lambda is safe here

    def update_status(self, status: DownloadStatus) -> None:
        state = str(status.state)
        self.name.setText(
            f"<b>{escape(status.name)}</b> &nbsp;<span>{escape(status.quant)}</span> &nbsp;· {escape(status.repo_id)}"
        )
        line = f"{format_bytes(status.done_bytes)} of {format_bytes(status.total_bytes)}"
        if state == "running" and status.speed_bps:
            line += f" · {format_bytes(status.speed_bps)}/s"
            if status.eta_seconds:
                line += f" · {_eta(status.eta_seconds)} left"
        elif state == "done":
            line = "Downloaded · in your library"
        elif status.error:
            line = f"{state.capitalize()}: {status.error}"
        else:
            line += f" · {state}"
        self.state.setText(line)
        self.state.setToolTip(tooltip(status.message or status.error or ""))
        self.bar.setValue(int(status.fraction * 1000))
        self.bar.setVisible(state != "done")
        self.pause.setVisible(state in ("queued", "running"))
        self.resume.setVisible(state in ("paused", "failed"))
        self.cancel.setVisible(state in ("queued", "running", "paused", "failed"))
        self.remove.setVisible(state in ("done", "cancelled"))


def repo_page(details: RepoDetails) -> QUrl | None:
    """The repository's page on the Hub, when details.url is one: http(s), on a host, and its path exactly
    /owner/name. Anything else (another scheme, a file, a query) is never opened."""
    url = QUrl(details.url, QUrl.ParsingMode.StrictMode)
    if not url.isValid() or url.scheme().lower() not in ("http", "https") or not url.host():
        return None
    if url.userInfo() or url.hasQuery() or url.hasFragment() or url.path() != f"/{details.repo_id}":
        return None
    return url


def _eta(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class HubPage(QWidget):
    """Signals: search_requested(str), repo_selected(str), download_requested(str repo, object option,
    str revision), pause_requested(str), resume_requested(str), cancel_requested(str), remove_requested(str)."""

    search_requested = Signal(str)
    repo_selected = Signal(str)
    download_requested = Signal(str, object, str)
    pause_requested = Signal(str)
    resume_requested = Signal(str)
    cancel_requested = Signal(str)
    remove_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._details: RepoDetails | None = None
        self._rows: dict[str, DownloadRow] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(28, 20, 28, 16)
        layout.setSpacing(10)
        title = QLabel("Discover models", self)
        title.setObjectName("Heading")
        layout.addWidget(title)
        bar = QHBoxLayout()
        self.query = QLineEdit(self)
        self.query.setPlaceholderText("Search GGUF models on Hugging Face (for example: qwen2.5 instruct)")
        self.query.returnPressed.connect(self._on_search)
        self.search_button = QPushButton("Search", self)
        self.search_button.setObjectName("Primary")
        self.search_button.clicked.connect(self._on_search)
        bar.addWidget(self.query, 1)
        bar.addWidget(self.search_button)
        layout.addLayout(bar)
        self.status = plain(QLabel(self))  # repository names and the Hub's error messages
        self.status.setObjectName("Muted")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        split = QSplitter(Qt.Orientation.Horizontal, self)
        self.results = QListWidget(split)
        self.results.itemClicked.connect(self._on_result)
        self.results.currentItemChanged.connect(self._on_current_result)
        details = QWidget(split)
        details_layout = QVBoxLayout(details)
        details_layout.setContentsMargins(12, 0, 0, 0)
        self.repo_title = QLabel("Pick a repository to see its files.", details)
        self.repo_title.setObjectName("SectionTitle")
        self.repo_title.setWordWrap(True)
        # Rich text for the link, every Hub-provided piece escaped; a click opens only the repository's own
        # page on the Hub (a licence or repo id crafted as a link must never open a file or another site).
        self.repo_title.setTextFormat(Qt.TextFormat.RichText)
        self.repo_title.setOpenExternalLinks(False)
        self.repo_title.linkActivated.connect(self._on_repo_link)
        details_layout.addWidget(self.repo_title)
        self.files_model = QStandardItemModel(0, 4, self)
        self.files_model.setHorizontalHeaderLabels(["Quantization", "Size", "Fit", ""])
        self.files = QTableView(details)
        self.files.setModel(self.files_model)
        self.files.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.files.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.files.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.files.verticalHeader().hide()
        self.files.setShowGrid(False)
        self.files.doubleClicked.connect(self._on_download)
        self.files.selectionModel().selectionChanged.connect(self._update_download_button)
        details_layout.addWidget(self.files, 1)
        self.download_button = QPushButton("Download", details)
        self.download_button.setObjectName("Primary")
        self.download_button.clicked.connect(self._on_download)
        details_layout.addWidget(self.download_button, 0, Qt.AlignmentFlag.AlignRight)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        layout.addWidget(split, 3)

        downloads_title = QLabel("DOWNLOADS", self)
        downloads_title.setObjectName("SectionTitle")
        layout.addWidget(downloads_title)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        holder = QWidget(scroll)
        self.queue_layout = QVBoxLayout(holder)
        self.queue_layout.setContentsMargins(0, 0, 0, 0)
        self.queue_empty = QLabel("Nothing downloading.", holder)
        self.queue_empty.setObjectName("Muted")
        self.queue_layout.addWidget(self.queue_empty)
        self.queue_layout.addStretch(1)
        scroll.setWidget(holder)
        layout.addWidget(scroll, 2)
        self._update_download_button()

    # ---- search and details -----------------------------------------------------------------------------------
    def _on_search(self) -> None:
        self.status.setText("Searching…")
        self.search_button.setEnabled(False)
        self.search_requested.emit(self.query.text().strip())

    def set_results(self, repos: Sequence[RepoSummary]) -> None:
        self.search_button.setEnabled(True)
        self.results.clear()
        for repo in repos:
            gated = "  · gated" if repo.gated else ""
            item = QListWidgetItem(f"{repo.repo_id}\n↓ {_count(repo.downloads)}   ♥ {_count(repo.likes)}{gated}")
            item.setData(RepoRole, repo.repo_id)
            self.results.addItem(item)
        self.status.setText(f"{len(repos)} repositories" if repos else "No GGUF repositories found.")

    def set_error(self, message: str) -> None:
        self.search_button.setEnabled(True)
        self.status.setText(message)

    def _on_result(self, item: QListWidgetItem) -> None:
        repo = item.data(RepoRole)
        if repo and (self._details is None or self._details.repo_id != repo):
            self.repo_title.setText(escape(f"{repo} — loading files…"))
            self.files_model.removeRows(0, self.files_model.rowCount())
            self.repo_selected.emit(repo)

    def _on_current_result(self, current: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        if current is not None:
            self._on_result(current)

    def set_details(self, details: RepoDetails, recommended: QuantOption | None) -> None:
        self._details = details
        license_text = f" · {details.license}" if details.license else ""
        gated = " · gated: accept its terms on the Hub and add a token in Settings" if details.gated else ""
        link = f'<a href="#repo">{escape(details.repo_id)}</a>' if repo_page(details) else escape(details.repo_id)
        self.repo_title.setText(link + escape(license_text + gated))
        self.files_model.removeRows(0, self.files_model.rowCount())
        for option in details.options:
            if option.projector:
                continue
            mark = "Recommended" if recommended is not None and option.name == recommended.name else ""
            if not option.complete:
                mark = "Incomplete on the Hub"
            cells = [
                QStandardItem(option.quant if option.quant != "?" else option.name),
                QStandardItem(format_bytes(option.size)),
                QStandardItem(FIT_LABELS.get(str(option.fit), str(option.fit))),
                QStandardItem(mark),
            ]
            for cell in cells:
                cell.setData(option, OptionRole)
                cell.setToolTip(tooltip(option.name))
            self.files_model.appendRow(cells)
            if mark == "Recommended":
                self.files.selectRow(self.files_model.rowCount() - 1)
        header = self.files.horizontalHeader()
        for column in range(4):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        if not self.files_model.rowCount():
            self.status.setText(f"{details.repo_id} has no GGUF model files.")
        self._update_download_button()

    def set_details_error(self, message: str) -> None:
        self._details = None
        self.repo_title.setText(escape(message))

    def _on_repo_link(self, _href: str) -> None:
        url = repo_page(self._details) if self._details is not None else None
        if url is not None:
            QDesktopServices.openUrl(url)

    def selected_option(self) -> QuantOption | None:
        rows = self.files.selectionModel().selectedRows()
        return rows[0].data(OptionRole) if rows else None

    def select_quant(self, quant: str) -> bool:
        for row in range(self.files_model.rowCount()):
            option = self.files_model.item(row, 0).data(OptionRole)
            if option.quant == quant:
                self.files.selectRow(row)
                return True
        return False

    def _update_download_button(self) -> None:
        option = self.selected_option()
        self.download_button.setEnabled(option is not None and option.complete)
        if option is not None:
            self.download_button.setText(f"Download {option.quant} ({format_bytes(option.size)})")
        else:
            self.download_button.setText("Download")

    def _on_download(self) -> None:
        option = self.selected_option()
        if option is not None and self._details is not None and option.complete:
            self.download_requested.emit(self._details.repo_id, option, self._details.sha or "main")

    # ---- the queue ----------------------------------------------------------------------------------------------
    def set_downloads(self, statuses: Sequence[DownloadStatus]) -> None:
        seen = set()
        for status in statuses:
            seen.add(status.id)
            row = self._rows.get(status.id)
            if row is None:
                row = DownloadRow(status.id, self)
                self._rows[status.id] = row
                self.queue_layout.insertWidget(0, row)
            row.update_status(status)
        for item_id in set(self._rows) - seen:
            self._rows.pop(item_id).deleteLater()
        self.queue_empty.setVisible(not self._rows)

    def row(self, item_id: str) -> DownloadRow | None:
        return self._rows.get(item_id)
