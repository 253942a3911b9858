"""The rest of the window, driven as a user would: first run, the Models page, Discover (the Hub), Settings,
and the PySide6 refcount trap. Real widgets offscreen, real tiny GGUF files, the real huggingface_hub
client against the stand-in Hub on 127.0.0.1."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QLabel, QMessageBox, QProgressBar
from pytestqt.qtbot import QtBot

from app.core.paths import AppPaths
from app.core.settings import Settings
from app.ui import theme
from app.ui.app import HearthApp
from app.ui.models_page import COLUMNS
from tests.support.fake_hub import FakeFile, FakeHub, FakeRepo
from tests.ui.conftest import MODEL_NAME, load, start_app

HUB_REPO = "hearth-test/Tiny-Chat-GGUF"
HUB_Q8 = "Tiny-Chat-Q8_0.gguf"
HUB_Q4 = "Tiny-Chat-Q4_K_M.gguf"


def column(name: str) -> int:
    return list(COLUMNS).index(name)


def table_rows(app: HearthApp) -> list[list[str]]:
    model = app.window.models_page.model
    return [[model.item(r, c).text() for c in range(model.columnCount())] for r in range(model.rowCount())]


def answer_next_message_box(button: QMessageBox.StandardButton) -> None:
    """Press a button of the modal question the app is about to ask (QMessageBox.question blocks)."""

    def press() -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            box.button(button).click()
        else:
            QTimer.singleShot(20, press)

    QTimer.singleShot(20, press)


# ---- PySide6 and None's reference count ------------------------------------------------------------------------------
def test_qt_calls_do_not_leak_references_to_none(qtbot: QtBot) -> None:
    """PySide6 6.12.0 on Python 3.11 dropped None's refcount by one per void Qt call until the process
    aborted (PySide6 6.12.0 on Python 3.10/3.11). 20,000 such calls must leave it where it was."""
    label, bar = QLabel(), QProgressBar()
    qtbot.addWidget(label)
    qtbot.addWidget(bar)
    before = sys.getrefcount(None)
    for i in range(10_000):
        label.setText(f"token {i}")  # what streaming and status updates call most
        bar.setValue(i % 100)
    after = sys.getrefcount(None)
    assert abs(after - before) < 100, f"None's refcount moved by {after - before} over 20,000 Qt calls"


# ---- first run ------------------------------------------------------------------------------------------------------
def test_first_run_offers_a_download_and_an_import(qtbot: QtBot, paths: AppPaths) -> None:
    app = start_app(qtbot, paths)  # nothing in the library
    welcome = app.window.welcome
    assert app.window.chat_stack.currentWidget() is welcome
    assert welcome.download.isVisible() and "Download" in welcome.download.text()
    assert welcome.import_button.isVisible() and welcome.browse.isVisible()
    composer = app.window.composer
    assert "Load a model" in composer.hint.text() and composer.hint.objectName() == "Error"
    assert not app.window.picker.load_button.isEnabled()
    qtbot.mouseClick(welcome.browse, Qt.MouseButton.LeftButton)
    assert app.window.page == "hub"
    app.window.close()


# ---- Models page ----------------------------------------------------------------------------------------------------
def test_models_page_lists_broken_files_imports_by_drop_and_deletes(
    qtbot: QtBot, hearth: HearthApp, paths: AppPaths, make_tiny_model: Callable[..., Path]
) -> None:
    hearth.window.show_page("models")
    qtbot.waitUntil(lambda: hearth.window.models_page.model.rowCount() == 1)
    (row,) = table_rows(hearth)
    assert row[column("Model")] == "Tiny Chat" and row[column("Context")] == "4K" and row[-1] == "Ready"
    assert row[column("Fit")]

    (paths.models_dir / "broken.gguf").write_bytes(b"this is not a model" * 100)
    hearth.library.scan()
    qtbot.waitUntil(lambda: hearth.window.models_page.model.rowCount() == 2)
    broken = next(r for r in table_rows(hearth) if r[0] == "broken.gguf")
    assert broken[-1].startswith("Unusable:") and "GGUF" in broken[-1]
    assert "1 unusable file" in hearth.window.models_page.summary.text()

    outside = make_tiny_model("ui-dropped.gguf", name="Dropped Tiny", seed=7)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(outside)), QUrl.fromLocalFile(str(paths.models_dir / "notes.txt"))])
    page = hearth.window.models_page
    args = (QPointF(20, 20).toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton)
    enter = QDragEnterEvent(*args, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(page, enter)
    assert enter.isAccepted()  # the page takes .gguf files
    drop = QDropEvent(
        QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(page, drop)
    qtbot.waitUntil(lambda: any(r[0] == "Dropped Tiny" for r in table_rows(hearth)), timeout=20_000)
    assert "Added ui-dropped.gguf" in hearth.window.models_page.message.text()
    imported = paths.models_dir / "ui-dropped.gguf"
    assert imported.is_file() and outside.is_file()  # copied: the user's own file stays where it was

    page.select(str(imported))
    assert page.delete_button.isEnabled()
    answer_next_message_box(QMessageBox.StandardButton.No)
    qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
    assert imported.is_file()  # "No" keeps it
    answer_next_message_box(QMessageBox.StandardButton.Yes)
    qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not any(r[0] == "Dropped Tiny" for r in table_rows(hearth)), timeout=20_000)
    assert not imported.exists()


def test_a_loaded_model_is_not_deleted(qtbot: QtBot, hearth: HearthApp, paths: AppPaths) -> None:
    load(qtbot, hearth)
    hearth.window.show_page("models")
    page = hearth.window.models_page
    qtbot.waitUntil(lambda: page.model.rowCount() == 1)
    page.select(str(paths.models_dir / MODEL_NAME))
    qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
    assert "Eject the model" in page.message.text() and page.message.isVisible()
    assert (paths.models_dir / MODEL_NAME).is_file()


# ---- Discover (the Hub) ----------------------------------------------------------------------------------------------
@pytest.fixture
def hub(make_tiny_model: Callable[..., Path]) -> Iterator[FakeHub]:
    # About 4.5 MB each: downloads report progress per 1 MiB written, so a hold at 1.5 MB shows some.
    q8 = make_tiny_model("hub-ui-q8.gguf", name="Tiny Chat Hub", seed=11, filler_tokens=8000).read_bytes()
    q4 = make_tiny_model("hub-ui-q4.gguf", name="Tiny Chat Hub", seed=12, filler_tokens=8000).read_bytes()
    with FakeHub([FakeRepo(HUB_REPO, {HUB_Q8: FakeFile(q8), HUB_Q4: FakeFile(q4)}, downloads=42)]) as fake:
        yield fake


def test_discover_search_quants_download_pause_resume_and_cancel(
    qtbot: QtBot, paths: AppPaths, model_path: Path, hub: FakeHub
) -> None:
    Settings(paths.settings_file).set("hub_endpoint", hub.url)
    app = start_app(qtbot, paths)
    app.window.show_page("hub")
    page = app.window.hub_page
    page.query.setText("tiny-chat")
    qtbot.mouseClick(page.search_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.results.count() == 1, timeout=20_000)
    assert HUB_REPO in page.results.item(0).text()
    page.results.setCurrentRow(0)
    qtbot.waitUntil(lambda: page.files_model.rowCount() == 2, timeout=20_000)
    quants = {page.files_model.item(r, 0).text() for r in range(2)}
    assert quants == {"Q8_0", "Q4_K_M"}
    assert all(page.files_model.item(r, 2).text() == "Fits" for r in range(2))  # a 4.5 MB file fits anywhere

    # Q8_0: held mid-file by the stand-in, paused, resumed, finished and in the library.
    hub.fault(HUB_Q8).stall_after = 1_500_000
    assert page.select_quant("Q8_0") and page.download_button.isEnabled()
    qtbot.mouseClick(page.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(page._rows) == 1, timeout=20_000)
    (item_id,) = page._rows
    row = page.row(item_id)
    qtbot.waitUntil(lambda: row.pause.isVisible() and row.bar.value() > 0, timeout=20_000)
    qtbot.mouseClick(row.pause, Qt.MouseButton.LeftButton)
    hub.fault(HUB_Q8).release.set()
    qtbot.waitUntil(lambda: row.resume.isVisible(), timeout=20_000)
    assert "paused" in row.state.text()
    qtbot.mouseClick(row.resume, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: row.state.text().startswith("Downloaded"), timeout=30_000)
    landed = paths.models_dir / HUB_REPO / HUB_Q8  # models/<owner>/<repo>/, as LM Studio lays them out
    assert landed.is_file() and landed.stat().st_size == hub.repos[HUB_REPO].files[HUB_Q8].size
    qtbot.waitUntil(lambda: app.window.picker.count == 2, timeout=20_000)

    # Q4_K_M: cancelled while held; nothing of it is left behind.
    hub.fault(HUB_Q4).stall_after = 1_500_000
    assert page.select_quant("Q4_K_M")
    qtbot.mouseClick(page.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(page._rows) == 2, timeout=20_000)
    second = page.row(next(i for i in page._rows if i != item_id))
    qtbot.waitUntil(lambda: second.cancel.isVisible() and second.bar.value() > 0, timeout=20_000)
    qtbot.mouseClick(second.cancel, Qt.MouseButton.LeftButton)
    hub.fault(HUB_Q4).release.set()
    qtbot.waitUntil(lambda: second.remove.isVisible(), timeout=20_000)
    assert not any(p.name.startswith(HUB_Q4) for p in paths.models_dir.rglob("*"))
    qtbot.mouseClick(second.remove, Qt.MouseButton.LeftButton)  # an update on its way while the window closes
    app.window.close()
    app.window.hub_page.deleteLater()  # as when the window is destroyed after closing
    qtbot.wait(300)  # download events queued before the close must not reach the deleted page
    assert app.engine.violations == 0 and app.tasks.violations == 0


def test_discover_shows_an_unreachable_hub_as_an_error(qtbot: QtBot, hearth: HearthApp) -> None:
    hearth.settings.set("hub_endpoint", "http://127.0.0.1:9")  # nothing listens on the discard port
    hearth.window.show_page("hub")
    page = hearth.window.hub_page
    page.query.setText("mistral")
    qtbot.mouseClick(page.search_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(page.status.text()) and "repositor" not in page.status.text(), timeout=60_000)
    assert page.results.count() == 0 and page.status.text()


# ---- Settings -------------------------------------------------------------------------------------------------------
def test_settings_dialog_saves_applies_and_refuses_bad_values(
    qtbot: QtBot, hearth: HearthApp, paths: AppPaths, tmp_path: Path, make_tiny_model: Callable[..., Path]
) -> None:
    extra = tmp_path / "more-models"
    extra.mkdir()
    (extra / "extra.gguf").write_bytes(make_tiny_model("ui-extra.gguf", name="Extra Tiny", seed=9).read_bytes())

    dialog = hearth.open_settings()
    assert dialog.isVisible()
    dialog.theme.setCurrentIndex(dialog.theme.findData("dark"))
    dialog.folders.addItem(str(extra))  # what "Add folder…" does with the folder the user picked
    dialog.load_defaults["n_ctx"].set_value(8192)
    dialog.conversation_cache.setValue(64)
    dialog.endpoint.setText("ftp://example.invalid")
    ok = dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok)
    qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)
    assert dialog.isVisible() and dialog.error.isVisible() and "endpoint" in dialog.error.text().lower()

    dialog.endpoint.setText("")
    qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)
    assert not dialog.isVisible()
    saved = Settings(paths.settings_file)
    assert saved.get("theme") == "dark" and saved.get("model_folders") == [str(extra)]
    assert saved.get("default_n_ctx") == 8192
    assert saved.get("conversation_cache_mib") == 64 and hearth.state_cache.cap_bytes == 64 * 1024 * 1024
    assert theme.current().name == "dark"
    qtbot.waitUntil(lambda: hearth.window.picker.count == 2, timeout=20_000)  # the new folder was scanned
