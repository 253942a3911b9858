"""Settings -> Local server: switched on and off while a chat streams in the window; API clients use the
window's model (the same engine host) through the official openai client; the status bar counts their
requests; network access needs a key; API requests stay out of the history."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import openai
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QDialogButtonBox
from pytestqt.qtbot import QtBot

from app.core.tiny_model import TinyModelSpec, _vocabulary
from app.ui.app import HearthApp
from app.ui.settings_dialog import SettingsDialog
from tests.ui.conftest import EOS, MODEL_NAME, load, long_replies, type_and_send

TOKENS, _, _ = _vocabulary(TinyModelSpec(name="Tiny Chat", context_length=4096))
WATER = {str(EOS): -100, str(TOKENS.index("\u2581water")): 100}  # every token " water", no end


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def press_ok(qtbot: QtBot, dialog: SettingsDialog) -> None:
    ok = dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok)
    qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)


def switch(qtbot: QtBot, hearth: HearthApp, on: bool, **changes: Any) -> SettingsDialog:
    dialog = hearth.open_settings()
    dialog.tabs.setCurrentIndex(dialog.tabs.count() - 1)
    dialog.server_enabled.setChecked(on)
    if "port" in changes:
        dialog.server_port.setValue(changes["port"])
    if "network" in changes:
        dialog.server_network.setChecked(changes["network"])
    press_ok(qtbot, dialog)
    return dialog


def reply_text(hearth: HearthApp) -> str:
    return hearth.chat_model.item(hearth.chat_model.rowCount() - 1).content


def test_the_server_switch_while_a_chat_streams_in_the_window(qtbot: QtBot, hearth: HearthApp):
    load(qtbot, hearth)
    long_replies(hearth, 3500)  # with the API's tokens, well inside the context of 4,096 they share
    type_and_send(qtbot, hearth, "Tell me everything")
    qtbot.waitUntil(lambda: len(reply_text(hearth)) > 20, timeout=20_000)
    port = free_port()
    dialog = switch(qtbot, hearth, True, port=port)
    qtbot.waitUntil(lambda: hearth.local_server.state == "running", timeout=10_000)
    status = hearth.window.status.server
    assert status.isVisible() and status.text() == f"API :{port}"
    dialog = hearth.open_settings()
    assert dialog.server_status.text() == f"Running at http://127.0.0.1:{port}/v1"
    qtbot.mouseClick(dialog.server_copy, Qt.MouseButton.LeftButton)
    url = QGuiApplication.clipboard().text()
    assert url == f"http://127.0.0.1:{port}/v1"
    dialog.reject()

    result: dict[str, Any] = {}
    window_grew: list[int] = []

    def call_api() -> None:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)
        parts = []
        stream = client.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=60, logit_bias=WATER, stream=True
        )
        for chunk in stream:
            result["model"] = chunk.model
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
                time.sleep(0.01)  # a slow reader: the request stays in flight long enough to be seen
        result["text"] = "".join(parts)

    before = len(reply_text(hearth))
    conversations = len(hearth.store.list_conversations())
    thread = threading.Thread(target=call_api)
    thread.start()
    qtbot.waitUntil(lambda: status.text() == f"API :{port} · 1 request", timeout=20_000)
    window_grew.append(len(reply_text(hearth)))
    qtbot.waitUntil(lambda: not thread.is_alive(), timeout=60_000)
    assert result["text"] == " water" * 60 and result["model"] == MODEL_NAME
    assert hearth.session.generating, "the window's chat kept streaming beside the API's"
    assert window_grew[0] > before
    # The window shows its tokens in batches on the GUI thread: give the next batch time to land.
    qtbot.waitUntil(lambda: len(reply_text(hearth)) > window_grew[0], timeout=10_000)
    qtbot.waitUntil(lambda: status.text() == f"API :{port}", timeout=10_000)
    assert len(hearth.store.list_conversations()) == conversations, "API requests stay out of the history"

    switch(qtbot, hearth, False)
    qtbot.waitUntil(lambda: hearth.local_server.state == "off", timeout=20_000)
    assert not status.isVisible() and not hearth.settings.get("server_enabled")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    assert hearth.session.generating, "switching the server off left the window's chat alone"
    length = len(reply_text(hearth))
    qtbot.waitUntil(lambda: len(reply_text(hearth)) > length, timeout=10_000)
    hearth.session.stop()
    qtbot.waitUntil(lambda: not hearth.session.generating, timeout=20_000)
    assert hearth.chat_model.item(1).finish_reason == "cancelled"


def test_other_devices_need_an_api_key(qtbot: QtBot, hearth: HearthApp):
    load(qtbot, hearth)
    port = free_port()
    dialog = switch(qtbot, hearth, True, port=port, network=True)
    assert dialog.isVisible() and "API key" in dialog.error.text()
    assert not hearth.settings.get("server_enabled") and hearth.local_server.state == "off"  # nothing was saved
    qtbot.mouseClick(dialog.server_generate, Qt.MouseButton.LeftButton)
    key = dialog.server_key.text()
    assert key.startswith("hearth-") and len(key) > 20
    press_ok(qtbot, dialog)
    assert not dialog.isVisible()
    qtbot.waitUntil(lambda: hearth.local_server.state == "running", timeout=10_000)
    assert hearth.local_server.server is not None and hearth.local_server.server.config.host == "0.0.0.0"
    local = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=local, api_key="wrong", max_retries=0).models.list()
    models = openai.OpenAI(base_url=local, api_key=key, max_retries=0).models.list()
    assert models.data[0].id == MODEL_NAME
    hearth.window.close()  # closing the window stops the server with everything else
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
