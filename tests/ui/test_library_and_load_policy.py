"""The window over the core's policies: Auto GPU layers from the fit estimate (a simulated GPU), the fit each
model shows, the library following its folders, the purge of old deleted chats, the declared-field editors."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from app.core.fields import LOAD
from app.core.fit import auto_gpu_layers, max_gpu_layers
from app.core.gguf_info import inspect
from app.core.hardware import GpuInfo, HardwareInfo
from app.core.paths import AppPaths
from app.core.store import Store
from app.ui.app import HearthApp
from app.ui.field_editors import FieldEditor
from tests.support.model_shapes import write_shape_model
from tests.ui.conftest import MODEL_NAME, load, start_app

GIB = 1024**3
MIB = 1024**2


def simulated(free_vram: int) -> HardwareInfo:
    gpu = GpuInfo("Simulated GPU", 8 * GIB, free_vram, "test", "CUDA0")
    return HardwareInfo("cpu", 2, 2, 24 * GIB, 20 * GIB, (gpu,), "CUDA", True)


def test_auto_gpu_layers_in_the_app_are_the_fit_estimates(qtbot: QtBot, paths: AppPaths, make_tiny_model) -> None:
    """With a simulated GPU that holds about five of a tiny model's nine layers, the app's "Auto" loads
    exactly the count `hearth fit` reports (the engine here is a CPU build: the count is what it was asked)."""
    layered = make_tiny_model("ui-layered.gguf", name="Layered", n_embd=256, n_layer=8, n_head=8, n_head_kv=4, n_ff=512)
    target = Path(shutil.copy(layered, paths.models_dir / "layered.gguf"))
    info = inspect(target)
    free = 640 * MIB + 53 * MIB
    hardware = simulated(free)
    app = start_app(qtbot, paths, hardware=lambda: hardware)
    try:
        expected = auto_gpu_layers(info, hardware, 4096, "f16")
        assert expected == max_gpu_layers(info, free, 4096) and 0 < expected < 9
        load(qtbot, app, target)
        assert app.engine.model.config.n_gpu_layers == expected
        fit = app.library.snapshot.fits[str(target)]
        assert fit.label == f"{expected} of 9 layers on GPU" and "GPU memory" in fit.tooltip
    finally:
        app.window.close()


def test_models_page_shows_layers_on_gpu_for_a_big_model(qtbot: QtBot, paths: AppPaths) -> None:
    write_shape_model(
        paths.models_dir / "solar-like-13b.Q4_K_M.gguf",
        n_layer=40,
        n_embd=5120,
        n_ff=13824,
        n_head=40,
        n_head_kv=40,
        name="Big Thirteen",
    )
    hardware = simulated(6 * GIB)
    app = start_app(qtbot, paths, hardware=lambda: hardware)
    try:
        page = app.window.models_page
        qtbot.waitUntil(lambda: page.model.rowCount() == 1, timeout=20_000)
        fit_column = [page.model.headerData(c, Qt.Orientation.Horizontal) for c in range(page.model.columnCount())]
        cell = page.model.item(0, fit_column.index("Fit"))
        layers = auto_gpu_layers(inspect(paths.models_dir / "solar-like-13b.Q4_K_M.gguf"), hardware, 4096)
        assert cell.text() == f"{layers} of 41 layers on GPU" and 0 < layers < 41
        assert "needs" in cell.toolTip() and "GPU memory" in cell.toolTip()
        alignment = page.table.horizontalHeader().defaultAlignment()
        assert alignment & Qt.AlignmentFlag.AlignLeft  # titles over their (left-aligned) values
    finally:
        app.window.close()


def test_the_library_follows_its_folders(qtbot: QtBot, hearth: HearthApp, paths: AppPaths, make_tiny_model) -> None:
    picker = hearth.window.picker
    assert picker.count == 1
    outside = make_tiny_model("ui-outside.gguf", name="Copied From Outside", seed=5)
    started = time.monotonic()
    shutil.copy(outside, paths.models_dir / "copied.gguf")  # a file manager, `cp`, `hearth models import` ...
    qtbot.waitUntil(lambda: picker.count == 2, timeout=15_000)
    assert time.monotonic() - started < 10
    assert hearth.window.models_page.model.rowCount() == 2
    (paths.models_dir / "copied.gguf").unlink()
    qtbot.waitUntil(lambda: picker.count == 1, timeout=15_000)


def test_old_deleted_conversations_are_purged_at_start(qtbot: QtBot, paths: AppPaths, model_path: Path) -> None:
    with Store.open(paths.history_db) as store:
        old = store.create_conversation(title="deleted long ago")
        recent = store.create_conversation(title="deleted yesterday")
        kept = store.create_conversation(title="kept")
        store.db.execute("UPDATE conversations SET deleted_at = ? WHERE id = ?", (time.time() - 31 * 86400, old.id))
        store.db.execute("UPDATE conversations SET deleted_at = ? WHERE id = ?", (time.time() - 86400, recent.id))
    app = start_app(qtbot, paths)
    try:
        app.tasks.wait(10_000)
        with Store.open(paths.history_db) as store:
            ids = {c.id for c in store.list_conversations()} | {c.id for c in store.list_conversations(deleted=True)}
        assert ids == {recent.id, kept.id}
    finally:
        app.window.close()


def test_field_editors_take_named_values_and_numbers(qtbot: QtBot) -> None:
    layers = FieldEditor(LOAD["n_gpu_layers"])
    qtbot.addWidget(layers)
    assert layers.value() == -2  # Auto
    changes: list[object] = []
    layers.changed.connect(lambda: changes.append(layers.value()))
    for text, expected in (("all", -1), ("12", 12), ("-7", 12), ("Auto", -2)):
        layers.combo.lineEdit().setText(text)
        layers.combo.lineEdit().editingFinished.emit()
        assert layers.value() == expected, text  # -7 is refused: the last good value stays
    assert changes == [-1, 12, -2]
    ctx = FieldEditor(LOAD["n_ctx"])
    qtbot.addWidget(ctx)
    ctx.combo.lineEdit().setText("1000")  # rounded to the nearest multiple of 256
    ctx.combo.lineEdit().editingFinished.emit()
    assert ctx.value() == 1024
    ctx.set_value(0)
    assert ctx.combo.currentText() == "Model's own" and ctx.value() == 0
    flash = FieldEditor(LOAD["flash_attention"])
    qtbot.addWidget(flash)
    flash.combo.setCurrentIndex(flash.combo.findData("on"))
    assert flash.value() == "on" and LOAD["flash_attention"].to_value(flash.value()) is True
    QTest.qWait(1)


def test_load_settings_panel_round_trip(qtbot: QtBot, hearth: HearthApp) -> None:
    panel = hearth.window.settings_panel
    panel.set_load_settings({"n_ctx": 8192, "n_gpu_layers": -1, "n_threads": 2, "kv_cache_type": "q8_0"})
    values = panel.load_settings()
    assert values["n_ctx"] == 8192 and values["n_gpu_layers"] == -1 and values["n_threads"] == 2
    assert values["kv_cache_type"] == "q8_0" and values["flash_attention"] == "auto"
    assert MODEL_NAME  # the model the fixture put in the library
