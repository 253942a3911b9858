"""The Models page with LoRA adapters: each listed under the bases it fits, a misfit with its reason, a PEFT
folder with the command that converts it (dropped in, or found in a model folder)."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.core.library import Library
from app.core.lora import find_peft_adapters
from app.core.paths import AppPaths
from app.core.tiny_model import TinyModelSpec, write_tiny_lora, write_tiny_model
from app.ui.models_page import COLUMNS, ModelsPage
from app.ui.untrusted import tooltip

SHOTS = Path(__file__).resolve().parents[2] / ".test-cache" / "screenshots"
SMALL = TinyModelSpec(name="Small Chat")
WIDE = TinyModelSpec(name="Wide Chat", n_embd=128, n_head=4, n_head_kv=2)
DEEP = TinyModelSpec(name="Deep Chat", n_layer=4)


def rows(page: ModelsPage) -> list[tuple[str, str]]:
    model = page.model
    return [(model.item(r, 0).text(), model.item(r, len(COLUMNS) - 1).text()) for r in range(model.rowCount())]


def peft_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": "meta-llama/Llama-2-7b-hf", "r": 8})
    )
    (folder / "adapter_model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    return folder


def test_adapters_listed_under_the_bases_they_fit(qtbot: QtBot, hearth_home: AppPaths, tmp_path: Path) -> None:
    paths = hearth_home.ensure()
    models = paths.models_dir
    write_tiny_model(models / "small.gguf", SMALL)
    write_tiny_model(models / "wide.gguf", WIDE)
    write_tiny_lora(models / "small-lora.gguf", SMALL)
    write_tiny_lora(models / "wide-lora.gguf", WIDE)
    write_tiny_lora(models / "deep-lora.gguf", DEEP)
    peft_folder(models / "alpaca-lora")
    library = Library(paths)
    entries = library.scan()
    page = ModelsPage()
    qtbot.addWidget(page)
    page.resize(1100, 420)
    page.show()
    page.set_entries(entries, {}, {str(e.path): None for e in entries}, str(models))
    page.set_peft_adapters(library.peft_adapters(), models)
    assert rows(page) == [
        ("Small Chat", "Ready"),
        ("    ↳ small-lora", "LoRA adapter for Small Chat"),
        ("Wide Chat", "Ready"),
        ("    ↳ wide-lora", "LoRA adapter for Wide Chat"),
        ("deep-lora", "LoRA adapter: fits no model here"),
        ("alpaca-lora", "LoRA adapter to convert to GGUF"),
    ]
    deep = page.model.item(4, len(COLUMNS) - 1)
    reason = "deep-lora.gguf was made for a model with 4 layers; Small Chat has 2"
    # Tooltips escape what they show (file names are untrusted text): compare what the user reads.
    assert deep.toolTip() == tooltip(f"deep-lora.gguf fits no model in your library: {reason}")
    page.table.selectRow(1)
    assert page.message.text().startswith("small-lora.gguf fits Small Chat")
    assert not page.load_button.isEnabled()  # an adapter is not loaded on its own
    page.table.selectRow(5)
    message = page.message.text()
    assert message.startswith("alpaca-lora is a PEFT LoRA adapter") and page.message.objectName() == "Error"
    assert f"python convert_lora_to_gguf.py --base-model-id meta-llama/Llama-2-7b-hf --outfile {models}" in message
    assert not page.delete_button.isEnabled() and not page.load_button.isEnabled()
    SHOTS.mkdir(parents=True, exist_ok=True)
    qtbot.wait(30)
    page.grab().save(str(SHOTS / "models-adapters.png"))
    page.table.selectRow(0)
    assert page.message.text() == "" and page.load_button.isEnabled()
    page.table.sortByColumn(0, Qt.SortOrder.DescendingOrder)
    names = [name for name, _ in rows(page)]
    assert names.index("Wide Chat") < names.index("Small Chat")


def test_a_dropped_peft_folder_is_offered_to_the_import(qtbot: QtBot, tmp_path: Path) -> None:
    folder = peft_folder(tmp_path / "my-adapter")
    (tmp_path / "notes.txt").write_text("x")
    page = ModelsPage()
    qtbot.addWidget(page)
    page.show()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder)), QUrl.fromLocalFile(str(tmp_path / "notes.txt"))])
    enter = QDragEnterEvent(
        QPoint(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(page, enter)
    assert enter.isAccepted()
    with qtbot.wait_signal(page.import_requested) as blocker:
        drop = QDropEvent(
            QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
        )
        QApplication.sendEvent(page, drop)
    assert blocker.args == [[str(folder)]]  # the import answers with the conversion command
    assert [a.folder for a in find_peft_adapters([tmp_path])] == [folder]
