"""The main window driven like a user would, over real llama.cpp with a tiny generated model."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, Qt, QThread
from PySide6.QtGui import QGuiApplication
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from app.core.paths import AppPaths
from app.core.store import Store
from app.core.tiny_model import TinyModelSpec, write_tiny_model
from app.ui.app import HearthApp
from app.ui.prompt_dialog import PromptDialog
from tests.ui.conftest import (
    MODEL_NAME,
    click_action,
    load,
    long_replies,
    send_and_wait,
    short_replies,
    start_app,
    type_and_send,
)

pytestmark = pytest.mark.gui


class ThreadRecorder(QObject):
    """Records the thread each signal arrives on (a plain method of a GUI-thread QObject, as the app does)."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[QThread] = []

    def record(self, *_args: object) -> None:
        self.threads.append(QThread.currentThread())


def test_load_send_and_tokens_stream_in(qtbot: QtBot, hearth: HearthApp) -> None:
    window = hearth.window
    assert window.welcome.isVisible() and window.welcome.state == "no-model"
    assert not window.composer.button.isEnabled()
    assert "Load a model" in window.composer.hint.text()
    load(qtbot, hearth)
    assert window.picker.eject_button.isEnabled()
    assert "context 4,096" in window.picker.state.text()
    assert "CPU" in window.status.layers.text()
    long_replies(hearth, 600)
    recorder = ThreadRecorder()
    hearth.engine.reply_chunk.connect(recorder.record)
    hearth.engine.reply_done.connect(recorder.record)
    type_and_send(qtbot, hearth, "Hello there, how are you?")
    assert window.composer.text == ""  # taken by the session
    assert window.composer.button.text() == "Stop"
    qtbot.waitUntil(lambda: len(hearth.chat_model.items) == 2 and len(hearth.chat_model.item(1).content) > 0)
    assert hearth.chat_model.item(1).streaming  # text shows while the reply is still being written
    qtbot.waitUntil(lambda: not hearth.session.generating, timeout=30_000)
    reply = hearth.chat_model.item(1)
    assert not reply.streaming and reply.finish_reason == "length"
    assert reply.generated_tokens == 600 and reply.gen_tps and reply.ttft_ms is not None
    assert "600 tokens" in reply.stats_line() and "tok/s" in reply.stats_line()
    assert window.status.speed.text().endswith("tok/s")
    assert window.status.context.text().startswith("Context ")
    main = QGuiApplication.instance().thread()
    assert recorder.threads and all(thread is main for thread in recorder.threads)
    # The history has both messages, the reply complete with its stats and the exact prompt.
    with Store.open(hearth.paths.history_db) as store:
        messages = store.messages(hearth.session.conversation_id)
        assert [m.role for m in messages] == ["user", "assistant"]
        assert messages[1].content == reply.content and messages[1].complete
        assert "Hello there, how are you?" in (store.prompt_text(messages[1].id) or "")
    assert window.sidebar.list.count() == 2  # the "Today" header and the new chat
    assert window.sidebar.list.item(1).text() == "Hello there, how are you?"


def test_stop_mid_reply_keeps_the_text(qtbot: QtBot, hearth: HearthApp) -> None:
    load(qtbot, hearth)
    long_replies(hearth, 3500)
    type_and_send(qtbot, hearth, "Tell me a long story")
    qtbot.waitUntil(lambda: len(hearth.chat_model.item(1).content) > 20 if hearth.chat_model.rowCount() > 1 else False)
    QTest.keyClick(hearth.window.composer.editor, Qt.Key.Key_Escape)  # Esc stops
    qtbot.waitUntil(lambda: not hearth.session.generating, timeout=10_000)
    reply = hearth.chat_model.item(1)
    assert reply.finish_reason == "cancelled"
    assert reply.generated_tokens is not None and 0 < reply.generated_tokens < 3500
    assert "stopped" in reply.stats_line()
    with Store.open(hearth.paths.history_db) as store:
        saved = store.messages(hearth.session.conversation_id)[1]
        assert saved.complete and saved.finish_reason == "cancelled" and saved.content == reply.content
    # The next message works after a stop.
    short_replies(hearth)
    send_and_wait(qtbot, hearth, "Another one")
    assert hearth.chat_model.item(3).finish_reason == "length"


