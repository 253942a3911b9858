"""Text Hearth did not write (a model's name, a template's error, Hub names, titles, replies) is never
rendered as rich text anywhere in the window: no label, tooltip or message reads a file it names."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QLabel, QListWidget, QWidget
from pytestqt.qtbot import QtBot

from app.core.downloads import DownloadState, DownloadStatus
from app.core.fit import Fit
from app.core.hub import RepoDetails, RepoSummary
from app.core.hub_files import QuantOption, RemoteFile
from app.core.paths import AppPaths
from app.core.store import SearchHit
from app.ui.prompt_dialog import PromptDialog
from tests.support.file_canary import FifoCanary, fifo_canary, hostile_markup
from tests.ui.conftest import load, start_app

MARK = "<img"


def _widgets(root: QWidget) -> Iterator[QWidget]:
    yield root
    yield from root.findChildren(QWidget)


def _tooltips(root: QWidget) -> Iterator[tuple[str, str]]:
    """(where, tooltip) for every widget and every item of every item view under root."""
    for widget in _widgets(root):
        yield widget.objectName() or type(widget).__name__, widget.toolTip()
        if isinstance(widget, QListWidget):
            for row in range(widget.count()):
                yield f"{type(widget).__name__} row {row}", widget.item(row).toolTip()
        elif isinstance(widget, QAbstractItemView) and isinstance(widget.model(), QStandardItemModel):
            model = widget.model()
            for row in range(model.rowCount()):
                for column in range(model.columnCount()):
                    item = model.item(row, column)
                    if item is not None:
                        yield f"{type(widget).__name__} cell {row},{column}", item.toolTip()


def assert_shown_literally(root: QWidget) -> int:
    """Every label showing the hostile text does so as plain text (or escaped); returns how many did."""
    showing = 0
    for label in root.findChildren(QLabel):
        text = label.text()
        if MARK in text:
            showing += 1
            assert label.textFormat() == Qt.TextFormat.PlainText, f"{label.objectName()!r} renders {text[:80]!r}"
        if label.textFormat() != Qt.TextFormat.PlainText and "&lt;img" in text:
            showing += 1
    for where, tip in _tooltips(root):
        assert MARK not in tip, f"the tooltip of {where} would render {tip[:80]!r}"
    return showing


def test_hostile_names_titles_and_errors_are_plain_text_everywhere(
    qtbot: QtBot, paths: AppPaths, tmp_path: Path, make_tiny_model: Callable[..., Path]
) -> None:
    with fifo_canary(tmp_path) as canary:
        evil = hostile_markup(canary)
        model = Path(shutil.copy(make_tiny_model("ui-evil-name.gguf", name=f"Evil {evil}"), paths.models_dir))
        app = start_app(qtbot, paths)
        w = app.window
        load(qtbot, app, model)  # the welcome card now shows the model's general.name
        assert app.engine.model is not None and evil in app.engine.model.info.display_name
        w.welcome.set_status(f"Downloading {evil}")
        w.settings_panel.set_templates(["embedded"], "", evil, f"reason {evil}", f"template error: {evil}")
        w.picker.set_error(evil)
        w.picker.set_remote(f"server {evil}", [f"model {evil}"])  # names a remote server sends back
        w.picker.set_remote("down", [], f"error {evil}")
        w.models_page.show_message(f"Added {evil}")
        w.models_page.set_import_progress(evil, 0.5)
        w.composer.set_notice(evil)
        conversation = app.store.create_conversation(title=f"Title {evil}")
        app.store.add_message(conversation.id, "user", f"![a]({canary.path}) ![b]({canary.url})")
        app.refresh_conversations()
        app.open_conversation(conversation.id)
        w.sidebar.show_undo(conversation.id, evil)
        w.sidebar.set_search_results([SearchHit(conversation.id, evil, 1, "user", f"[{evil}]")])
        _fill_hub_page(app.window.hub_page, evil)
        dialog = PromptDialog(evil, evil, evil, w)
        for page in ("chat", "models", "hub"):
            w.show_page(page)
            w.grab()  # lays out and paints every visible label and the chat view
        dialog.grab()
        qtbot.wait(50)
        assert canary.opened == 0, "a label, tooltip or message read a file named by untrusted text"
        assert assert_shown_literally(w) >= 8
        assert assert_shown_literally(dialog) >= 2
        app.window.close()


def _fill_hub_page(page: QWidget, evil: str) -> None:
    option = QuantOption(f"{evil}-Q4_K_M.gguf", "Q4_K_M", (RemoteFile(f"{evil}-Q4_K_M.gguf", 10),), Fit.FITS)
    page.set_results([RepoSummary(evil, evil, 1, 1, None, False, ())])  # type: ignore[attr-defined]
    details = RepoDetails(evil, "0" * 40, evil, False, False, 1, 1, None, "file:///etc/passwd", (option,))
    page.set_details(details, option)  # type: ignore[attr-defined]
    status = DownloadStatus("x", evil, evil, evil, DownloadState.FAILED, 1, 2, 0.0, None, evil, evil, ())
    page.set_downloads([status])  # type: ignore[attr-defined]
    page.set_error(evil)  # type: ignore[attr-defined]


def test_a_hub_title_link_opens_only_the_repository_page() -> None:
    from app.ui.hub_page import repo_page

    option = QuantOption("m-Q4_K_M.gguf", "Q4_K_M", (RemoteFile("m-Q4_K_M.gguf", 10),), Fit.FITS)

    def details(repo_id: str, url: str) -> RepoDetails:
        return RepoDetails(repo_id, None, None, False, False, 0, 0, None, url, (option,))

    assert repo_page(details("a/b", "https://huggingface.co/a/b")).toString() == "https://huggingface.co/a/b"
    assert repo_page(details("a/b", "http://127.0.0.1:8080/a/b")) is not None
    for url in (
        "file:///home/me/evil.desktop",
        "https://huggingface.co/c/d",
        "https://huggingface.co/a/b?x=1",
        "https://user@huggingface.co/a/b",
        "javascript:alert(1)",
        "smb://host/a/b",
    ):
        assert repo_page(details("a/b", url)) is None, url


def test_clicking_a_licence_crafted_as_a_link_opens_nothing(qtbot: QtBot, monkeypatch) -> None:
    from PySide6.QtGui import QDesktopServices

    from app.ui.hub_page import HubPage

    opened: list[str] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toString()) or True)
    page = HubPage()
    qtbot.addWidget(page)
    option = QuantOption("m-Q4_K_M.gguf", "Q4_K_M", (RemoteFile("m-Q4_K_M.gguf", 10),), Fit.FITS)
    evil = '<a href="file:///tmp/evil.desktop">MIT</a>'
    page.set_details(RepoDetails("a/b", None, evil, False, False, 0, 0, None, "https://hf.co/a/b", (option,)), None)
    assert "file:" not in page.repo_title.text().replace("&quot;file:", "")  # the licence is text
    page.repo_title.linkActivated.emit("file:///tmp/evil.desktop")  # whatever the label reports
    assert opened == ["https://hf.co/a/b"]


@pytest.mark.qt_log_ignore("QFile::at")  # Qt's complaint about reading a pipe: expected here
def test_the_canary_sees_a_rich_label(qtbot: QtBot, tmp_path: Path) -> None:
    """The detector works: a rich-text label with the same markup does open the FIFO."""
    with fifo_canary(tmp_path) as canary:
        label = QLabel()
        qtbot.addWidget(label)
        label.setTextFormat(Qt.TextFormat.RichText)
        label.setText(hostile_markup(canary))
        label.grab()
        qtbot.waitUntil(lambda: _opened(canary), timeout=5000)


def _opened(canary: FifoCanary) -> bool:
    return canary.opened > 0
