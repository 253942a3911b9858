"""Tools in the window, driven like a user would: MCP servers configured in Settings -> Tools, turned on per
chat in the chat panel, every call approved in a dialog, calls and results shown as blocks, Stop and closing
the window leaving nothing running. The end-to-end tests run the real gemma-3-270m forced by the grammar (the
panel's "Must call X") against real MCP servers."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.cli import run
from app.core.messages import ChatMessage, ToolCall
from app.core.paths import AppPaths
from app.core.sampling import SamplingSettings
from app.core.store import Store
from app.core.tool_loop import DENIED_TEXT, STOPPED_TEXT, Approval, stored_meta
from app.core.tools import ToolSpec
from app.ui import tool_blocks
from app.ui.app import HearthApp
from app.ui.mcp_settings import McpSettingsPage
from app.ui.tool_approval import ApprovalBridge, ApprovalDialog
from tests.conftest import MCP_TEST_SERVER
from tests.core.test_tool_loop import assert_none_left, children
from tests.ui.conftest import click_action, start_app, type_and_send

pytestmark = pytest.mark.gui
PY = sys.executable
SHOTS = Path(__file__).resolve().parents[2] / ".test-cache" / "screenshots"


def write_servers(paths: AppPaths, servers: dict[str, dict]) -> Path:
    path = paths.data_dir / "mcp.json"
    path.write_text(json.dumps({"mcpServers": servers}, indent=2))
    return path


def turn_on(qtbot: QtBot, app: HearthApp, name: str) -> None:
    box = app.window.settings_panel.tools.box(name)
    box.setChecked(True)  # as a click does: toggled -> changed
    assert name in app.session.tool_names


def choose_first_call(qtbot: QtBot, app: HearthApp, tool: str) -> None:
    """Pick "Must call <tool>" in the panel once the tool's server has listed it."""
    combo = app.window.settings_panel.tools.choice
    qtbot.waitUntil(lambda: combo.findData(tool) >= 0, timeout=60_000)
    combo.setCurrentIndex(combo.findData(tool))
    assert app.session.tool_choice == tool


def answer(qtbot: QtBot, app: HearthApp, button: str, timeout: int = 240_000) -> ApprovalDialog:
    qtbot.waitUntil(lambda: app.approval_dialog is not None and app.approval_dialog.isVisible(), timeout=timeout)
    dialog = app.approval_dialog
    assert dialog is not None
    qtbot.mouseClick(getattr(dialog, f"{button}_button"), Qt.MouseButton.LeftButton)
    return dialog


def wait_done(qtbot: QtBot, app: HearthApp, timeout: int = 240_000) -> None:
    qtbot.waitUntil(lambda: not app.session.generating, timeout=timeout)


def shot(qtbot: QtBot, widget, name: str) -> None:
    qtbot.wait(100)  # rows whose height changed are laid out again first
    SHOTS.mkdir(parents=True, exist_ok=True)
    widget.grab().save(str(SHOTS / name))


# ---- Settings -> Tools ------------------------------------------------------------------------------------------


def test_settings_tools_tab_checks_the_json_and_the_panel_follows(qtbot: QtBot, hearth: HearthApp) -> None:
    panel = hearth.window.settings_panel.tools
    assert panel.empty.isVisible() or not panel.isVisible()
    assert panel.box("calculator").text() == "calculator (built-in)" and not panel.box("calculator").isChecked()
    dialog = hearth.open_settings()
    page = next(p for p in dialog.pages if isinstance(p, McpSettingsPage))
    page.editor.setPlainText('{"mcpServers": {"time": {"command": "uvx", "args": [}}')
    assert "not valid JSON" in page.status.text() and "line 1" in page.status.text()
    dialog._on_accept()
    assert dialog.isVisible() and "Tools: not valid JSON" in dialog.error.text()
    assert not hearth.tools.config_path.exists()  # nothing written
    page.editor.setPlainText('{"mcpServers": {"time": {"command": "uvx"}, "web": {"url": "ftp://x"}}}')
    assert "must start with http" in page.status.text()
    page.editor.setPlainText(json.dumps({"mcpServers": {"time": {"command": PY, "args": ["-m", "mcp_server_time"]}}}))
    assert page.status.text() == "1 server: time"
    dialog._on_accept()
    assert not dialog.isVisible()
    assert json.loads(hearth.tools.config_path.read_text())["mcpServers"]["time"]["command"] == PY
    assert hearth.tools.server_names() == ["time"]
    assert panel.box("time").text() == "time (MCP server)" and not panel.box("time").isChecked()
    # The tools a server gives are listed with their descriptions once it is turned on.
    turn_on(qtbot, hearth, "time")
    details = panel.details("time")
    qtbot.waitUntil(lambda: "get_current_time — Get current time" in details.text(), timeout=60_000)
    assert "convert_time" in details.text()
    combo = panel.choice
    assert [combo.itemData(i) for i in range(combo.count())] == ["auto", "required", "get_current_time", "convert_time"]
    shot(qtbot, hearth.window.settings_panel.tools, "tools-panel.png")


