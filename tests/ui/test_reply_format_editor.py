"""The reply-format editor: the schema is checked as the user types, the problem and its line shown."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from app.core.structured import JSON_ANY, JSON_SCHEMA, TEXT, ReplyFormat
from app.ui.reply_format_editor import CHECK_DELAY_MS, EXAMPLE_SCHEMA, ReplyFormatEditor

SHOTS = Path(__file__).resolve().parents[2] / ".test-cache" / "screenshots"
PERSON = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def make(qtbot: QtBot) -> ReplyFormatEditor:
    editor = ReplyFormatEditor()
    qtbot.addWidget(editor)
    editor.resize(520, 380)
    editor.show()
    return editor


def test_kinds_and_values(qtbot: QtBot) -> None:
    editor = make(qtbot)
    assert editor.value() == ReplyFormat() and not editor.schema.isVisible()
    formats: list[ReplyFormat] = []
    editor.format_changed.connect(formats.append)
    editor.buttons[JSON_ANY].click()
    assert formats[-1] == ReplyFormat(JSON_ANY) and "valid JSON" in editor.explanation.text()
    editor.buttons[JSON_SCHEMA].click()  # an empty schema editor starts from the example
    assert editor.schema.isVisible() and formats[-1] == ReplyFormat(JSON_SCHEMA, EXAMPLE_SCHEMA)
    editor.set_value(ReplyFormat(JSON_SCHEMA, PERSON))
    assert editor.value() == ReplyFormat(JSON_SCHEMA, PERSON) and editor.is_valid()
    editor.set_value(ReplyFormat(TEXT))
    assert editor.value() == ReplyFormat() and not editor.schema.isVisible()


def test_schema_checked_as_you_type_with_the_line(qtbot: QtBot) -> None:
    editor = make(qtbot)
    editor.set_value(ReplyFormat(JSON_SCHEMA, PERSON))
    editor.schema.setFocus()
    cursor = editor.schema.textCursor()
    text = editor.schema.toPlainText()
    cursor.setPosition(text.index('"string"') + len('"string'))
    editor.schema.setTextCursor(cursor)
    with qtbot.wait_signal(editor.validity_changed, timeout=CHECK_DELAY_MS * 8) as blocker:
        QTest.keyClicks(editor.schema, "y")  # "stringy" is no JSON type
    assert blocker.args == [False]
    assert not editor.is_valid() and editor.value() is None
    assert editor.problem_label.isVisible()
    assert editor.problem() == (
        "at properties → name → type: 'stringy' is not a JSON type "
        "(use string, number, integer, boolean, object, array or null)"
    )
    assert editor.problem_label.text() == f"Line 5: {editor.problem()}"
    highlighted = editor.schema.extraSelections()
    assert len(highlighted) == 1 and highlighted[0].cursor.blockNumber() == 4  # line 5: "type": "stringy"
    SHOTS.mkdir(parents=True, exist_ok=True)
    editor.grab().save(str(SHOTS / "reply-format-schema-error.png"))
    with qtbot.wait_signal(editor.validity_changed, timeout=CHECK_DELAY_MS * 8) as blocker:
        QTest.keyClick(editor.schema, Qt.Key.Key_Backspace)
    assert blocker.args == [True] and editor.is_valid() and not editor.problem_label.isVisible()
    assert editor.schema.extraSelections() == []
    editor.schema.setPlainText('{"type": "object",')
    assert editor.value() is None  # value() checks a pending edit at once
    assert editor.problem() == "line 1, column 19: Expecting property name enclosed in double quotes"
    editor.schema.setPlainText('{"type":"object","properties":{"a":{"type":"integer"}}}')
    editor.tidy_button.click()
    assert editor.schema.toPlainText().startswith('{\n  "type": "object",') and editor.is_valid()


def test_read_only(qtbot: QtBot) -> None:
    editor = make(qtbot)
    editor.set_value(ReplyFormat(JSON_SCHEMA, PERSON))
    editor.set_read_only(True)
    assert editor.schema.isReadOnly() and not editor.buttons[TEXT].isEnabled() and not editor.tidy_button.isEnabled()


def test_checks_run_on_the_task_pool_and_only_the_latest_counts(qtbot: QtBot) -> None:
    from app.ui.workers import TaskRunner

    tasks = TaskRunner()
    editor = ReplyFormatEditor(tasks=tasks)
    qtbot.addWidget(editor)
    editor.show()
    editor.set_value(ReplyFormat(JSON_SCHEMA, PERSON))
    big = {"type": "object", "properties": {f"f{i}": {"type": "string"} for i in range(300)}}
    import json

    editor.schema.setPlainText(json.dumps(big))  # valid, slow to check (~0.2 s)
    editor.check_now()
    editor.schema.setPlainText('{"type": 5}')  # typed before the first verdict came back
    with qtbot.wait_signal(editor.validity_changed, timeout=10_000) as blocker:
        editor.check_now()
    assert blocker.args == [False] and editor.problem() is not None and editor.problem().startswith("at type: 5")
    assert tasks.wait(10_000)
    qtbot.wait(50)  # the stale verdict for the big schema arrives and is dropped
    assert not editor.is_valid() and editor.value() is None
    assert tasks.violations == 0  # every verdict was handled on the GUI thread
    tasks.close()