def test_regenerate_then_switch_branches(qtbot: QtBot, hearth: HearthApp) -> None:
    load(qtbot, hearth)
    short_replies(hearth, seed=1)
    send_and_wait(qtbot, hearth, "First question")
    first = hearth.chat_model.item(1).content
    short_replies(hearth, seed=2)
    click_action(qtbot, hearth, 1, "regenerate")
    assert hearth.session.generating
    qtbot.waitUntil(lambda: not hearth.session.generating, timeout=30_000)
    second = hearth.chat_model.item(1)
    assert second.content != first
    assert (second.sibling_index, second.sibling_count) == (2, 2)
    assert hearth.chat_model.rowCount() == 2
    click_action(qtbot, hearth, 1, "prev")
    shown = hearth.chat_model.item(1)
    assert shown.content == first and (shown.sibling_index, shown.sibling_count) == (1, 2)
    click_action(qtbot, hearth, 1, "next")
    assert hearth.chat_model.item(1).content == second.content
    # The choice is remembered: reopening shows the branch last selected.
    hearth.session.open(hearth.session.conversation_id)
    assert hearth.chat_model.item(1).content == second.content


def test_edit_and_resend_makes_a_branch(qtbot: QtBot, hearth: HearthApp) -> None:
    load(qtbot, hearth)
    short_replies(hearth)
    send_and_wait(qtbot, hearth, "Original question")
    send_and_wait(qtbot, hearth, "Follow-up")
    assert hearth.chat_model.rowCount() == 4
    click_action(qtbot, hearth, 0, "edit")
    composer = hearth.window.composer
    assert composer.editing and composer.text == "Original question" and composer.edit_bar.isVisible()
    composer.editor.setPlainText("Edited question")
    QTest.keyClick(composer.editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not hearth.session.generating, timeout=30_000)
    items = hearth.chat_model.items
    assert [i.role for i in items] == ["user", "assistant"]  # the follow-up stays on the old branch
    assert items[0].content == "Edited question" and (items[0].sibling_index, items[0].sibling_count) == (2, 2)
    assert not composer.editing and not composer.edit_bar.isVisible()
    click_action(qtbot, hearth, 0, "prev")
    assert [i.content for i in hearth.chat_model.items][::2] == ["Original question", "Follow-up"]


def test_edit_can_be_cancelled_with_escape(qtbot: QtBot, hearth: HearthApp) -> None:
    load(qtbot, hearth)
    short_replies(hearth)
    send_and_wait(qtbot, hearth, "Keep me")
    click_action(qtbot, hearth, 0, "edit")
    QTest.keyClick(hearth.window.composer.editor, Qt.Key.Key_Escape)
    assert not hearth.window.composer.editing and hearth.window.composer.text == ""
    send_and_wait(qtbot, hearth, "Next")
    assert [i.content for i in hearth.chat_model.items][::2] == ["Keep me", "Next"]


def test_switch_conversations_search_and_shortcuts(qtbot: QtBot, hearth: HearthApp) -> None:
    load(qtbot, hearth)
    short_replies(hearth)
    send_and_wait(qtbot, hearth, "All about pelicans")
    first = hearth.session.conversation_id
    QTest.keyClick(hearth.window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)  # Ctrl+N
    assert hearth.session.conversation_id == 0 and hearth.chat_model.rowCount() == 0
    assert hearth.window.welcome.isVisible() and hearth.window.welcome.state == "start"
    send_and_wait(qtbot, hearth, "Something about otters")
    second = hearth.session.conversation_id
    assert second != first
    sidebar = hearth.window.sidebar
    item = sidebar.item_for(first)
    assert item is not None
    qtbot.mouseClick(sidebar.list.viewport(), Qt.MouseButton.LeftButton, pos=sidebar.list.visualItemRect(item).center())
    assert hearth.session.conversation_id == first
    assert hearth.chat_model.item(0).content == "All about pelicans"
    # Ctrl+K focuses search; results come from the full-text index; a hit opens its conversation.
    QTest.keyClick(hearth.window, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)
    assert sidebar.search.hasFocus()
    QTest.keyClicks(sidebar.search, "otters")
    qtbot.waitUntil(lambda: sidebar.list.count() == 2)  # the result count header and one hit
    hit = sidebar.list.item(1)
    qtbot.mouseClick(sidebar.list.viewport(), Qt.MouseButton.LeftButton, pos=sidebar.list.visualItemRect(hit).center())
    assert hearth.session.conversation_id == second
    sidebar.search.clear()
    qtbot.waitUntil(lambda: sidebar.list.count() == 3)  # back to the list: header and two chats


