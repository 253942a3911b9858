"""The configured servers at run time: one RemoteBackend each, registered with the engine host, and each
server's model list (GET /models) with a short cache. Used by the window, `hearth chat --server` and
`hearth models`.

Thread-safe: sync() runs where the settings change (the GUI thread), models() and check() on worker threads
(they wait on the network), replies on the host's stream threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.core.errors import RemoteError
from app.core.remote_backend import RemoteBackend
from app.core.remote_http import ServerLink
from app.core.remote_servers import RemoteModel, ServerConfig, Timeouts

if TYPE_CHECKING:
    from app.core.host import EngineHost

MODELS_TTL_S = 30.0  # a server's model list is asked again after this long (or on refresh)
KeyLoader = Callable[[str], "str | None"]


def _keyring_key(server: str) -> str | None:
    from app.core.remote_keys import load_key

    return load_key(server)


@dataclass(frozen=True)
class ConnectionCheck:
    """The answer to "test connection"."""

    server: str
    models: tuple[str, ...]
    ms: float

    @property
    def message(self) -> str:
        listed = ", ".join(self.models[:5]) + (", …" if len(self.models) > 5 else "")
        count = f"{len(self.models)} model{'s' if len(self.models) != 1 else ''}"
        return f"Connected to {self.server} in {self.ms:.0f} ms: {count}" + (f" ({listed})" if listed else "")


class RemoteCatalog:
    """Backends and model lists of the configured servers."""

    def __init__(
        self,
        host: EngineHost | None = None,
        *,
        key_loader: KeyLoader = _keyring_key,
        timeouts: Timeouts | None = None,
        ttl_s: float = MODELS_TTL_S,
    ) -> None:
        self.host = host
        self.key_loader = key_loader
        self.timeouts = timeouts or Timeouts()
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._backends: dict[str, RemoteBackend] = {}
        self._models: dict[str, tuple[float, list[RemoteModel]]] = {}

    # ---- servers ----------------------------------------------------------------------------------------------
    def sync(self, configs: list[ServerConfig], *, reset: tuple[str, ...] = ()) -> None:
        """Make the backends match configs: new and changed servers (and those in reset, whose key changed)
        get a fresh backend, registered with the host under the server's name; removed ones are unregistered."""
        wanted = {config.name: config for config in configs}
        with self._lock:
            stale = [
                name
                for name, backend in self._backends.items()
                if name not in wanted or backend.config != wanted[name] or name in reset
            ]
            closing = [self._backends.pop(name) for name in stale]
            for name in stale:
                self._models.pop(name, None)
            added = []
            for name, config in wanted.items():
                if name not in self._backends:
                    self._backends[name] = RemoteBackend(config, self._key_for(config), self.timeouts)
                    added.append(self._backends[name])
        if self.host is not None:
            for backend in closing:
                if backend.name not in wanted:
                    self.host.unregister_backend(backend.name)
            for backend in added:
                self.host.register_backend(backend.name, backend)
        for backend in closing:
            backend.close()  # a reply still streaming through it keeps its own connection until it ends

    def _key_for(self, config: ServerConfig) -> Callable[[], str | None]:
        return lambda: self.key_loader(config.name) if config.has_key else None

    def backend(self, name: str) -> RemoteBackend | None:
        with self._lock:
            for key, backend in self._backends.items():
                if key.lower() == name.lower():
                    return backend
        return None

    @property
    def servers(self) -> list[ServerConfig]:
        with self._lock:
            return [backend.config for backend in self._backends.values()]

    def close(self) -> None:
        self.sync([])

    # ---- models -----------------------------------------------------------------------------------------------
    def models(self, name: str, *, refresh: bool = False) -> list[RemoteModel]:
        """The server's models (cached for ttl_s); RemoteError when it cannot be asked. Blocks on the network."""
        backend = self.backend(name)
        if backend is None:
            raise RemoteError(f"no server named {name!r} is configured")
        with self._lock:
            cached = self._models.get(backend.name)
        if cached is not None and not refresh and time.monotonic() - cached[0] < self.ttl_s:
            return list(cached[1])
        models = [RemoteModel(backend.name, entry["id"]) for entry in backend.link.list_models()]
        with self._lock:
            if self._backends.get(backend.name) is backend:
                self._models[backend.name] = (time.monotonic(), models)
        return list(models)

    def check(self, config: ServerConfig, key: str | None = None) -> ConnectionCheck:
        """Test a server as configured (perhaps not saved yet): list its models with key, or the saved key.
        RemoteError says what failed."""
        config = config.validate()
        source: Callable[[], str | None] | str | None = key if key else self._key_for(config)
        if key:
            from dataclasses import replace

            config = replace(config, has_key=True)
        link = ServerLink(config, source, self.timeouts)
        started = time.monotonic()
        try:
            entries = link.list_models()
        finally:
            link.close()
        return ConnectionCheck(config.name, tuple(e["id"] for e in entries), (time.monotonic() - started) * 1000)
