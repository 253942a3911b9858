"""LoRA adapters in the window, on real GGUF files made at test time: attached to the model in the chat settings
(only the library's adapters that fit it offered), stored with the model's load settings, applied when it
reloads (the reply changes), one for another base refused with the reason; an assistant's adapter reloads
the model when its chat sends, and one that does not fit is refused before anything is sent."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from PySide6.QtWidgets import QScrollArea
from pytestqt.qtbot import QtBot

from app.core.assistants import Assistant, AssistantLibrary
from app.core.chat_setup import LoadOverrides
from app.core.load_config import LoraAdapter
from app.core.load_policy import configured_load
from app.core.paths import AppPaths
from app.core.sampling import SamplingSettings
from app.core.store import Store
from app.core.tiny_model import TinyModelSpec, write_tiny_lora
from app.ui.app import HearthApp
from tests.ui.conftest import MODEL_NAME, load, send_and_wait, start_app

pytestmark = pytest.mark.gui
SHOTS = Path(__file__).resolve().parents[2] / ".test-cache" / "screenshots"
BASE = TinyModelSpec(name="Tiny Chat", context_length=4096)  # the shape of tests/ui/conftest.py's model
WIDE = TinyModelSpec(name="Wide Base", n_embd=128, n_head=4, n_head_kv=2)
GREEDY = SamplingSettings(temperature=0.0, top_k=1, repeat_penalty=1.0, max_tokens=16, logit_bias=((2, -100.0),))


@pytest.fixture
def adapters(paths: AppPaths) -> dict[str, Path]:
    return {
        "fits": write_tiny_lora(paths.models_dir / "tiny-chat-lora.gguf", BASE),
        "wide": write_tiny_lora(paths.models_dir / "wide-lora.gguf", WIDE),
    }


@pytest.fixture
def app(qtbot: QtBot, paths: AppPaths, model_path: Path, adapters: dict[str, Path]) -> Iterator[HearthApp]:
    started = start_app(qtbot, paths)
    yield started
    started.window.close()
    assert started.engine.violations == 0 and started.tasks.violations == 0


def reply_to(qtbot: QtBot, app: HearthApp, text: str) -> str:
    app.new_chat()
    app.session.set_sampling("custom", GREEDY)
    send_and_wait(qtbot, app, text)
    reply = app.chat_model.item(1)
    assert reply.error is None and reply.content
    return reply.content


def stored_reply(app: HearthApp):
    with Store.open(app.paths.history_db) as store:
        return store.messages(app.session.conversation_id)[-1]


def reload(qtbot: QtBot, app: HearthApp) -> None:
    panel = app.window.settings_panel
    assert panel.reload.isEnabled()
    with qtbot.wait_signal(app.engine.loaded, timeout=30_000):
        panel.reload.click()


def test_attach_an_adapter_in_the_load_settings_and_refuse_one_for_another_base(
    qtbot: QtBot, app: HearthApp, adapters: dict[str, Path]
) -> None:
    load(qtbot, app)
    plain = reply_to(qtbot, app, "hello the")
    section = app.window.settings_panel.loras
    assert section.isEnabled() and section.adapters() == ()
    section._fill_menu()  # what "Add adapter" lists for Tiny Chat
    listed = {a.text(): a for a in section.menu.actions() if a.text()}
    assert listed["tiny-chat-lora"].isEnabled()
    misfit = listed["wide-lora (does not fit)"]
    assert not misfit.isEnabled() and "another size" in misfit.toolTip()
    listed["tiny-chat-lora"].trigger()
    assert section.adapters() == (LoraAdapter(adapters["fits"], 1.0),)
    section.table.cellWidget(0, 1).setValue(0.8)  # its scale
    name = MODEL_NAME
    assert app.settings.model_override(name)["load"]["loras"] == [{"path": str(adapters["fits"]), "scale": 0.8}]
    assert configured_load(app.settings, name).loras == (LoraAdapter(adapters["fits"], 0.8),)
    # Other load settings changed in the panel keep the adapter.
    app.window.settings_panel.load_fields["n_ctx"].set_value(2048)
    app.window.settings_panel.load_fields["n_ctx"].changed.emit()
    assert configured_load(app.settings, name).loras == (LoraAdapter(adapters["fits"], 0.8),)
    assert configured_load(app.settings, name).n_ctx == 2048

    # A file picked by hand for another base: refused with the reason, nothing attached.
    section.ask_path = lambda: str(adapters["wide"])  # type: ignore[method-assign]
    section._on_browse()
    qtbot.waitUntil(section.error.isVisible, timeout=10_000)
    assert section.error.text().startswith("Not attached: wide-lora.gguf was made for a model of another size")
    assert section.adapters() == (LoraAdapter(adapters["fits"], 0.8),)
    section.ask_path = lambda: str(app.engine.model.path)  # type: ignore[method-assign, union-attr]
    section._on_browse()
    qtbot.waitUntil(lambda: "is not a LoRA adapter" in section.error.text(), timeout=10_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    scroll = app.window.settings_panel.findChild(QScrollArea)
    scroll.ensureWidgetVisible(section)  # the panel scrolled to the adapters
    qtbot.wait(30)
    app.window.grab().save(str(SHOTS / "lora-settings.png"))

    reload(qtbot, app)
    assert app.engine.model.config.loras == (LoraAdapter(adapters["fits"], 0.8),)  # type: ignore[union-attr]
    adapted = reply_to(qtbot, app, "hello the")
    assert adapted != plain
    assert stored_reply(app).meta["load"]["loras"] == [{"path": str(adapters["fits"]), "scale": 0.8}]
    # Removed again: the model's own output comes back after a reload.
    section.table.selectRow(0)
    section.remove_button.click()
    assert "loras" not in app.settings.model_override(name)["load"]
    reload(qtbot, app)
    assert reply_to(qtbot, app, "hello the") == plain


def test_an_assistants_adapter_reloads_on_send_and_a_misfit_is_refused(
    qtbot: QtBot, app: HearthApp, paths: AppPaths, adapters: dict[str, Path]
) -> None:
    library = AssistantLibrary.default(paths)
    tuned = library.save(
        Assistant(
            id="",
            name="Tuned",
            preset="custom",
            sampling=GREEDY,
            load=LoadOverrides(n_ctx=2048, loras=(LoraAdapter(adapters["fits"], 1.0),)),
        )
    )
    library.save(replace(tuned, id="", name="Misfit", load=LoadOverrides(loras=(LoraAdapter(adapters["wide"]),))))
    load(qtbot, app)
    plain = reply_to(qtbot, app, "hello the")
    assert app.engine.model.config.loras == ()  # type: ignore[union-attr]

    app.workflows.new_chat_with(tuned.id)
    notice = app.window.composer.notice_label.text()
    assert notice.startswith("Tuned loads Tiny Chat with context 2,048, LoRA tiny-chat-lora.gguf × 1")
    assert "sending reloads the model first" in notice
    loads: list[object] = []
    app.engine.loaded.connect(loads.append)
    send_and_wait(qtbot, app, "hello the")
    assert len(loads) == 1  # reloaded once, before the reply
    model = app.engine.model
    assert model is not None and model.n_ctx == 2048
    assert model.config.loras == (LoraAdapter(adapters["fits"], 1.0),)
    reply = stored_reply(app)
    assert reply.content != plain and reply.meta["load"]["loras"] == [{"path": str(adapters["fits"]), "scale": 1.0}]
    send_and_wait(qtbot, app, "and again")
    assert len(loads) == 1  # loaded as this chat needs it: no second reload

    # A plain chat gets the model back as its own settings say.
    assert reply_to(qtbot, app, "hello the") == plain
    assert len(loads) == 2 and app.engine.model.config.loras == ()  # type: ignore[union-attr]

    # An adapter for another base: refused with the reason, nothing sent, the model left alone.
    app.workflows.new_chat_with(library.get("Misfit").id)
    assert app.window.composer.notice_label.text().startswith("This chat cannot run on the loaded model:")
    app.window.composer.editor.setPlainText("hello")
    app.window.composer._on_submit()
    assert not app.session.generating and app.chat_model.rowCount() == 0
    assert app.session.conversation is None  # nothing was saved
    notice = app.window.composer.notice_label.text()
    assert notice.startswith("Not sent: the LoRA adapter does not fit Tiny Chat: wide-lora.gguf was made for")
    assert len(loads) == 2 and app.engine.model is not None
