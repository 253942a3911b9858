"""What the local server listens on and who may call it, checked before anything binds."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from app.core.errors import ConfigError

DEFAULT_PORT = 8080
DEFAULT_QUEUE = 16
MAX_BODY_BYTES = 16 * 1024 * 1024  # a 100k-token conversation is well under 1 MiB of JSON
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerConfig:
    """host/port to bind, the API key (empty: none needed), CORS origins (empty: CORS off), how many
    requests may wait beyond the engine's sequences, the body size limit, and whether API conversations
    are saved to the history."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    api_key: str = ""
    cors_origins: tuple[str, ...] = ()
    max_queue: int = DEFAULT_QUEUE
    max_body_bytes: int = MAX_BODY_BYTES
    save_history: bool = False

    def validate(self) -> ServerConfig:
        """Return self, or raise ConfigError saying what to change."""
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"the port must be 1 to 65535 (0: any free port); got {self.port!r}")
        if not self.host.strip():
            raise ConfigError("the host to listen on is empty; use 127.0.0.1 (this machine) or 0.0.0.0 (network)")
        if not is_loopback(self.host) and not self.api_key:
            raise ConfigError(
                f"listening on {self.host} lets other devices use your model: set an API key too "
                "(--api-key KEY, or in Settings -> Local server)"
            )
        if self.api_key and (self.api_key != self.api_key.strip() or any(c.isspace() for c in self.api_key)):
            raise ConfigError("the API key must not contain spaces")
        if not isinstance(self.max_queue, int) or not 0 <= self.max_queue <= 10_000:
            raise ConfigError(f"the queue must hold 0 to 10000 requests; got {self.max_queue!r}")
        for origin in self.cors_origins:
            if origin != "*" and not _is_origin(origin):
                raise ConfigError(f"CORS origin {origin!r} is not like http://localhost:3000 (scheme://host[:port])")
        return self

    def url(self, port: int | None = None, host: str | None = None) -> str:
        """The base URL clients use (/v1 included); a wildcard bind is reached at 127.0.0.1 here."""
        shown = host or ("127.0.0.1" if self.host in ("0.0.0.0", "") else "[::1]" if self.host == "::" else self.host)
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        return f"http://{shown}:{self.port if port is None else port}/v1"


def _is_origin(text: str) -> bool:
    parsed = urlparse(text)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc) and parsed.path in ("", "/") and not parsed.query


def config_from_settings(get: Callable[[str], Any]) -> ServerConfig:
    """The app's server from its settings (get: Settings.get, or the Settings dialog's pending values):
    this machine only, unless the user allows other devices on the network (every address, a key needed)."""
    return ServerConfig(
        host="0.0.0.0" if get("server_allow_network") else "127.0.0.1",
        port=int(get("server_port")),
        api_key=str(get("server_api_key")).strip(),
        cors_origins=tuple(get("server_cors_origins")),
        save_history=bool(get("server_save_history")),
    )


def lan_address() -> str:
    """This machine's address on its network, for the URL other devices use (127.0.0.1 when offline).
    Connecting a UDP socket only picks the route: no packet is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere real
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