def test_a_broken_configuration_file_is_named_and_the_app_starts(qtbot: QtBot, paths: AppPaths, model_path) -> None:
    (paths.data_dir / "mcp.json").write_text('{"mcpServers": {"x": {"command": "a", "url": "http://b"}}}')
    app = start_app(qtbot, paths)
    try:
        panel = app.window.settings_panel.tools
        assert "cannot be used" in panel.problem.text() and "either a 'command'" in panel.problem.text()
        assert app.tools.server_names() == []
    finally:
        app.window.close()


# ---- tool turns in the chat --------------------------------------------------------------------------------------


def stored_exchange(paths: AppPaths) -> int:
    """A conversation with a reply that called a tool, written to the history as a reply with tools writes it."""
    call = ToolCall("abcdefghi", "calculator", '{"expression": "6*7"}')
    with Store.open(paths.history_db) as store:
        conversation = store.create_conversation(meta={"tools": ["calculator"]})
        store.add_message(conversation.id, "user", "What is 6*7?")
        first = ChatMessage("assistant", "Let me compute that.", (call,))
        store.add_message(conversation.id, "assistant", first.content, meta=stored_meta(first), model="m.gguf")
        result = ChatMessage("tool", "42\nsecond line", tool_call_id=call.id, name="calculator")
        store.add_message(
            conversation.id, "tool", result.content, meta=stored_meta(result, outcome="ran", approval="once")
        )
        store.add_message(conversation.id, "assistant", "It is 42.", model="m.gguf")
    return conversation.id


def test_a_stored_exchange_reopens_with_its_blocks(qtbot: QtBot, hearth: HearthApp) -> None:
    conversation = stored_exchange(hearth.paths)
    hearth.open_conversation(conversation)
    model = hearth.chat_model
    assert [model.item(r).role for r in range(model.rowCount())] == ["user", "assistant", "tool", "assistant"]
    called = model.item(1)
    assert called.tool_calls[0].name == "calculator"
    assert "Let me compute that." in called.display_text() and "Called **calculator**" in called.display_text()
    assert '"expression": "6*7"' in called.display_text()
    result = model.item(2)
    assert result.tool_name == "calculator" and result.tool_outcome == "ran"
    assert result.display_text() == "42 …"  # closed: the first line
    assert hearth.session.tool_names == ("calculator",)
    assert hearth.window.settings_panel.tools.box("calculator").isChecked()
    click_action(qtbot, hearth, 2, "expand")
    assert model.item(2).expanded and "42\nsecond line" in model.item(2).display_text()
    shot(qtbot, hearth.window, "tool-blocks.png")
    click_action(qtbot, hearth, 2, "collapse")
    assert not model.item(2).expanded
    history = hearth.session._history(3)
    assert history[1].tool_calls == called.tool_calls and history[2].tool_call_id == "abcdefghi"


def test_turning_tools_off_and_on_is_kept_with_the_chat(qtbot: QtBot, hearth: HearthApp) -> None:
    conversation = stored_exchange(hearth.paths)
    hearth.open_conversation(conversation)
    panel = hearth.window.settings_panel.tools
    panel.box("calculator").setChecked(False)
    panel.box("current_time").setChecked(True)
    panel.choice.setCurrentIndex(panel.choice.findData("required"))
    with Store.open(hearth.paths.history_db) as store:
        meta = store.conversation(conversation).meta
    assert meta["tools"] == ["current_time"] and meta["tool_choice"] == "required"
    hearth.new_chat()
    assert hearth.session.tool_names == () and not panel.box("current_time").isChecked()  # off by default
    hearth.open_conversation(conversation)
    assert panel.box("current_time").isChecked() and panel.chosen() == "required"


# ---- the approval bridge -----------------------------------------------------------------------------------------


