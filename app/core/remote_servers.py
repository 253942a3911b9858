"""The OpenAI-compatible servers the user added (name, base URL, key policy), kept in the settings file.

An API key is never in the settings file: it lives in the OS keyring (app/core/remote_keys.py) and the
settings only remember that there is one. Key policy: a key travels only over HTTPS, or over plain HTTP to
this machine (127.0.0.1, ::1, localhost), unless the user acknowledged for that server that it may travel
unencrypted (`key_over_http`: the "send the key over plain HTTP anyway" box, `--allow-plain-http-key`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from app.core.errors import ConfigError

if TYPE_CHECKING:
    from app.core.settings import Settings

SETTING = "remote_servers"  # {name: {"url", "has_key", "key_over_http", "llama_fields"}}
RESERVED_NAMES = ("local",)  # ReplyRequest.backend None / "local" is the model loaded in Hearth
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}$")
URL_EXAMPLE = "http://127.0.0.1:8080/v1"


@dataclass(frozen=True)
class ServerConfig:
    """One server. llama_fields: also send top_k, min_p and repeat_penalty, which llama.cpp's llama-server,
    llama-cpp-python's server, Ollama, LM Studio and Hearth accept (OpenAI's own API refuses them)."""

    name: str
    url: str  # the base URL, ending in /v1, without a trailing slash
    has_key: bool = False
    key_over_http: bool = False
    llama_fields: bool = True

    def validate(self) -> ServerConfig:
        """A normalised copy, or ConfigError saying what to fix."""
        name = check_name(self.name)
        url = normalise_url(self.url)
        return replace(self, name=name, url=url)

    @property
    def key_problem(self) -> str | None:
        """Why a key must not be sent to this server as configured (None: it may be)."""
        if self.key_over_http:
            return None
        return plain_http_problem(self.url)

    def to_stored(self) -> dict[str, Any]:
        data = asdict(self)
        del data["name"]
        return data

    @classmethod
    def from_stored(cls, name: str, data: dict[str, Any]) -> ServerConfig:
        return cls(
            name=name,
            url=str(data.get("url", "")),
            has_key=bool(data.get("has_key", False)),
            key_over_http=bool(data.get("key_over_http", False)),
            llama_fields=bool(data.get("llama_fields", True)),
        ).validate()


@dataclass(frozen=True)
class Timeouts:
    """Every wait is bounded. first_token: from sending the request to the first reply text (the server may
    evaluate a long prompt, or load the model, first); between_chunks: the longest silence after that."""

    connect: float = 10.0
    first_token: float = 300.0
    between_chunks: float = 60.0
    list_models: float = 15.0  # the whole /models request


@dataclass(frozen=True)
class RemoteModel:
    """A model a server offers (its /v1/models id), or the one a conversation is sent to."""

    server: str
    id: str

    @property
    def label(self) -> str:
        """How the reply's model is stored and shown: 'llama-3.1-8b · box'."""
        return f"{self.id} · {self.server}"

    def to_meta(self) -> dict[str, str]:
        return {"server": self.server, "model": self.id}

    @classmethod
    def from_meta(cls, data: Any) -> RemoteModel | None:
        """From a conversation's meta["remote"]; None when absent or malformed."""
        if isinstance(data, dict) and isinstance(data.get("server"), str) and isinstance(data.get("model"), str):
            return cls(data["server"], data["model"])
        return None


def check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise ConfigError(
            f"a server name is 1 to 40 letters, digits, spaces, dots, dashes or underscores; got {name!r}"
        )
    if name.lower() in RESERVED_NAMES:
        raise ConfigError(f"{name!r} is reserved for the model loaded in Hearth; choose another server name")
    return name


