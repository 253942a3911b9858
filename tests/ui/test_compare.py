"""The Compare page with two tiny models through the real engine host: both answer side by side with their
statistics, loaded one after another, the window's model loaded back, the chat waits meanwhile; "Use this
answer" continues the chat with the chosen answer under its model's name; Stop stops and restores."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.core.assistants import Assistant, AssistantLibrary
from app.core.paths import AppPaths
from app.core.sampling import SamplingSettings
from app.core.store import Store
from app.core.tiny_model import TinyModelSpec, write_tiny_model
from app.ui.app import HearthApp
from tests.ui.conftest import MODEL_NAME, load, send_and_wait, start_app

pytestmark = pytest.mark.gui
SHOTS = Path(__file__).resolve().parents[2] / ".test-cache" / "screenshots"
GREEDY = SamplingSettings(temperature=0.0, top_k=1, max_tokens=24, logit_bias=((2, -100.0),))


@pytest.fixture
def second_model(paths: AppPaths) -> Path:
    return write_tiny_model(paths.models_dir / "tiny-two.gguf", TinyModelSpec(name="Tiny Two", seed=5))


@pytest.fixture
def app(qtbot: QtBot, paths: AppPaths, model_path: Path, second_model: Path):
    library = AssistantLibrary.default(paths)
    library.save(Assistant(id="", name="Brief", system_prompt="Answer in one line.", preset="custom", sampling=GREEDY))
    endless = SamplingSettings(max_tokens=100_000, logit_bias=((2, -100.0),))  # runs to the end of the context
    library.save(Assistant(id="", name="Endless", preset="custom", sampling=endless))
    started = start_app(qtbot, paths)
    yield started
    started.window.close()
    assert started.engine.violations == 0 and started.tasks.violations == 0


def test_two_models_side_by_side_and_use_an_answer(
    qtbot: QtBot, app: HearthApp, model_path: Path, second_model: Path
) -> None:
    load(qtbot, app, model_path)
    window, page = app.window, app.window.compare_page
    qtbot.mouseClick(window.nav["compare"], Qt.MouseButton.LeftButton)
    assert window.page == "compare"
    qtbot.waitUntil(lambda: page.model_boxes[0].count() == 3)  # "Choose a model" + the two models
    assert not page.run_button.isEnabled()
    page.select_models([str(model_path), str(second_model)])
    page.assistant.setCurrentIndex(page.assistant.findText("Brief"))
    assert page.system_prompt.toPlainText() == "Answer in one line."
    page.prompt.setPlainText("Tell me about ships")
    assert page.run_button.isEnabled()
    page.run_button.click()
    assert app.compare.running and page.run_button.text() == "Stop"
    assert "being compared" in window.composer.hint.text() and not window.composer.button.isEnabled()
    qtbot.waitUntil(lambda: not app.compare.running, timeout=60_000)

    results = app.compare.runner.run.results
    assert [r.state for r in results] == ["done", "done"]
    assert [r.loaded.path for r in results] == [model_path, second_model]
    for column, result in zip(page.columns, results):
        assert result.stats is not None and result.stats.generated_tokens == 24 and result.text
        assert column.text.toPlainText() == result.text
        assert column.stats.text().startswith("24 tokens · ") and "tok/s" in column.stats.text()
        assert "to first token" in column.stats.text() and column.use_button.isEnabled()
        assert "Answer in one line." in result.prompt_text and "Tell me about ships" in result.prompt_text
    assert results[0].text != results[1].text  # two different models
    assert [c.title.text() for c in page.columns[:2]] == ["Tiny Chat", "Tiny Two"]
    assert not page.columns[2].isVisible()
    # The window's model is back (the window hears of it through the host's state), and the chat may send again.
    qtbot.waitUntil(lambda: app.engine.model is not None and app.engine.model.path == model_path, timeout=10_000)
    assert window.picker.selected_path() == str(model_path) and app.settings.get("last_model") == str(model_path)
    assert "being compared" not in window.composer.hint.text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(SHOTS / "compare.png"))

    # The same prompt in a chat with the same settings gives the first column's answer.
    app.workflows.new_chat_with(AssistantLibrary.default(app.paths).get("Brief").id)
    send_and_wait(qtbot, app, "Tell me about ships")
    assert app.chat_model.item(1).content == results[0].text

    # "Use this answer" on the second model's column: the open chat goes on with it, under its name.
    conversation_id = app.session.conversation_id
    qtbot.mouseClick(window.nav["compare"], Qt.MouseButton.LeftButton)
    qtbot.mouseClick(page.columns[1].use_button, Qt.MouseButton.LeftButton)
    assert window.page == "chat" and app.session.conversation_id == conversation_id
    rows = app.chat_model.items
    assert [r.role for r in rows] == ["user", "assistant", "user", "assistant"]
    assert rows[2].content == "Tell me about ships" and rows[3].content == results[1].text
    assert rows[3].model == "tiny-two.gguf" and rows[3].generated_tokens == 24
    with Store.open(app.paths.history_db) as store:
        chosen = store.messages(conversation_id)[-1]
        assert chosen.meta["compared_with"] == [MODEL_NAME]
        assert chosen.meta["sampling"] == GREEDY.to_dict() | {"logit_bias": [[2, -100.0]]}
        assert "Tell me about ships" in (store.prompt_text(chosen.id) or "")
    window.grab().save(str(SHOTS / "compare-used.png"))
    send_and_wait(qtbot, app, "Go on")  # the chat continues with the window's model
    assert app.chat_model.item(5).model == MODEL_NAME


def test_stop_stops_and_loads_the_model_back(qtbot: QtBot, app: HearthApp, model_path: Path, second_model: Path):
    load(qtbot, app, model_path)
    page = app.window.compare_page
    app.window.show_page("compare")
    qtbot.waitUntil(lambda: page.model_boxes[0].count() == 3)
    page.select_models([str(second_model), str(model_path)])
    page.assistant.setCurrentIndex(page.assistant.findText("Endless"))
    page.prompt.setPlainText("Write a long story")
    page.run_button.click()
    qtbot.waitUntil(lambda: app.compare.runner.run.results[0].state == "generating", timeout=30_000)
    page.run_button.click()  # Stop
    qtbot.waitUntil(lambda: not app.compare.running, timeout=60_000)
    states = [r.state for r in app.compare.runner.run.results]
    assert states == ["stopped", "stopped"]
    assert page.columns[1].stats.text() == "Stopped" and not page.columns[1].use_button.isEnabled()
    qtbot.waitUntil(lambda: app.engine.model is not None and app.engine.model.path == model_path, timeout=10_000)
    assert page.run_button.text() == "Compare"