def test_approval_is_asked_on_the_gui_thread_and_stop_withdraws_it(qtbot: QtBot) -> None:
    bridge = ApprovalBridge()
    spec = ToolSpec("get_current_time", "Get the time.", source="mcp:time")
    call = ToolCall("1", "get_current_time", '{"timezone": "Asia/Tokyo"}')
    shown: list[ApprovalDialog] = []
    bridge.requested.connect(lambda request: shown.append(ApprovalDialog(request, bridge)) or shown[-1].show())
    answers: list[Approval] = []
    stop = threading.Event()
    worker = threading.Thread(target=lambda: answers.append(bridge.ask(call, spec, stop)))
    worker.start()
    qtbot.waitUntil(lambda: bool(shown), timeout=5000)
    dialog = shown[0]
    assert '"timezone": "Asia/Tokyo"' in dialog.arguments.toPlainText()
    qtbot.mouseClick(dialog.always_button, Qt.MouseButton.LeftButton)
    worker.join(5)
    assert answers == [Approval.ALWAYS] and not dialog.isVisible()
    # Stop while the question waits: answered "deny", the dialog closes by itself.
    worker = threading.Thread(target=lambda: answers.append(bridge.ask(call, spec, stop)))
    worker.start()
    qtbot.waitUntil(lambda: len(shown) == 2 and shown[1].isVisible(), timeout=5000)
    stop.set()
    worker.join(5)
    qtbot.waitUntil(lambda: not shown[1].isVisible(), timeout=5000)
    assert answers[-1] is Approval.DENY
    # Closing (the window goes): waiting and later questions are denied.
    stop.clear()
    worker = threading.Thread(target=lambda: answers.append(bridge.ask(call, spec, stop)))
    worker.start()
    qtbot.waitUntil(lambda: len(shown) == 3, timeout=5000)
    bridge.close()
    worker.join(5)
    assert answers[-1] is Approval.DENY and bridge.ask(call, spec, stop) is Approval.DENY
    for dialog in shown:
        dialog.close()


# ---- end to end with gemma-3-270m --------------------------------------------------------------------------------


@pytest.fixture
def gemma_app(qtbot: QtBot, paths: AppPaths, gemma_path: Path):
    """The window over a history with gemma in the models folder (linked, not copied)."""
    target = paths.models_dir / gemma_path.name
    try:
        target.symlink_to(gemma_path)
    except OSError:
        shutil.copy(gemma_path, target)
    made: list[HearthApp] = []

    def make() -> HearthApp:
        app = start_app(qtbot, paths)
        app.settings.set("default_n_ctx", 2048)
        app.load_model(str(target))
        qtbot.waitUntil(lambda: app.engine.model is not None, timeout=60_000)
        app.session.set_sampling("custom", SamplingSettings(temperature=0.0, max_tokens=40, seed=1))
        app.tools.max_rounds = 2  # one round of calls, then the answer: calls in it are shown, never asked about
        made.append(app)
        return app

    yield make
    for app in made:
        app.window.close()


@pytest.mark.slow
def test_a_call_approved_in_the_window_runs_shows_and_is_saved(qtbot: QtBot, paths: AppPaths, gemma_app, capsys):
    before = children()
    write_servers(paths, {"time": {"command": PY, "args": ["-m", "mcp_server_time", "--local-timezone", "Asia/Tokyo"]}})
    app = gemma_app()
    turn_on(qtbot, app, "time")
    choose_first_call(qtbot, app, "get_current_time")
    type_and_send(qtbot, app, "What time is it in Tokyo?")
    dialog = answer(qtbot, app, "once")
    assert "<b>get_current_time</b>, from the MCP server 'time'" in dialog.title.text()
    assert '"timezone": ' in dialog.arguments.toPlainText()  # the exact arguments the call will get
    wait_done(qtbot, app)
    model = app.chat_model
    roles = [model.item(r).role for r in range(model.rowCount())]
    assert roles == ["user", "assistant", "tool", "assistant"], roles
    called, result, answer_row = model.item(1), model.item(2), model.item(3)
    assert (
        called.tool_calls[0].name == "get_current_time" and "Called **get\\_current\\_time**" in called.display_text()
    )
    assert result.tool_outcome in ("ran", "failed") and not result.streaming and result.message_id is not None
    assert not answer_row.streaming and answer_row.finish_reason in ("stop", "length")
    click_action(qtbot, app, 2, "expand")
    assert model.item(2).expanded
    shot(qtbot, app.window, "tool-call-gemma.png")
    conversation = app.session.conversation_id
    with Store.open(paths.history_db) as store:
        stored = store.messages(conversation)
        assert [m.role for m in stored] == roles
        assert stored[1].meta["tool_calls"][0]["function"]["name"] == "get_current_time"
        assert stored[2].content == result.content and stored[2].meta["approval"] == "once"
        assert stored[2].meta["tool_call_id"] == stored[1].meta["tool_calls"][0]["id"]
        assert f"<tool_response>\n{stored[2].content}\n</tool_response>" in (store.prompt_text(stored[3].id) or "")
    assert run(["history", "export", str(conversation), "--format", "json"]) == 0
    exported = json.loads(capsys.readouterr().out)["conversations"][0]["messages"]
    assert [m["role"] for m in exported] == roles and exported[2]["meta"]["name"] == "get_current_time"
    # Reopened, the exchange reads the same; regenerate makes a new branch of the whole reply.
    app.new_chat()
    app.open_conversation(conversation)
    assert [model.item(r).role for r in range(model.rowCount())] == roles
    assert model.item(1).tool_calls == called.tool_calls
    click_action(qtbot, app, 3, "regenerate")
    answer(qtbot, app, "always")
    wait_done(qtbot, app)
    assert (model.item(1).sibling_index, model.item(1).sibling_count) == (2, 2)
    assert [model.item(r).role for r in range(model.rowCount())] == roles
    with Store.open(paths.history_db) as store:
        assert store.conversation(conversation).meta["tools_allowed"] == ["get_current_time"]
    app.window.close()
    assert_none_left(before)  # the server stopped with the window