def normalise_url(url: str) -> str:
    """The base URL without a trailing slash; ConfigError unless it is http(s)://host[:port]/.../v1."""
    text = url.strip().rstrip("/")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"not a usable server URL ({exc}); use the form {URL_EXAMPLE}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"a server URL is http(s)://host:port/v1, like {URL_EXAMPLE}; got {url!r}")
    if parts.username or parts.password:
        raise ConfigError("put the API key in the key field, not in the URL (the URL is saved in plain text)")
    if parts.query or parts.fragment:
        raise ConfigError(f"a server URL has no ?query or #fragment; use the base URL, like {URL_EXAMPLE}")
    if not parts.path.endswith("/v1"):
        raise ConfigError(
            f"an OpenAI-compatible base URL ends in /v1 (Hearth adds /chat/completions and /models), like "
            f"{URL_EXAMPLE}; got {url!r}"
        )
    if port == 0:
        raise ConfigError(f"port 0 is not a server's port; got {url!r}")
    return text


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: traffic that never leaves this machine."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def plain_http_problem(url: str) -> str | None:
    """Why a key sent to url could be read on the way (plain HTTP to another machine), or None."""
    parts = urlsplit(url)
    if parts.scheme == "https" or is_loopback(parts.hostname or ""):
        return None
    return (
        f"{parts.hostname} is reached over plain HTTP, so an API key would travel unencrypted; use https://, "
        "or confirm that the key may be sent over plain HTTP to this server"
    )


def servers_problem(value: Any) -> str | None:
    """The settings check for SETTING: an object of objects. An entry that is not a valid server (edited by
    hand, written by a newer Hearth) is kept in the file and reported by ServerRegistry.broken()."""
    if not isinstance(value, dict) or not all(isinstance(data, dict) for data in value.values()):
        return "must be an object of servers by name"
    return None


class ServerRegistry:
    """The servers in the settings file. Only names, URLs and flags live there; keys are in the keyring.

    Not thread-safe on its own: the GUI uses it from its thread (settings observers touch widgets)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def all(self) -> list[ServerConfig]:
        """The usable servers, by name."""
        servers = []
        for name, data in sorted(self.settings.get(SETTING).items(), key=_folded):
            try:
                servers.append(ServerConfig.from_stored(name, data))
            except ConfigError:
                continue  # listed by broken(), kept in the file
        return servers

    def broken(self) -> list[tuple[str, str]]:
        """Entries of the settings file that are not usable servers, with the reason (they are kept)."""
        problems = []
        for name, data in sorted(self.settings.get(SETTING).items(), key=_folded):
            try:
                ServerConfig.from_stored(name, data)
            except ConfigError as exc:
                problems.append((name, str(exc)))
        return problems

    def get(self, name: str) -> ServerConfig:
        for config in self.all():
            if config.name.lower() == name.strip().lower():
                return config
        known = ", ".join(c.name for c in self.all()) or "none yet; add one with `hearth servers add NAME URL`"
        raise ConfigError(f"no server named {name!r} (servers: {known})")

    def find(self, name: str) -> ServerConfig | None:
        try:
            return self.get(name)
        except ConfigError:
            return None

    def check(self, config: ServerConfig, *, replacing: str | None = None) -> ServerConfig:
        """The validated config that put() would store, or ConfigError: a duplicate name, an invalid name or
        URL, a key over plain HTTP that was not confirmed. Writes nothing."""
        config = config.validate()
        if config.has_key and config.key_problem:
            raise ConfigError(f"server {config.name!r}: {config.key_problem}")
        stored = self.settings.get(SETTING)
        old = _lookup(stored, replacing)
        if replacing and old is None:
            raise ConfigError(f"no server named {replacing!r} to change")
        clash = _lookup(stored, config.name)
        if clash is not None and clash != old:
            raise ConfigError(f"a server named {clash!r} already exists; choose another name or remove it first")
        return config

    def put(self, config: ServerConfig, *, replacing: str | None = None) -> ServerConfig:
        """Add a server, or replace the one named `replacing` (an edit, possibly a rename); see check()."""
        config = self.check(config, replacing=replacing)
        stored = self.settings.get(SETTING)
        old = _lookup(stored, replacing)
        if old is not None:
            del stored[old]
        stored[config.name] = config.to_stored()
        self.settings.set(SETTING, stored)
        return config

    def remove(self, name: str) -> str:
        """Forget a server (also a broken entry); returns its stored name. Its key is the caller's to clear."""
        stored = self.settings.get(SETTING)
        found = _lookup(stored, name)
        if found is None:
            self.get(name)  # raises, listing the servers there are
            raise ConfigError(f"no server named {name!r}")
        del stored[found]
        self.settings.set(SETTING, stored)
        return found


def _lookup(stored: dict[str, Any], name: str | None) -> str | None:
    """The stored spelling of a name (names are unique regardless of case)."""
    if name is None:
        return None
    folded = name.strip().lower()
    return next((key for key in stored if key.lower() == folded), None)


def _folded(item: tuple[str, Any]) -> str:
    return item[0].lower()