def test_rename_pin_delete_and_undo(qtbot: QtBot, hearth: HearthApp) -> None:
    load(qtbot, hearth)
    short_replies(hearth)
    send_and_wait(qtbot, hearth, "Chat one")
    one = hearth.session.conversation_id
    hearth.new_chat()
    send_and_wait(qtbot, hearth, "Chat two")
    sidebar = hearth.window.sidebar
    item = sidebar.item_for(one)
    assert item is not None
    item.setText("Renamed chat")  # what the inline editor commits
    qtbot.waitUntil(lambda: hearth.store.conversation(one).title == "Renamed chat")
    sidebar.pin_requested.emit(one, True)
    assert sidebar.list.item(0).text() == "Pinned" and sidebar.list.item(1).text() == "Renamed chat"
    sidebar.delete_requested.emit(one)
    assert sidebar.item_for(one) is None and sidebar.undo_bar.isVisible()
    undo = sidebar.undo_bar.findChild(type(hearth.window.composer.button))
    qtbot.mouseClick(undo, Qt.MouseButton.LeftButton)
    assert sidebar.item_for(one) is not None and not sidebar.undo_bar.isVisible()


def test_restart_restores_history_model_and_window(qtbot: QtBot, paths: AppPaths, model_path: Path) -> None:
    app = start_app(qtbot, paths)
    load(qtbot, app)
    short_replies(app)
    send_and_wait(qtbot, app, "Remember this")
    conversation = app.session.conversation_id
    reply = app.chat_model.item(1).content
    app.window.resize(760, 540)  # within the offscreen screen (800x600): restoreGeometry keeps windows on screen
    app.window.close()
    assert app.host.engine is not None and app.host.engine.model is None  # freed after the thread

    again = start_app(qtbot, paths)
    assert again.session.conversation_id == conversation
    assert [i.content for i in again.chat_model.items] == ["Remember this", reply]
    assert again.window.size().width() == 760 and again.window.size().height() == 540
    qtbot.waitUntil(lambda: again.engine.model is not None, timeout=30_000)  # the last model loads again
    assert again.engine.model.path == model_path
    again.window.close()


def test_load_errors_are_shown_in_place(qtbot: QtBot, hearth: HearthApp, paths: AppPaths) -> None:
    # A readable GGUF header that llama.cpp refuses: an architecture it does not know.
    bad = write_tiny_model(paths.models_dir / "unknown-arch.gguf", TinyModelSpec(architecture="hearthnet"))
    hearth.library.scan()
    qtbot.waitUntil(lambda: hearth.window.picker.count == 2)
    hearth.window.picker.select(str(bad))
    qtbot.mouseClick(hearth.window.picker.load_button, Qt.MouseButton.LeftButton)
    picker = hearth.window.picker
    qtbot.waitUntil(picker.error.isVisible, timeout=30_000)
    assert "Could not load the model" in picker.error.text() and "hearthnet" in picker.error.text()
    assert hearth.engine.model is None and not picker.progress.isVisible()
    # The app goes on: the good model loads and chats.
    load(qtbot, hearth, paths.models_dir / MODEL_NAME)
    assert not picker.error.isVisible()
    short_replies(hearth)
    send_and_wait(qtbot, hearth, "Still alive?")
    assert hearth.chat_model.item(1).finish_reason == "length"


def test_show_prompt_copy_and_overflow_notice(qtbot: QtBot, hearth: HearthApp) -> None:
    hearth.settings.set_model_override(MODEL_NAME, "load", {"n_ctx": 256})
    load(qtbot, hearth)
    assert hearth.engine.model.n_ctx == 256
    short_replies(hearth, 40)
    words = "river " * 8
    for turn in range(4):
        send_and_wait(qtbot, hearth, f"Turn {turn}: {words}")
    assert "oldest messages no longer fit" in hearth.window.composer.notice_label.text()
    assert hearth.window.composer.notice.isVisible()
    last = hearth.chat_model.rowCount() - 1
    click_action(qtbot, hearth, last, "prompt")
    dialog = hearth.window.findChild(PromptDialog)
    assert dialog is not None and dialog.isVisible()
    prompt = dialog.text.toPlainText()
    assert "Turn 3" in prompt and "Turn 0" not in prompt  # the oldest turn was left out
    assert "<|im_start|>" in prompt  # ChatML: the tiny model has no template of its own
    dialog.close()
    click_action(qtbot, hearth, last, "copy")
    assert QGuiApplication.clipboard().text() == hearth.chat_model.item(last).content


def test_engine_thread_answers_arrive_on_the_gui_thread(qtbot: QtBot, hearth: HearthApp) -> None:
    recorder = ThreadRecorder()
    for signal in (hearth.engine.loaded, hearth.engine.load_progress, hearth.engine.reply_started):
        signal.connect(recorder.record)
    load(qtbot, hearth)
    short_replies(hearth)
    send_and_wait(qtbot, hearth, "Which thread?")
    main = QGuiApplication.instance().thread()
    assert len(recorder.threads) >= 3
    assert all(thread is main for thread in recorder.threads)
    assert hearth.host.thread is not threading.main_thread() and hearth.host.thread.is_alive()
