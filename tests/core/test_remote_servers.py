"""The servers registry (names, base URLs, the key policy) in a real settings file, and API keys in a keyring,
never in the settings file; the key reaches the server only where the policy allows (a stand-in on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest

from app.core import remote_keys
from app.core.errors import ConfigError, RemoteError
from app.core.paths import AppPaths
from app.core.remote_catalog import RemoteCatalog
from app.core.remote_http import ServerLink
from app.core.remote_servers import ServerConfig, ServerRegistry, normalise_url, plain_http_problem
from app.core.settings import Settings
from tests.support.file_keyring import ENV, FileKeyring
from tests.support.openai_stub import Behaviour, OpenAIStub


@pytest.fixture
def settings(hearth_home: AppPaths) -> Settings:
    return Settings(hearth_home.ensure().settings_file)


@pytest.fixture
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


def test_servers_are_saved_in_the_settings_file_and_read_back(settings: Settings):
    registry = ServerRegistry(settings)
    registry.put(ServerConfig("Workstation", "http://127.0.0.1:8080/v1/"))
    registry.put(ServerConfig("cloud", "https://llm.example.org/api/v1", has_key=True))
    again = ServerRegistry(Settings(settings.path))
    assert [(c.name, c.url, c.has_key) for c in again.all()] == [
        ("cloud", "https://llm.example.org/api/v1", True),
        ("Workstation", "http://127.0.0.1:8080/v1", False),  # the trailing slash is dropped
    ]
    assert again.get("workstation").name == "Workstation"  # names are unique regardless of case
    assert registry.remove("WORKSTATION") == "Workstation"
    assert [c.name for c in ServerRegistry(Settings(settings.path)).all()] == ["cloud"]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("127.0.0.1:8080/v1", "http(s)://host:port/v1"),
        ("ftp://box/v1", "http(s)://host:port/v1"),
        ("http://box:8080", "ends in /v1"),
        ("http://box:8080/v1/chat/completions", "ends in /v1"),
        ("http://user:secret@box/v1", "not in the URL"),
        ("http://box/v1?key=1", "no ?query"),
        ("http://box:99999/v1", "not a usable server URL"),
    ],
)
def test_bad_base_urls_are_refused_with_the_form_to_use(url: str, says: str):
    with pytest.raises(ConfigError, match=None) as caught:
        normalise_url(url)
    assert says in str(caught.value)


def test_names_are_checked_and_unique(settings: Settings):
    registry = ServerRegistry(settings)
    registry.put(ServerConfig("box", "http://127.0.0.1:1/v1"))
    for bad, says in (("", "1 to 40"), ("a/b", "1 to 40"), ("local", "reserved"), ("BOX", "already exists")):
        with pytest.raises(ConfigError, match=says):
            registry.put(ServerConfig(bad, "http://127.0.0.1:2/v1"))
    renamed = registry.put(ServerConfig("tower", "http://127.0.0.1:1/v1"), replacing="box")
    assert [c.name for c in registry.all()] == [renamed.name] == ["tower"]
    with pytest.raises(ConfigError, match="no server named 'box'"):
        registry.get("box")


def test_a_hand_edited_broken_entry_is_reported_and_kept(settings: Settings):
    stored = {"good": {"url": "http://127.0.0.1:1/v1"}, "bad": {"url": "http://nowhere"}}
    settings.path.write_text(__import__("json").dumps({"remote_servers": stored}))
    reread = Settings(settings.path)
    registry = ServerRegistry(reread)
    assert [c.name for c in registry.all()] == ["good"]
    assert registry.broken()[0][0] == "bad" and "/v1" in registry.broken()[0][1]
    registry.put(ServerConfig("new", "http://127.0.0.1:2/v1"))
    assert "bad" in Settings(settings.path).get("remote_servers")  # nothing the user wrote is lost


def test_the_key_policy(settings: Settings):
    assert plain_http_problem("http://127.0.0.1:8080/v1") is None
    assert plain_http_problem("http://localhost:8080/v1") is None
    assert plain_http_problem("http://[::1]:8080/v1") is None
    assert plain_http_problem("https://gpu.lan/v1") is None
    assert "unencrypted" in str(plain_http_problem("http://gpu.lan:8080/v1"))
    registry = ServerRegistry(settings)
    with pytest.raises(ConfigError, match="unencrypted"):
        registry.put(ServerConfig("lan", "http://gpu.lan:8080/v1", has_key=True))
    registry.put(ServerConfig("lan", "http://gpu.lan:8080/v1", has_key=True, key_over_http=True))  # acknowledged
    registry.put(ServerConfig("lan-nokey", "http://gpu.lan:8080/v1"))  # no key: nothing to protect


def test_keys_live_in_the_keyring_never_in_the_settings_file(settings: Settings, file_keyring: FileKeyring):
    registry = ServerRegistry(settings)
    remote_keys.save_key("Box", "sk-local-0123456789")
    registry.put(ServerConfig("Box", "http://127.0.0.1:1/v1", has_key=True))
    assert "sk-local" not in settings.path.read_text()
    assert remote_keys.load_key("box") == "sk-local-0123456789"
    assert file_keyring.secrets() == {"Hearth/server:box": "sk-local-0123456789"}
    assert remote_keys.masked("sk-local-0123456789") == "…6789"
    with pytest.raises(ConfigError, match="one word"):
        remote_keys.save_key("box", "two words")
    assert remote_keys.clear_key("box") and not remote_keys.clear_key("box")


def test_without_a_keyring_saving_a_key_fails_with_a_reason():
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    try:
        with pytest.raises(ConfigError, match="no OS keyring"):
            remote_keys.save_key("box", "sk-123456789")
    finally:
        keyring.set_keyring(previous)


def test_the_key_goes_to_the_server_as_a_bearer_token_and_a_wrong_one_is_named(stub: OpenAIStub):
    stub.behaviour = Behaviour(key="sk-right-123456")
    right = ServerConfig("stub", stub.url, has_key=True)
    assert RemoteCatalog().check(right, "sk-right-123456").models == ("stub-model",)
    assert stub.requests[-1].headers["authorization"] == "Bearer sk-right-123456"
    with pytest.raises(RemoteError, match=r"server 'stub' refused access \(401 Unauthorized: Invalid API key\)"):
        RemoteCatalog().check(right, "sk-wrong-123456")
    with pytest.raises(RemoteError, match="401"):
        RemoteCatalog().check(ServerConfig("stub", stub.url))  # no key at all


def test_a_key_never_travels_over_plain_http_to_another_host_unless_allowed(stub: OpenAIStub, monkeypatch):
    # 0.0.0.0 reaches this machine's stand-in, but Hearth cannot tell it is local: it counts as another host.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,0.0.0.0")  # never through a proxy
    url = stub.url.replace("127.0.0.1", "0.0.0.0")
    refused = ServerLink(ServerConfig("lan", url, has_key=True), "sk-secret-123456")
    with pytest.raises(RemoteError, match="the API key was not sent"):
        refused.list_models()
    assert stub.requests == []  # nothing went out at all
    allowed = ServerLink(ServerConfig("lan", url, has_key=True, key_over_http=True), "sk-secret-123456")
    assert [m["id"] for m in allowed.list_models()] == ["stub-model"]
    assert stub.requests[-1].headers["authorization"] == "Bearer sk-secret-123456"
    allowed.close()


def test_a_key_that_should_be_there_but_is_not_is_a_clear_error(stub: OpenAIStub):
    link = ServerLink(ServerConfig("stub", stub.url, has_key=True), lambda: None)
    with pytest.raises(RemoteError, match="none is saved in the keyring"):
        link.list_models()


def test_connection_check_and_listing_errors(stub: OpenAIStub):
    catalog = RemoteCatalog()
    check = catalog.check(ServerConfig("stub", stub.url))
    assert check.message.startswith("Connected to stub in ") and "1 model (stub-model)" in check.message
    with pytest.raises(RemoteError, match="has no model list at .* is the base URL right"):
        catalog.check(ServerConfig("stub", stub.url.replace("/v1", "/api/v1")))
    closed = ServerConfig("gone", "http://127.0.0.1:9/v1")
    with pytest.raises(RemoteError, match=r"cannot reach server 'gone' at http://127.0.0.1:9/v1: connection refused"):
        catalog.check(closed)


def test_model_lists_are_cached_briefly(stub: OpenAIStub):
    catalog = RemoteCatalog(ttl_s=60)
    catalog.sync([ServerConfig("stub", stub.url)])
    assert [m.id for m in catalog.models("stub")] == ["stub-model"]
    stub.behaviour = Behaviour(models=("a", "b"))
    assert [m.id for m in catalog.models("stub")] == ["stub-model"]  # from the cache
    assert [m.id for m in catalog.models("stub", refresh=True)] == ["a", "b"]
    assert len([r for r in stub.requests if r.path == "/v1/models"]) == 2
    catalog.close()
