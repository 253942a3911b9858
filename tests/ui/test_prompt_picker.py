"""The composer's `/` prompt picker, driven from the keyboard: filter, choose, fill the fields in place, send."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMainWindow, QVBoxLayout, QWidget
from pytestqt.qtbot import QtBot

from app.core.paths import AppPaths
from app.core.prompt_library import Prompt, PromptLibrary
from app.ui.composer import Composer
from app.ui.prompt_picker import PromptPicker, install_prompt_picker

SHOTS = Path(__file__).resolve().parents[2] / ".test-cache" / "screenshots"


@pytest.fixture
def setup(qtbot: QtBot, hearth_home: AppPaths) -> tuple[QMainWindow, Composer, PromptPicker, PromptLibrary]:
    library = PromptLibrary.default(hearth_home)
    library.save(
        Prompt(
            "",
            "Reply to email",
            "Write a {{tone}} reply to {{sender}}:\n\n{{email}}\n\nSign as {{sender}}'s friend.",
            "A reply in the tone you choose",
            {"tone": "friendly"},
        )
    )
    window = QMainWindow()
    body = QWidget(window)
    window.setCentralWidget(body)
    layout = QVBoxLayout(body)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addStretch(1)
    composer = Composer(body)
    layout.addWidget(composer)
    composer.set_state(can_send=True, generating=False, hint="")
    qtbot.addWidget(window)
    window.resize(720, 560)
    window.show()
    qtbot.waitExposed(window)
    picker = install_prompt_picker(composer, library)
    composer.editor.setFocus()
    return window, composer, picker, library


def type_text(qtbot: QtBot, widget: QWidget, text: str) -> None:
    for char in text:
        QTest.keyClick(widget, char)


def test_slash_lists_prompts_and_filters_as_you_type(qtbot: QtBot, setup) -> None:
    window, composer, picker, _ = setup
    editor = composer.editor
    with qtbot.wait_signal(picker.opened):
        QTest.keyClick(editor, "/")
    assert picker.is_open and [p.name for p in picker.shown_prompts()][:3] == [
        "Translate",
        "Summarise",
        "Extract as JSON",
    ]
    type_text(qtbot, editor, "re")
    assert [p.name for p in picker.shown_prompts()] == ["Reply to email"]
    QTest.keyClick(editor, Qt.Key.Key_Backspace)
    QTest.keyClick(editor, Qt.Key.Key_Backspace)
    type_text(qtbot, editor, "s")
    assert picker.shown_prompts()[0].name == "Summarise"
    QTest.keyClick(editor, Qt.Key.Key_Down)
    assert picker.current_prompt() is not None and picker.current_prompt().name != "Summarise"
    QTest.keyClick(editor, Qt.Key.Key_Up)
    assert picker.current_prompt().name == "Summarise"
    SHOTS.mkdir(parents=True, exist_ok=True)
    qtbot.wait(30)
    window.grab().save(str(SHOTS / "prompt-picker-list.png"))
    with qtbot.wait_signal(picker.closed):
        QTest.keyClick(editor, Qt.Key.Key_Escape)
    assert composer.text == "/s" and not picker.is_open
    QTest.keyClick(editor, Qt.Key.Key_Space)  # "/s " is a message, not a prompt search
    assert not picker.is_open


def test_choose_fill_fields_with_tab_and_send(qtbot: QtBot, setup) -> None:
    window, composer, picker, _ = setup
    editor = composer.editor
    sent: list[str] = []
    composer.send_requested.connect(sent.append)
    type_text(qtbot, editor, "/reply")
    with qtbot.wait_signal(picker.prompt_inserted):
        QTest.keyClick(editor, Qt.Key.Key_Return)
    assert not sent  # Enter chose the prompt; it did not send
    assert composer.text == "Write a friendly reply to {{sender}}:\n\n{{email}}\n\nSign as {{sender}}'s friend."
    assert [f.name for f in picker.fields] == ["tone", "sender", "email", "sender"]
    assert picker.unfilled() == ["sender", "email"]
    assert editor.textCursor().selectedText() == "{{sender}}"  # the first empty field is selected
    type_text(qtbot, editor, "Ana")
    assert composer.text.startswith("Write a friendly reply to Ana:") and "Sign as Ana's friend." in composer.text
    QTest.keyClick(editor, Qt.Key.Key_Return)  # {{email}} is still empty: Enter goes there instead of sending
    assert not sent and editor.textCursor().selectedText() == "{{email}}"
    qtbot.wait(30)  # let the composer's layout grow before the screenshot
    window.grab().save(str(SHOTS / "prompt-picker-fields.png"))
    type_text(qtbot, editor, "Lunch on Friday?")
    QTest.keyClick(editor, Qt.Key.Key_Tab, Qt.KeyboardModifier.ShiftModifier)
    assert editor.textCursor().selectedText() == "Ana"
    QTest.keyClick(editor, Qt.Key.Key_Backtab)
    assert editor.textCursor().selectedText() == "friendly"
    type_text(qtbot, editor, "short")
    assert picker.unfilled() == []
    with qtbot.wait_signal(picker.fields_done):
        QTest.keyClick(editor, Qt.Key.Key_Return)
    assert sent == ["Write a short reply to Ana:\n\nLunch on Friday?\n\nSign as Ana's friend."]
    assert editor.extraSelections() == []


def test_escape_leaves_the_fields_and_a_prompt_without_variables(qtbot: QtBot, setup) -> None:
    _, composer, picker, library = setup
    editor = composer.editor
    type_text(qtbot, editor, "/tra")
    QTest.keyClick(editor, Qt.Key.Key_Tab)  # Tab chooses too
    assert picker.unfilled() == ["text"] and editor.textCursor().selectedText() == "{{text}}"
    with qtbot.wait_signal(picker.fields_done):
        QTest.keyClick(editor, Qt.Key.Key_Escape)
    assert picker.fields == [] and "{{text}}" in composer.text  # the text stays as it is
    composer.accept_sent()
    library.save(Prompt("", "Thanks", "Thank you, that helped."))
    type_text(qtbot, editor, "/than")
    QTest.keyClick(editor, Qt.Key.Key_Return)
    assert composer.text == "Thank you, that helped." and picker.fields == []
    assert editor.textCursor().position() == len(composer.text)


def test_no_match_lets_the_slash_text_be_sent(qtbot: QtBot, setup) -> None:
    _, composer, picker, _ = setup
    sent: list[str] = []
    composer.send_requested.connect(sent.append)
    type_text(qtbot, composer.editor, "/zzz")
    assert picker.is_open and picker.shown_prompts() == [None]
    QTest.keyClick(composer.editor, Qt.Key.Key_Return)
    assert sent == ["/zzz"] and not picker.is_open


def test_clicking_a_prompt_chooses_it(qtbot: QtBot, setup) -> None:
    _, composer, picker, _ = setup
    type_text(qtbot, composer.editor, "/sum")
    item = picker.popup.list.item(0)
    rect = picker.popup.list.visualItemRect(item)
    QTest.mouseClick(picker.popup.list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert composer.text.startswith("Summarise the following text in three bullet points.")
    assert picker.unfilled() == ["text"]