@pytest.mark.slow
def test_deny_stop_and_a_broken_server_in_the_window(qtbot: QtBot, paths: AppPaths, gemma_app):
    before = children()
    write_servers(
        paths,
        {
            "test": {"command": PY, "args": [str(MCP_TEST_SERVER), "stdio", "--grandchild"]},
            "broken": {"command": PY, "args": [str(MCP_TEST_SERVER), "exit-at-start"]},
        },
    )
    app = gemma_app()
    turn_on(qtbot, app, "test")
    turn_on(qtbot, app, "broken")
    details = app.window.settings_panel.tools.details("broken")
    qtbot.waitUntil(lambda: "could not start" in details.text(), timeout=60_000)
    assert "refuses to start (missing API key)" in details.text()  # the server's own words, in place
    choose_first_call(qtbot, app, "echo")
    # Denied: nothing runs, the model is told, the chat goes on.
    type_and_send(qtbot, app, "Say hello back to me.")
    answer(qtbot, app, "deny")
    notice = app.window.composer.notice_label.text()
    assert "MCP server 'broken' could not start" in notice and "The chat goes on without it." in notice
    wait_done(qtbot, app)
    model = app.chat_model
    assert model.item(2).role == "tool" and model.item(2).tool_outcome == "denied"
    assert model.item(2).content == DENIED_TEXT and tool_blocks.header(model.item(2)) == "Tool · echo · denied by you"
    assert model.item(3).role == "assistant" and not model.item(3).streaming  # the model was told, and answered
    # A server that crashes in the call: the error is shown in place and goes to the model; the chat goes on.
    choose_first_call(qtbot, app, "crash")
    type_and_send(qtbot, app, "Crash, please.")
    answer(qtbot, app, "once")
    wait_done(qtbot, app)
    crashed = model.item(6)
    assert crashed.role == "tool" and crashed.tool_outcome == "failed"
    assert "'test' stopped working" in crashed.content and "crash tool called" in crashed.content
    assert model.item(7).role == "assistant" and not model.item(7).error
    # Stop while the approval waits: the dialog closes, nothing runs (the crashed server starts again).
    choose_first_call(qtbot, app, "stall")
    rows = model.rowCount()
    type_and_send(qtbot, app, "Please stall.")
    qtbot.waitUntil(lambda: app.approval_dialog is not None and app.approval_dialog.isVisible(), timeout=240_000)
    app.session.stop()
    qtbot.waitUntil(lambda: app.approval_dialog is None and not app.session.generating, timeout=10_000)
    assert model.item(rows + 2).tool_outcome == "stopped"
    # Stop during the call: the minute-long call is abandoned at once.
    type_and_send(qtbot, app, "Please stall again.")
    answer(qtbot, app, "once")
    qtbot.waitUntil(
        lambda: any(model.item(r).status.startswith("Running stall") for r in range(model.rowCount())), timeout=60_000
    )
    pressed = time.monotonic()
    qtbot.mouseClick(app.window.composer.button, Qt.MouseButton.LeftButton)  # the composer's Stop
    wait_done(qtbot, app, 10_000)
    assert time.monotonic() - pressed < 5
    last = model.item(model.rowCount() - 1)
    assert last.role == "tool" and last.tool_outcome == "stopped" and last.content == STOPPED_TEXT
    with Store.open(paths.history_db) as store:
        stored = store.messages(app.session.conversation_id)
        assert stored[-1].meta["outcome"] == "stopped" and all(m.complete for m in stored)
    # Closing the window while a question waits: denied, the reply stopped, every server process gone.
    type_and_send(qtbot, app, "Stall once more.")
    qtbot.waitUntil(lambda: app.approval_dialog is not None and app.approval_dialog.isVisible(), timeout=240_000)
    closing = time.monotonic()
    app.window.close()
    assert time.monotonic() - closing < 20
    assert_none_left(before)
