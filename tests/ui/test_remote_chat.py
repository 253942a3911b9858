"""The window with a model on a server: Settings → Servers, the picker's remote rows, a chat sent there with
everything the local chat has (streaming, Stop, regenerate, edit, Show prompt, stats, history), errors in
place. Real llama-cpp-python server on 127.0.0.1 with the tiny model; a stand-in server for the failures."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import keyring
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from app.core.remote_servers import RemoteModel, ServerConfig
from app.core.sampling import SamplingSettings
from app.core.store import Store
from app.ui.app import HearthApp
from app.ui.prompt_dialog import PromptDialog
from tests.support.file_keyring import ENV, FileKeyring
from tests.support.openai_servers import RunningServer, start_llama_cpp_server
from tests.support.openai_stub import Behaviour, OpenAIStub
from tests.ui.conftest import EOS, click_action, load, send_and_wait, short_replies, type_and_send

pytestmark = pytest.mark.gui
ALIAS = "tiny-remote"


@pytest.fixture(scope="module")
def served(make_tiny_model: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    model = make_tiny_model("remote-tiny.gguf", name="Remote Tiny", context_length=4096)
    server = start_llama_cpp_server(model, ALIAS, tmp_path_factory.mktemp("gui-servers"), n_ctx=1024)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def file_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FileKeyring]:
    monkeypatch.setenv(ENV, str(tmp_path / "keyring.json"))
    previous = keyring.get_keyring()
    backend = FileKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    server = OpenAIStub()
    yield server
    server.close()


def text_only(app: HearthApp, tokens: int) -> None:
    """Long replies of word pieces only: llama-cpp-python's server holds back streamed text while it ends in
    an incomplete UTF-8 sequence, which the tiny model's random byte tokens (ids 3-258) make for a long time."""
    banned = ((EOS, -100.0), *((token, -100.0) for token in range(3, 259)))
    app.session.set_sampling("custom", SamplingSettings(max_tokens=tokens, seed=1, logit_bias=banned))


def use(qtbot: QtBot, app: HearthApp, server: str, model: str) -> None:
    """Pick the remote model in the picker and press Use, as a user would."""
    picker = app.window.picker
    qtbot.waitUntil(lambda: model in picker.remote_rows(server), timeout=20_000)
    assert picker.select_remote(server, model)
    assert picker.load_button.text() == "Use" and picker.load_button.isEnabled()
    qtbot.mouseClick(picker.load_button, Qt.MouseButton.LeftButton)
    assert app.session.remote == RemoteModel(server, model)


