"""`hearth servers`, `hearth chat --server` and `hearth models --json` run as a user runs them, against a real
llama-cpp-python server and a stand-in (keys through a test keyring shared with the child process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.core.paths import AppPaths
from app.core.store import Store
from tests.support.file_keyring import BACKEND, ENV
from tests.support.openai_servers import RunningServer, start_llama_cpp_server
from tests.support.openai_stub import Behaviour, OpenAIStub

KEY = "sk-cli-test-0123456789"


def hearth(*args: str, stdin: str | None = None, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        env=os.environ.copy(),
    )


@pytest.fixture(autouse=True)
def test_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "keyring.json"
    monkeypatch.setenv(ENV, str(path))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", BACKEND)
    return path


@pytest.fixture(scope="module")
def served(make_tiny_model: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    model = make_tiny_model("remote-tiny.gguf", name="Remote Tiny", context_length=4096)
    server = start_llama_cpp_server(model, "tiny-remote", tmp_path_factory.mktemp("cli-servers"), n_ctx=1024)
    yield server
    server.stop()


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    server = OpenAIStub(Behaviour(key=KEY))
    yield server
    server.close()


def test_add_list_test_remove_with_a_key_from_stdin(stub: OpenAIStub, test_keyring: Path, hearth_home: AppPaths):
    added = hearth("servers", "add", "stub", stub.url, "--api-key-stdin", stdin=KEY + "\n")
    assert added.returncode == 0, added.stderr
    assert "Added server stub" in added.stdout and KEY not in added.stdout + added.stderr
    assert KEY in test_keyring.read_text() and KEY not in hearth_home.settings_file.read_text()
    listed = hearth("servers", "list")
    assert (
        listed.returncode == 0 and "stub" in listed.stdout and "keyring" in listed.stdout and KEY not in listed.stdout
    )
    assert json.loads(hearth("servers", "list", "--json").stdout)[0]["has_key"] is True
    tested = hearth("servers", "test", "stub")
    assert tested.returncode == 0, tested.stderr
    assert tested.stdout.startswith("Connected to stub in ") and "1 model (stub-model)" in tested.stdout
    assert stub.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    again = hearth("servers", "add", "STUB", stub.url)
    assert again.returncode == 2 and "already exists; pass --replace" in again.stderr
    removed = hearth("servers", "remove", "stub")
    assert removed.returncode == 0 and "Removed server stub" in removed.stdout
    assert KEY not in test_keyring.read_text()
    assert "No servers yet" in hearth("servers").stdout


def test_bad_input_is_one_line_and_exit_2(stub: OpenAIStub):
    cases = [
        (("servers", "add", "box", "http://127.0.0.1:8080"), "ends in /v1"),
        (("servers", "add", "local", stub.url), "reserved"),
        (("servers", "test", "nope"), "no server named 'nope'"),
        (("servers", "remove", "nope"), "no server named 'nope'"),
    ]
    for args, says in cases:
        result = hearth(*args)
        assert result.returncode == 2 and says in result.stderr and result.stderr.count("\n") == 1, result.stderr
    plain = hearth("servers", "add", "lan", "http://gpu.lan:8080/v1", "--api-key-stdin", stdin=KEY)
    assert plain.returncode == 2 and "unencrypted" in plain.stderr and "--allow-plain-http-key" in plain.stderr
    assert hearth("servers", "add", "nokey", stub.url).returncode == 0
    refused = hearth("servers", "test", "nokey")
    assert refused.returncode == 2 and "server 'nokey' refused access (401 Unauthorized" in refused.stderr


def test_chat_with_a_server_model_is_saved_like_a_local_chat(served: RunningServer, hearth_home: AppPaths):
    assert hearth("servers", "add", "box", served.url).returncode == 0
    result = hearth(
        "chat", "--server", "box", "tiny-remote", "-m", "hello there", "--max-tokens", "8", "--seed", "3", "--stats"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and "Chatting with tiny-remote on box" in result.stderr
    assert "tok/s" in result.stderr and "TTFT" in result.stderr
    with Store.open(hearth_home.history_db) as store:
        conversation = store.list_conversations()[0]
        assert conversation.meta["remote"] == {"server": "box", "model": "tiny-remote"}
        user, reply = store.messages(conversation.id)
        assert (user.role, user.content) == ("user", "hello there")
        assert reply.content == result.stdout.strip("\n") and reply.model == "tiny-remote · box"
        assert reply.meta["backend"] == "box" and json.loads(store.prompt_text(reply.id) or "")["max_tokens"] == 8
    unknown = hearth("chat", "--server", "box", "nope", "-m", "hi")
    assert unknown.returncode == 2 and "server 'box' has no model 'nope'; it offers: tiny-remote" in unknown.stderr


def test_models_json_lists_remote_models_with_their_server(served: RunningServer):
    assert hearth("servers", "add", "box", served.url).returncode == 0
    assert hearth("servers", "add", "gone", "http://127.0.0.1:9/v1").returncode == 0
    result = hearth("models", "--json")
    assert result.returncode == 0, result.stderr
    remote = [row for row in json.loads(result.stdout) if row["source"] == "remote"]
    assert {"source": "remote", "server": "box", "url": served.url, "model": "tiny-remote", "error": None} in remote
    gone = next(row for row in remote if row["server"] == "gone")
    assert gone["model"] is None and "connection refused" in gone["error"]
    text = hearth("models").stdout
    assert "box: tiny-remote" in text and "gone: unavailable" in text
