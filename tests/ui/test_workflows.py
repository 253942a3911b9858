"""Assistants, the `/` prompt picker and reply formats in the real window, over llama.cpp with a tiny model:
an assistant saved, used for a chat and restored with it (also after a restart), the Translator's language
asked in a form, a prompt with variables inserted in the composer, JSON and JSON-schema replies that parse and
validate (shown formatted, stored as sent), and a bad schema refused with nothing sent."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from app.core.assistants import AssistantLibrary
from app.core.paths import AppPaths
from app.core.sampling import SamplingSettings
from app.core.store import Store
from app.core.structured import JSON_ANY, JSON_SCHEMA, ReplyFormat, reply_problem
from app.ui.app import HearthApp
from tests.ui.conftest import load, send_and_wait, start_app

pytestmark = pytest.mark.gui
SHOTS = Path(__file__).resolve().parents[2] / ".test-cache" / "screenshots"


def shot(app: HearthApp, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    app.window.grab().save(str(SHOTS / name))


def menu_action(app: HearthApp, text: str) -> None:
    """Choose an entry of the Assistants menu (filled as it opens)."""
    app.workflows.fill_menu()
    action = next(a for a in app.window.assistants_menu.actions() if a.text() == text)
    action.trigger()


def stored(app: HearthApp, conversation_id: int | None = None):
    with Store.open(app.paths.history_db) as store:
        cid = conversation_id or app.session.conversation_id
        return store.conversation(cid), store.messages(cid), store


def prompt_of(app: HearthApp, message_id: int) -> str:
    with Store.open(app.paths.history_db) as store:
        return store.prompt_text(message_id) or ""


def close(app: HearthApp) -> None:
    app.window.close()
    assert app.engine.violations == 0 and app.tasks.violations == 0


def test_assistant_saved_used_and_restored_with_its_conversation(
    qtbot: QtBot, paths: AppPaths, model_path: Path
) -> None:
    app = start_app(qtbot, paths)
    load(qtbot, app)
    panel = app.window.settings_panel
    # Assistants → Manage assistants… → New: a pirate with a variable that has no default.
    menu_action(app, "Manage assistants…")
    dialog = app.workflows.dialog
    assert dialog is not None
    qtbot.waitExposed(dialog)
    dialog.new_button.click()
    editor = dialog.editor
    editor.name.clear()
    QTest.keyClicks(editor.name, "Pirate")
    editor.system_prompt.setFocus()
    QTest.keyClicks(editor.system_prompt, "Answer like a pirate from {{port}}. Always name {{port}}.")
    qtbot.waitUntil(lambda: list(editor.variable_edits) == ["port"], timeout=3000)
    editor.preset.setCurrentIndex(editor.preset.findData("deterministic"))
    editor.sampling_fields["max_tokens"].setValue(12)
    assert dialog.save()
    dialog.chat_button.click()  # "New chat with this assistant": the dialog closes, the form asks the port
    values = app.workflows.values_dialog
    assert values is not None and not dialog.isVisible()
    qtbot.waitExposed(values)
    assert not values.ok.isEnabled() and "port" in values.ok.toolTip()  # no default: required
    QTest.keyClicks(values.fields["port"], "Tortuga")
    assert values.ok.isEnabled()
    SHOTS.mkdir(parents=True, exist_ok=True)
    values.grab().save(str(SHOTS / "assistant-values.png"))
    values.ok.click()

    pirate = AssistantLibrary.default(paths).get("Pirate")
    setup = app.session.setup
    assert setup.assistant_id == pirate.id and setup.values == {"port": "Tortuga"}
    assert panel.assistant.combo.currentText() == "Pirate" and panel.assistant.summary.text() == "port: Tortuga"
    assert panel.system_prompt.toPlainText() == "Answer like a pirate from Tortuga. Always name Tortuga."
    assert panel.sampling_fields["max_tokens"].value() == 12 and panel.sampling_fields["temperature"].value() == 0
    assert app.window.composer.editor.placeholderText() == "Message Pirate…"
    send_and_wait(qtbot, app, "Where do you sail?")
    shot(app, "assistant-chat.png")
    conversation, messages, _ = stored(app)
    conversation_id = conversation.id
    assert conversation.meta["assistant"]["name"] == "Pirate"
    assert conversation.meta["assistant"]["values"] == {"port": "Tortuga"}
    assert conversation.system_prompt == "Answer like a pirate from Tortuga. Always name Tortuga."
    reply = messages[-1]
    assert reply.generated_tokens == 12 or reply.finish_reason == "stop"
    assert SamplingSettings.from_dict(reply.meta["sampling"]) == pirate.sampling  # its seed included: 0
    assert "Answer like a pirate from Tortuga. Always name Tortuga." in prompt_of(app, reply.id)

    # A plain chat has no assistant; reopening the pirate chat brings its whole setup back.
    app.new_chat()
    assert panel.assistant.current == "" and app.session.setup.assistant is None
    assert panel.system_prompt.toPlainText() == app.settings.get("default_system_prompt")
    app.open_conversation(conversation_id)
    assert app.session.setup.assistant_name == "Pirate" and panel.assistant.combo.currentText() == "Pirate"
    assert panel.sampling_fields["max_tokens"].value() == 12
    # The assistant may be deleted: the chat keeps the setup it was started with.
    AssistantLibrary.default(paths).delete("Pirate")
    app.new_chat()
    app.open_conversation(conversation_id)
    assert panel.assistant.combo.currentText() == "Pirate (deleted)"
    send_and_wait(qtbot, app, "And then?")
    _, messages, _ = stored(app, conversation_id)
    assert "Answer like a pirate from Tortuga." in prompt_of(app, messages[-1].id)
    close(app)

    # After a restart the last chat opens with its assistant.
    again = start_app(qtbot, paths)
    assert again.session.conversation_id == conversation_id
    assert again.session.setup.assistant_name == "Pirate" and again.session.setup.values == {"port": "Tortuga"}
    assert again.window.settings_panel.assistant.combo.currentText() == "Pirate (deleted)"
    assert again.session.sampling.max_tokens == 12 and again.session.preset == "custom"
    close(again)


def test_translator_asks_its_language_and_the_panel_switches_assistants(qtbot: QtBot, hearth: HearthApp) -> None:
    app = hearth
    load(qtbot, app)
    panel = app.window.settings_panel
    menu_action(app, "New chat with Translator")
    values = app.workflows.values_dialog
    assert values is not None and values.fields["target language"].text() == "English"  # its default
    values.fields["target language"].setText("French")
    values.ok.click()
    assert "into French" in panel.system_prompt.toPlainText()
    app.session.set_sampling("custom", replace(app.session.sampling, max_tokens=6))
    send_and_wait(qtbot, app, "Good morning")
    conversation, messages, _ = stored(app)
    assert "Translate the text the user sends into French." in prompt_of(app, messages[-1].id)

    # The chat settings panel changes this chat's assistant: the Summariser asks its length.
    index = panel.assistant.combo.findText("Summariser")
    panel.assistant.combo.setCurrentIndex(index)
    values = app.workflows.values_dialog
    assert values is not None and values.fields["length"].text() == "a short paragraph"
    values.fields["length"].setText("one sentence")
    values.ok.click()
    conversation, _, _ = stored(app)
    assert conversation.meta["assistant"]["name"] == "Summariser"
    assert conversation.system_prompt.startswith("Summarise the text the user sends in one sentence.")
    assert conversation.sampling["preset"] == "precise"
    assert [m.role for m in stored(app)[1]] == ["user", "assistant"]  # the messages stay
    # Cancelling the form leaves the chat as it was; None drops the assistant.
    panel.assistant.combo.setCurrentIndex(panel.assistant.combo.findText("Translator"))
    app.workflows.values_dialog.reject()
    assert panel.assistant.combo.currentText() == "Summariser"
    assert stored(app)[0].meta["assistant"]["name"] == "Summariser"
    panel.assistant.combo.setCurrentIndex(0)
    conversation, _, _ = stored(app)
    assert "assistant" not in conversation.meta and conversation.meta["reply_format"] == {"kind": "text"}
    assert conversation.system_prompt.startswith("Summarise the text")  # the prompt itself stays


def test_prompt_with_variables_from_slash_in_the_composer(qtbot: QtBot, hearth: HearthApp) -> None:
    app = hearth
    load(qtbot, app)
    app.session.set_sampling("custom", SamplingSettings(max_tokens=4, seed=1))
    editor = app.window.composer.editor
    picker = app.workflows.picker
    editor.setFocus()
    with qtbot.wait_signal(picker.opened):
        QTest.keyClick(editor, "/")
    QTest.keyClicks(editor, "transl")
    assert next(p.name for p in picker.shown_prompts()) == "Translate"
    shot(app, "prompt-picker.png")
    QTest.keyClick(editor, Qt.Key.Key_Return)  # insert it: {{language}} (default English) and {{text}}
    assert [f.name for f in picker.fields] == ["language", "text"]
    assert picker.unfilled() == ["text"]
    QTest.keyClick(editor, Qt.Key.Key_Return)  # a field is empty: Enter jumps there instead of sending
    assert not app.session.generating and app.chat_model.rowCount() == 0
    QTest.keyClicks(editor, "Bonjour tout le monde")
    QTest.keyClick(editor, Qt.Key.Key_Tab)  # back to the language
    QTest.keyClicks(editor, "German")
    shot(app, "prompt-picker-fields.png")
    QTest.keyClick(editor, Qt.Key.Key_Return)
    assert app.session.generating, "the filled prompt was not sent"
    qtbot.waitUntil(lambda: not app.session.generating, timeout=30_000)
    _, messages, _ = stored(app)
    assert messages[0].content == (
        "Translate the following text into German. Keep the meaning, tone and formatting; reply with the "
        "translation only.\n\nBonjour tout le monde"
    )


def token_id(app: HearthApp, text: str) -> int:
    job = app.host.client("test").call(lambda engine: engine.tokenize(text, add_bos=False)[-1])
    return job.wait(30).result  # type: ignore[union-attr]


def bounded_schema() -> dict:
    """A schema whose every string is short: a random-weight model never ends a string by itself, and the
    grammar then guarantees the reply ends."""
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 2},
            "ok": {"type": "boolean"},
        },
        "required": ["name", "tags", "ok"],
        "additionalProperties": False,
    }


def click_code_copy(qtbot: QtBot, app: HearthApp, row: int) -> None:
    view = app.window.chat_view
    view.scrollTo(app.chat_model.index(row))
    qtbot.wait(20)
    geo, origin = view.geometry_of(row)
    assert geo.rendered is not None and len(geo.rendered.code_blocks) == 1
    rect = geo.rendered.copy_rect(geo.rendered.code_blocks[0]).translated(geo.content)
    point = (rect.center() + origin.toPointF()).toPoint()
    QTest.mouseMove(view.viewport(), point)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=point)


def test_json_and_schema_replies_parse_validate_show_formatted_and_a_bad_schema_sends_nothing(
    qtbot: QtBot, hearth: HearthApp
) -> None:
    app = hearth
    load(qtbot, app)
    formats = app.window.settings_panel.reply_format
    # JSON mode through the real grammar sampler. A random-weight model rarely closes a JSON value by itself,
    # so biases make "{", "}" and end-of-text its favourites: the grammar must still pick a valid order and stop.
    bias = ((token_id(app, "}"), 30.0), (token_id(app, "{"), 20.0), (2, 10.0))
    app.session.set_sampling("custom", SamplingSettings(temperature=0.0, top_k=1, max_tokens=50, logit_bias=bias))
    formats.buttons[JSON_ANY].click()
    assert app.session.setup.reply_format == ReplyFormat(JSON_ANY)
    send_and_wait(qtbot, app, "Give me JSON")
    reply = app.chat_model.item(1)
    assert reply.finish_reason == "stop" and json.loads(reply.content) == {}
    assert reply.display_text() == "```json\n{}\n```" and reply.content != reply.display_text()

    # JSON matching a schema: typed in the panel, checked as it is typed.
    formats.buttons[JSON_SCHEMA].click()
    formats.schema.setPlainText(json.dumps(bounded_schema()))
    qtbot.waitUntil(lambda: app.session.setup.reply_format.schema == bounded_schema(), timeout=5000)
    app.session.set_sampling("custom", SamplingSettings(temperature=0.0, top_k=1, max_tokens=300))
    send_and_wait(qtbot, app, "Describe a ship as JSON")
    reply = app.chat_model.item(3)
    assert reply.finish_reason == "stop", reply.content
    assert reply_problem(reply.content, ReplyFormat(JSON_SCHEMA, bounded_schema())) is None, reply.content
    pretty = json.dumps(json.loads(reply.content), indent=2, ensure_ascii=False)
    assert reply.display_text() == f"```json\n{pretty}\n```"
    app.window.chat_view.follow_bottom()
    qtbot.wait(50)
    shot(app, "json-reply.png")
    click_code_copy(qtbot, app, 3)  # the code block's Copy: the formatted JSON
    assert QGuiApplication.clipboard().text() == pretty
    conversation, messages, _ = stored(app)
    assert messages[-1].content == reply.content  # stored exactly as the model sent it
    assert messages[-1].meta["reply_format"] == {"kind": JSON_SCHEMA, "schema": bounded_schema()}
    assert conversation.meta["reply_format"] == {"kind": JSON_SCHEMA, "schema": bounded_schema()}
    # Reopened, the reply is shown formatted again and the chat keeps its format.
    app.new_chat()
    assert formats.kind == "text"
    app.open_conversation(conversation.id)
    assert formats.kind == JSON_SCHEMA and app.chat_model.item(3).display_text() == f"```json\n{pretty}\n```"

    # A schema that is not a schema: a clear error, nothing sent, the message kept in the composer.
    formats.schema.setPlainText('{"type": "objekt"}')
    app.window.composer.editor.setPlainText("This must not be sent")
    QTest.keyClick(app.window.composer.editor, Qt.Key.Key_Return)  # at once: the check is not awaited
    notice = app.window.composer.notice_label.text()
    assert notice.startswith("Not sent: the reply schema is unusable: at type: 'objekt' is not a JSON type")
    assert "Reply format" in notice and formats.problem_label.isVisible()
    assert not app.session.generating and app.chat_model.rowCount() == 4
    assert app.window.composer.text == "This must not be sent"
    assert len(stored(app)[1]) == 4
    assert stored(app)[0].meta["reply_format"]["schema"] == bounded_schema()  # the last usable one stays
    shot(app, "json-schema-refused.png")