def test_add_a_server_in_settings_and_chat_with_its_model(
    qtbot: QtBot, hearth: HearthApp, served: RunningServer, tmp_path: Path
) -> None:
    window = hearth.window
    assert "Load a model" in window.composer.hint.text()  # nothing to chat with yet
    dialog = hearth.open_settings()
    dialog.tabs.setCurrentWidget(dialog.servers)
    tab = dialog.servers
    qtbot.mouseClick(tab.add_button, Qt.MouseButton.LeftButton)
    tab.name.setText("box")
    tab.url.setText("http://127.0.0.1:1/v1/chat")  # a wrong URL is refused at once, in words
    qtbot.mouseClick(tab.save_button, Qt.MouseButton.LeftButton)
    assert "ends in /v1" in tab.status.text() and not hearth.servers.all()
    tab.url.setText(served.url)
    qtbot.mouseClick(tab.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.status.text().startswith("Connected to box"), timeout=20_000)
    assert f"1 model ({ALIAS})" in tab.status.text()
    qtbot.mouseClick(tab.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.status.text().startswith("Saved box"), timeout=10_000)
    assert [c.name for c in hearth.servers.all()] == ["box"] and tab.list.count() == 1
    dialog.grab().save(str(tmp_path / "servers-tab.png"))
    dialog.close()

    # The picker lists the server's models under its name, marked remote.
    picker = window.picker
    qtbot.waitUntil(lambda: picker.remote_rows("box") == [ALIAS], timeout=20_000)
    headings = [picker.model.item(r, 0).text() for r in range(picker.model.rowCount())]
    assert "box — remote server" in headings
    row = headings.index(f"{ALIAS} · box")
    assert row > headings.index("box — remote server")  # listed under the server's name
    assert picker.model.item(row, 5).text() == "remote"  # the Fit column says where it runs
    use(qtbot, hearth, "box", ALIAS)
    assert picker.state.text() == f"Remote: {ALIAS} on box" and not picker.load_button.isEnabled()
    assert "Load a model" not in window.composer.hint.text() and window.welcome.state == "start"
    window.grab().save(str(tmp_path / "remote-picked.png"))

    # A streamed reply, with its speed under it, saved like any other.
    short_replies(hearth, 24)
    hearth.session.set_system_prompt("Be terse.")
    send_and_wait(qtbot, hearth, "Hello over there")
    reply = hearth.chat_model.item(1)
    assert reply.finish_reason == "length" and reply.content and reply.error is None
    assert reply.gen_tps and reply.ttft_ms is not None
    assert "tok/s" in reply.stats_line() and "to first token" in reply.stats_line()
    assert reply.model == f"{ALIAS} · box"
    assert window.status.speed.text().endswith("tok/s")
    cid = hearth.session.conversation_id
    with Store.open(hearth.paths.history_db) as store:
        assert store.conversation(cid).meta["remote"] == {"server": "box", "model": ALIAS}
        saved = store.messages(cid)[-1]
        assert saved.content == reply.content and saved.meta["backend"] == "box"

    # Show prompt: the exact request body, the server's template.
    click_action(qtbot, hearth, 1, "prompt")
    prompt = window.findChild(PromptDialog)
    assert prompt is not None and prompt.isVisible()
    body = json.loads(prompt.text.toPlainText())
    assert body["model"] == ALIAS and body["stream"] is True and body["max_tokens"] == 24
    assert body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hello over there"},
    ]
    prompt.close()

    # Regenerate: a second branch from the server.
    short_replies(hearth, 24, seed=5)
    click_action(qtbot, hearth, 1, "regenerate")
    qtbot.waitUntil(lambda: not hearth.session.generating, timeout=60_000)
    second = hearth.chat_model.item(1)
    assert (second.sibling_index, second.sibling_count) == (2, 2) and second.finish_reason == "length"

    # Edit and resend: a new branch of the question, answered by the server.
    click_action(qtbot, hearth, 0, "edit")
    window.composer.editor.setPlainText("Edited question")
    QTest.keyClick(window.composer.editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not hearth.session.generating, timeout=60_000)
    items = hearth.chat_model.items
    assert items[0].content == "Edited question" and (items[0].sibling_index, items[0].sibling_count) == (2, 2)
    assert items[1].finish_reason == "length" and items[1].model == f"{ALIAS} · box"

    # Stop mid-stream: the text so far stays.
    text_only(hearth, 600)  # the server's context is 1,024 tokens
    type_and_send(qtbot, hearth, "Tell me a long story")
    qtbot.waitUntil(
        lambda: (
            hearth.chat_model.rowCount() == 4
            and (len(hearth.chat_model.item(3).content) > 10 or not hearth.session.generating)
        ),
        timeout=60_000,
    )
    assert hearth.session.generating, hearth.chat_model.item(3)
    QTest.keyClick(window.composer.editor, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not hearth.session.generating, timeout=5_000)
    stopped = hearth.chat_model.item(3)
    assert stopped.finish_reason == "cancelled" and "stopped" in stopped.stats_line() and stopped.content

    # Search finds the remote chat; the conversation remembers where it was sent.
    assert any(hit.conversation_id == cid for hit in hearth.session.search("Edited"))
    hearth.new_chat()
    assert hearth.session.remote == RemoteModel("box", ALIAS)  # a new chat goes to the same place
    hearth.session.use_remote(None)
    assert "Load a model" in window.composer.hint.text()
    hearth.open_conversation(cid)
    assert hearth.session.remote == RemoteModel("box", ALIAS)
    assert picker.state.text() == f"Remote: {ALIAS} on box"


def test_loading_a_local_model_switches_back_and_each_chat_keeps_its_place(
    qtbot: QtBot, hearth: HearthApp, served: RunningServer, model_path: Path
) -> None:
    hearth.servers.put(ServerConfig("box", served.url))
    use(qtbot, hearth, "box", ALIAS)
    short_replies(hearth, 12)
    send_and_wait(qtbot, hearth, "remote question")
    remote_chat = hearth.session.conversation_id
    hearth.new_chat()
    load(qtbot, hearth, model_path)  # Load in the picker: chat with the local model again
    assert hearth.session.remote is None
    assert "context" in hearth.window.picker.state.text()
    send_and_wait(qtbot, hearth, "local question")
    local_chat = hearth.session.conversation_id
    assert hearth.chat_model.item(1).model.endswith(".gguf")
    hearth.open_conversation(remote_chat)
    assert hearth.session.remote == RemoteModel("box", ALIAS)
    send_and_wait(qtbot, hearth, "and another")
    assert hearth.chat_model.item(3).model == f"{ALIAS} · box"
    hearth.open_conversation(local_chat)
    assert hearth.session.remote is None


