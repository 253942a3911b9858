"""The Assistants dialog, driven as a user would: built-ins read-only, duplicate, edit every field, save,
invalid values refused with the reason, delete, import and export, and a new chat requested."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from app.core.assistants import AssistantLibrary
from app.core.load_config import LoraAdapter
from app.core.paths import AppPaths
from app.core.sampling import PRESETS
from app.core.structured import JSON_SCHEMA, ReplyFormat
from app.core.tiny_model import write_tiny_lora
from app.ui.assistant_dialog import AssistantDialog

SHOTS = Path(__file__).resolve().parents[2] / ".test-cache" / "screenshots"


@pytest.fixture
def library(hearth_home: AppPaths) -> AssistantLibrary:
    return AssistantLibrary.default(hearth_home)


@pytest.fixture
def dialog(qtbot: QtBot, library: AssistantLibrary) -> Iterator[AssistantDialog]:
    shown = AssistantDialog(library)
    qtbot.addWidget(shown)
    shown.resize(940, 640)
    shown.show()
    qtbot.waitExposed(shown)
    yield shown
    # Closing with unsaved changes asks (a modal box would wait forever here): discard them.
    shown.ask = lambda *_a, **_k: QMessageBox.StandardButton.Discard  # type: ignore[method-assign]


def names(dialog: AssistantDialog) -> list[str]:
    return [dialog.list.item(i).text() for i in range(dialog.list.count())]


def test_built_ins_are_read_only_and_duplicate_makes_an_editable_copy(qtbot: QtBot, dialog: AssistantDialog) -> None:
    assert names(dialog) == [
        "Translator  · built-in",
        "Summariser  · built-in",
        "Text to JSON  · built-in",
        "Classifier  · built-in",
    ]
    editor = dialog.editor
    assert dialog.banner.isVisible() and editor.name.isReadOnly() and editor.system_prompt.isReadOnly()
    assert not dialog.delete_button.isEnabled() and not dialog.save_button.isEnabled()
    assert list(editor.variable_edits) == ["target language"]
    assert editor.variable_edits["target language"].text() == "English"
    QTest.keyClicks(editor.name, "changed")  # read-only: nothing happens
    assert editor.name.text() == "Translator" and not dialog.dirty
    SHOTS.mkdir(parents=True, exist_ok=True)
    dialog.editor.tabs.setCurrentIndex(1)
    qtbot.wait(30)
    dialog.grab().save(str(SHOTS / "assistants-builtin.png"))
    dialog.editor.tabs.setCurrentIndex(0)
    changes: list[bool] = []
    dialog.assistants_changed.connect(lambda: changes.append(True))
    dialog.duplicate_button.click()
    assert dialog.list.currentItem().text() == "Translator (copy)" and changes == [True]
    assert not dialog.banner.isVisible() and not editor.name.isReadOnly() and dialog.delete_button.isEnabled()


def test_edit_every_field_and_save(
    qtbot: QtBot, dialog: AssistantDialog, library: AssistantLibrary, tmp_path: Path
) -> None:
    dialog.new_button.click()
    assert dialog.list.currentItem().text() == "New assistant"
    editor = dialog.editor
    editor.name.clear()
    QTest.keyClicks(editor.name, "Legal French")
    QTest.keyClicks(editor.description, "Contracts into French")
    editor.system_prompt.setFocus()
    QTest.keyClicks(editor.system_prompt, "Translate into {{language}} for {{audience}}.")
    qtbot.waitUntil(lambda: list(editor.variable_edits) == ["language", "audience"], timeout=3000)
    QTest.keyClicks(editor.variable_edits["audience"], "lawyers")
    editor.preset.setCurrentIndex(editor.preset.findData("qwen2.5-instruct-card"))
    assert editor.sampling_fields["top_k"].value() == 20
    editor.sampling_fields["max_tokens"].setValue(777)  # now custom
    assert editor.preset.currentData() == "custom"
    editor.seed.setText("42")
    editor.seed.textEdited.emit("42")
    editor.tabs.setCurrentIndex(2)
    editor.reply_format.buttons[JSON_SCHEMA].click()
    editor.reply_format.schema.setPlainText('{"type": "object", "properties": {"text": {"type": "string"}}}')
    editor.template.setCurrentIndex(editor.template.findData("chatml"))
    editor.set_ctx.setChecked(True)
    editor.n_ctx.setValue(8192)
    editor.set_layers.setChecked(True)
    editor.gpu_layers.setValue(-1)
    adapter = write_tiny_lora(tmp_path / "legal-lora.gguf")
    editor.ask_lora_path = lambda: str(adapter)  # type: ignore[method-assign]
    editor.add_lora.click()
    editor.loras.cellWidget(0, 1).setValue(0.5)
    QTest.keyClicks(editor.tools, "time, filesystem")
    QTest.keyClicks(editor.documents, "contracts")
    assert dialog.dirty and dialog.save_button.isEnabled()
    editor.tabs.setCurrentIndex(3)
    qtbot.wait(30)
    dialog.grab().save(str(SHOTS / "assistants-model.png"))
    editor.tabs.setCurrentIndex(0)
    qtbot.wait(30)  # the variables' rows are laid out
    dialog.grab().save(str(SHOTS / "assistants-edit.png"))
    assert dialog.save()

    saved = library.get("Legal French")
    assert saved.description == "Contracts into French"
    assert saved.system_prompt == "Translate into {{language}} for {{audience}}."
    assert saved.defaults == {"audience": "lawyers"}
    assert saved.preset == "custom"
    assert saved.sampling == PRESETS["qwen2.5-instruct-card"].__class__(
        **{**PRESETS["qwen2.5-instruct-card"].to_dict(), "max_tokens": 777, "seed": 42, "logit_bias": ()}
    )
    assert saved.reply_format == ReplyFormat(
        JSON_SCHEMA, {"type": "object", "properties": {"text": {"type": "string"}}}
    )
    assert saved.template == "chatml"
    assert (saved.load.n_ctx, saved.load.n_gpu_layers) == (8192, -1)
    assert saved.load.loras == (LoraAdapter(adapter, 0.5),)
    assert saved.tools == ("time", "filesystem") and saved.documents == ("contracts",)
    assert not dialog.dirty and dialog.list.currentItem().text() == "Legal French"

    requested: list[str] = []
    dialog.chat_requested.connect(requested.append)
    dialog.chat_button.click()
    assert requested == [saved.id]


def test_invalid_values_are_refused_with_the_reason(
    qtbot: QtBot, dialog: AssistantDialog, library: AssistantLibrary
) -> None:
    dialog.new_button.click()
    editor = dialog.editor
    editor.reply_format.buttons[JSON_SCHEMA].click()
    editor.reply_format.schema.setPlainText('{"type": "objekt"}')
    assert not dialog.save()
    assert dialog.error.isVisible() and dialog.error.text().startswith(
        "Not saved: the reply schema is unusable: at type"
    )
    editor.reply_format.buttons["text"].click()
    editor.name.clear()
    QTest.keyClicks(editor.name, "Translator")  # a built-in's name
    assert not dialog.save() and "already an assistant named 'Translator'" in dialog.error.text()
    assert [a.name for a in library.user_assistants()] == ["New assistant"]  # the saved draft, unchanged
    dialog.revert_button.click()
    assert not dialog.dirty and dialog.editor.name.text() == "New assistant"


def test_unsaved_changes_are_asked_about_and_delete_confirms(
    qtbot: QtBot, dialog: AssistantDialog, library: AssistantLibrary
) -> None:
    dialog.new_button.click()
    QTest.keyClicks(dialog.editor.description, "draft")
    answers = [QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Discard]
    dialog.ask = lambda *_a, **_k: answers.pop(0)  # type: ignore[method-assign]
    dialog.list.setCurrentRow(0)  # Cancel: stay
    assert dialog.list.currentItem().text() == "New assistant" and dialog.dirty
    dialog.list.setCurrentRow(0)  # Discard: go
    assert dialog.list.currentItem().text().startswith("Translator") and not dialog.dirty
    assert library.get("New assistant").description == ""
    dialog.select("New assistant")
    dialog.ask = lambda *_a, **_k: QMessageBox.StandardButton.No  # type: ignore[method-assign]
    dialog.delete_button.click()
    assert library.find("New assistant") is not None
    dialog.ask = lambda *_a, **_k: QMessageBox.StandardButton.Yes  # type: ignore[method-assign]
    dialog.delete_button.click()
    assert library.find("New assistant") is None and dialog.list.count() == 4


def test_import_and_export(qtbot: QtBot, dialog: AssistantDialog, library: AssistantLibrary, tmp_path: Path) -> None:
    dialog.select("Classifier")
    exported = tmp_path / "classifier.json"
    dialog.ask_export_path = lambda _suggested: str(exported)  # type: ignore[method-assign]
    dialog.export_button.click()
    data = json.loads(exported.read_text())
    assert data["name"] == "Classifier" and data["reply_format"]["kind"] == "json_schema"
    dialog.ask_import_path = lambda: str(exported)  # type: ignore[method-assign]
    dialog.import_button.click()
    assert dialog.list.currentItem().text() == "Classifier (2)" and not dialog.banner.isVisible()
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "X", "sampling": {"top_k": -4}}')
    dialog.ask_import_path = lambda: str(broken)  # type: ignore[method-assign]
    dialog.import_button.click()
    assert dialog.error.text() == "broken.json: top_k must be between 0 and 1000; got -4"
    assert [a.name for a in library.user_assistants()] == ["Classifier (2)"]


def test_unreadable_files_are_reported_in_the_dialog(qtbot: QtBot, hearth_home: AppPaths) -> None:
    folder = hearth_home.assistants_dir
    folder.mkdir(parents=True)
    (folder / "torn-1.json").write_text("{", encoding="utf-8")
    shown = AssistantDialog(AssistantLibrary.default(hearth_home))
    qtbot.addWidget(shown)
    shown.show()
    assert shown.problems.isVisible() and "torn-1.json is unusable" in shown.problems.text()
    QTest.keyClick(shown.list, Qt.Key.Key_Down)
    assert shown.list.currentRow() == 1
