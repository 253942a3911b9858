"""LocalServer: the OpenAI-compatible server on a thread of its own (uvicorn), started and stopped cleanly
by `hearth serve` and by the app's Settings switch."""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.errors import ServerError
from app.core.server.catalog import ModelCatalog
from app.core.server.runner import Activity, ApiRunner

if TYPE_CHECKING:
    import uvicorn

    from app.core.host import EngineHost
    from app.core.library import Library
    from app.core.load_config import LoadConfig
    from app.core.server.config import ServerConfig

log = logging.getLogger("hearth.server")

GRACE_S = 3  # after the jobs are cancelled, how long open connections get to finish their last bytes


class LocalServer:
    """Serves the engine host's model over HTTP. start() binds (errors are raised here, in words) and
    returns the URL; stop() cancels the API's requests in flight and waits for the thread to end."""

    def __init__(
        self,
        host: EngineHost,
        config: ServerConfig,
        *,
        library: Library | None,
        load_config: Callable[[Path], LoadConfig],
        template_for: Callable[[str], str | None] = lambda _name: None,
        store_path: Path | None = None,
        on_activity: Callable[[Activity], None] | None = None,
    ) -> None:
        self.config = config.validate()
        self.host = host
        history = None
        if config.save_history:
            if store_path is None:
                raise ServerError("saving API conversations needs the history database")
            from app.core.server.history import ApiHistory

            history = ApiHistory(store_path)
        self.history = history
        catalog = ModelCatalog(library, lambda: host.model.path if host.model is not None else None)
        self.runner = ApiRunner(
            host,
            catalog,
            config,
            load_config=load_config,
            template_for=template_for,
            history=history,
            on_activity=on_activity,
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = config.port
        self.url = ""

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def bind(self) -> str:
        """Take the port now (a port in use fails here, before a model loads); the URL clients will use.
        Connections wait in the listen backlog until start()."""
        if self._socket is None:
            self._socket = self._bind()
            self.port = self._socket.getsockname()[1]
            self.url = self.config.url(self.port)
        return self.url

    def start(self) -> str:
        """Bind (unless bind() did) and start serving; the URL clients use (http://HOST:PORT/v1). Raises
        ServerError."""
        import uvicorn

        from app.core.server.routes import create_app

        self.bind()
        sock, self._socket = self._socket, None
        assert sock is not None
        _log_into_hearth()
        settings = uvicorn.Config(
            create_app(self.runner, self.config),
            log_config=None,  # uvicorn's records go to Hearth's log file through the root logger
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=GRACE_S,
            timeout_keep_alive=5,
        )
        self._server = uvicorn.Server(settings)
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="hearth-server", daemon=True)
        self._thread.start()
        log.info("serving at %s", self.url)
        return self.url

    def _bind(self) -> socket.socket:
        host, port = self.config.host, self.config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.create_server((host, port), family=family, backlog=128)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServerError(
                    f"port {port} is in use (another server?); choose another port (--port, or Settings -> Local "
                    "server)"
                ) from None
            raise ServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        sock.set_inheritable(False)
        return sock

    def _serve(self, sock: socket.socket) -> None:
        assert self._server is not None
        try:
            self._server.run(sockets=[sock])
        except BaseException:  # SystemExit from uvicorn included: the thread ends, the app goes on
            log.exception("the local server stopped with an error")
        finally:
            sock.close()

    def stop(self, timeout: float = 10.0) -> bool:
        """Cancel the API's requests (streams end within a token), close the listener and connections,
        wait for the thread. True when everything stopped in time."""
        self.runner.cancel_all()
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        stopped = True
        if self._socket is not None:  # bound, never started
            self._socket.close()
            self._socket = None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(2.0)
            stopped = not thread.is_alive()
        if self.history is not None:
            self.history.close()
        log.info("server at %s stopped", self.url)
        return stopped


def _log_into_hearth() -> None:
    """uvicorn's own records (a failing connection, a crashed request) go to Hearth's log file."""
    uvicorn_log = logging.getLogger("uvicorn")
    handlers = logging.getLogger("hearth").handlers
    if handlers:
        uvicorn_log.handlers = list(handlers)
        uvicorn_log.propagate = False