def test_failures_show_in_place_with_the_server_name_and_regenerate_retries(
    qtbot: QtBot, hearth: HearthApp, stub: OpenAIStub, tmp_path: Path
) -> None:
    hearth.servers.put(ServerConfig("stub", stub.url))
    use(qtbot, hearth, "stub", "stub-model")
    stub.behaviour = Behaviour(key="sk-right-123456")  # from now on the server wants a key we do not have
    send_and_wait(qtbot, hearth, "hi")
    failed = hearth.chat_model.item(1)
    assert failed.error and "server 'stub' refused access (401 Unauthorized" in failed.error
    assert failed.finish_reason == "error" and "failed" in failed.stats_line()
    hearth.window.grab().save(str(tmp_path / "remote-error.png"))
    assert hearth.session.can_send() == ""  # the app goes on
    stub.behaviour = Behaviour()  # the server accepts us now: retry is one click
    click_action(qtbot, hearth, 1, "regenerate")
    qtbot.waitUntil(lambda: not hearth.session.generating, timeout=30_000)
    retried = hearth.chat_model.item(1)
    assert retried.content == "Hello from the stand-in server." and retried.error is None
    assert (retried.sibling_index, retried.sibling_count) == (2, 2)

    stub.behaviour = Behaviour(drop_after=3)
    send_and_wait(qtbot, hearth, "again")
    dropped = hearth.chat_model.item(3)
    assert dropped.content == "Hello from the"
    assert dropped.error and "connection to server 'stub' broke mid-reply" in dropped.error
    hearth.open_conversation(hearth.session.conversation_id)  # reopened: still marked, text kept
    reopened = hearth.chat_model.item(3)
    assert reopened.content == "Hello from the" and reopened.error and "broke mid-reply" in reopened.error

    stub.behaviour = Behaviour(status=429, retry_after="12")
    send_and_wait(qtbot, hearth, "busy?")
    assert "server 'stub' is rate-limiting requests" in (hearth.chat_model.item(5).error or "")
    assert "retry in 12 s" in (hearth.chat_model.item(5).error or "")


def test_unreachable_servers_say_so_in_the_picker_and_removing_one_in_settings(
    qtbot: QtBot, hearth: HearthApp, stub: OpenAIStub
) -> None:
    hearth.servers.put(ServerConfig("gone", "http://127.0.0.1:9/v1"))
    hearth.servers.put(ServerConfig("stub", stub.url))
    picker = hearth.window.picker
    qtbot.waitUntil(lambda: picker.remote_rows("stub") == ["stub-model"], timeout=20_000)

    def heading(server: str) -> str:
        texts = [picker.model.item(r, 0).text() for r in range(picker.model.rowCount())]
        return next(t for t in texts if t.startswith(f"{server} — remote server"))

    qtbot.waitUntil(lambda: "connection refused" in heading("gone"), timeout=20_000)
    dialog = hearth.open_settings()
    tab = dialog.servers
    tab.list.setCurrentRow(0)  # "gone" (sorted by name)
    assert tab.name.text() == "gone"
    qtbot.mouseClick(tab.remove_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: [c.name for c in hearth.servers.all()] == ["stub"], timeout=5_000)
    assert tab.list.count() == 1 and "Removed gone" in tab.status.text()
    qtbot.waitUntil(lambda: "gone" not in picker._remote, timeout=5_000)
    dialog.close()


def test_a_key_entered_in_settings_goes_to_the_keyring_and_the_server(
    qtbot: QtBot, hearth: HearthApp, stub: OpenAIStub, file_keyring: FileKeyring
) -> None:
    stub.behaviour = Behaviour(key="sk-right-123456")
    dialog = hearth.open_settings()
    dialog.tabs.setCurrentWidget(dialog.servers)
    tab = dialog.servers
    tab.name.setText("stub")
    tab.url.setText(stub.url)
    tab.key.setText("sk-right-123456")
    qtbot.mouseClick(tab.test_button, Qt.MouseButton.LeftButton)  # the typed key is used before it is saved
    qtbot.waitUntil(lambda: tab.status.text().startswith("Connected to stub"), timeout=20_000)
    qtbot.mouseClick(tab.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.status.text().startswith("Saved stub"), timeout=10_000)
    assert file_keyring.secrets() == {"Hearth/server:stub": "sk-right-123456"}
    assert "sk-right" not in hearth.settings.path.read_text()
    assert hearth.servers.get("stub").has_key and "key in keyring" in tab.list.item(0).text()
    # Renamed: the key moves with it.
    assert tab.name.text() == "stub" and tab.key.text() == "" and tab.forget_key.isVisible()
    tab.name.setText("gpu")
    qtbot.mouseClick(tab.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.status.text().startswith("Saved gpu"), timeout=10_000)
    assert file_keyring.secrets() == {"Hearth/server:gpu": "sk-right-123456"}
    assert [(c.name, c.has_key) for c in hearth.servers.all()] == [("gpu", True)]
    dialog.close()
    use(qtbot, hearth, "gpu", "stub-model")
    send_and_wait(qtbot, hearth, "hi")
    assert hearth.chat_model.item(1).content == "Hello from the stand-in server."
    assert stub.chats()[-1].headers["authorization"] == "Bearer sk-right-123456"
    # Forgotten: no key in the keyring, none sent, and the server says so in place.
    dialog = hearth.open_settings()
    dialog.tabs.setCurrentWidget(dialog.servers)
    tab = dialog.servers
    assert tab.name.text() == "gpu"
    tab.forget_key.setChecked(True)
    qtbot.mouseClick(tab.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.status.text().startswith("Saved gpu"), timeout=10_000)
    assert file_keyring.secrets() == {} and not hearth.servers.get("gpu").has_key
    dialog.close()
    send_and_wait(qtbot, hearth, "again")
    assert "server 'gpu' refused access (401" in (hearth.chat_model.item(3).error or "")
    assert "authorization" not in stub.chats()[-1].headers
