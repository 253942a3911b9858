"""Starts and stops the local OpenAI-compatible server from the app's settings, on the window's engine host,
and reports its state and the API requests in flight to the status bar and the Settings dialog."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Signal

from app.core.errors import HearthError
from app.core.server.config import ServerConfig, config_from_settings, lan_address

if TYPE_CHECKING:
    from app.core.host import EngineHost
    from app.core.library import Library
    from app.core.load_config import LoadConfig
    from app.core.paths import AppPaths
    from app.core.server.runner import Activity
    from app.core.server.service import LocalServer
    from app.core.settings import Settings
    from app.ui.workers import TaskRunner

log = logging.getLogger("hearth.ui")

SERVER_SETTINGS = (
    "server_enabled",
    "server_port",
    "server_api_key",
    "server_allow_network",
    "server_save_history",
    "server_cors_origins",
)


class _Relay(QObject):
    """Carries the server's activity (from its event loop thread) to the controller in the GUI thread."""

    activity = Signal(int)


class ServerController(QObject):
    """Owns the LocalServer while the setting is on. Stopping (which waits for the server's thread) runs on
    the task pool, never on the GUI thread, except at exit.

    Signals:
        state_changed(str): "off", "starting", "running", "stopping" or "error"; details in .status_text.
        requests_changed(int): API requests running or waiting.
    """

    state_changed = Signal(str)
    requests_changed = Signal(int)

    def __init__(
        self, host: EngineHost, settings: Settings, paths: AppPaths, tasks: TaskRunner, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.host = host
        self.settings = settings
        self.paths = paths
        self.tasks = tasks
        self.state = "off"
        self.status_text = "Off"
        self.requests = 0
        self.server: LocalServer | None = None
        self._config: ServerConfig | None = None
        self._stopping: LocalServer | None = None
        self._relay = _Relay()
        self._relay.activity.connect(self._on_activity)
        self._apply_timer = QTimer(self)  # the dialog saves settings one by one: apply them once, together
        self._apply_timer.setSingleShot(True)
        self._apply_timer.setInterval(0)
        self._apply_timer.timeout.connect(self.apply)

    # ---- state ------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.server is not None and self.server.running

    def url(self) -> str:
        """The URL to give other apps: this machine's, or its network address when other devices may call."""
        config = self._config or config_from_settings(self.settings.get)
        port = self.server.port if self.server is not None else config.port
        host = lan_address() if config.host == "0.0.0.0" else None
        return config.url(port, host)

    def _set_state(self, state: str, text: str) -> None:
        self.state, self.status_text = state, text
        self.state_changed.emit(state)

    # ---- start and stop (GUI thread) ---------------------------------------------------------------------
    def setting_changed(self, name: str) -> None:
        if name in SERVER_SETTINGS:
            self._apply_timer.start()

    def apply(self) -> None:
        """Start, stop or restart to match the settings."""
        if self._stopping is not None:
            return  # applied again when the stop finished
        wanted = config_from_settings(self.settings.get) if self.settings.get("server_enabled") else None
        if wanted == self._config and (wanted is None or self.running):
            return
        if self.server is not None:
            self._stop_then_apply()
            return
        if wanted is None:
            self._set_state("off", "Off")
            return
        self._start(wanted)

    def _start(self, config: ServerConfig) -> None:
        from app.core.server.service import LocalServer

        self._config = config
        self._set_state("starting", "Starting…")
        try:
            server = LocalServer(
                self.host,
                config,
                library=self._library(),
                load_config=self._load_config,
                template_for=self._template_for,
                store_path=self.paths.history_db,
                on_activity=self._report,
            )
            server.start()  # binds here (quick); serving runs on the server's own thread
        except HearthError as exc:
            log.warning("the local server did not start: %s", exc)
            self._set_state("error", str(exc))
            return
        self.server = server
        self._set_state("running", f"Running at {self.url()}")

    def _stop_then_apply(self) -> None:
        server, self.server = self.server, None
        self._stopping, self._config = server, None
        self._set_state("stopping", "Stopping…")
        assert server is not None
        self.tasks.run(server.stop, self._on_stopped, self._on_stop_failed)

    def _on_stopped(self, _result: object) -> None:
        self._stopping = None
        self.requests = 0
        self.requests_changed.emit(0)
        self._set_state("off", "Off")
        self.apply()

    def _on_stop_failed(self, error: BaseException) -> None:
        log.error("the local server did not stop cleanly: %s", error)
        self._on_stopped(None)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """At exit: stop now (requests in flight are cancelled), before the engine host stops."""
        self._apply_timer.stop()
        for server in (self.server, self._stopping):
            if server is not None:
                server.stop(timeout_s)
        self.server = self._stopping = None

    # ---- what the server asks (its threads) ----------------------------------------------------------------
    def _library(self) -> Library:
        from app.core.library import Library

        return Library(self.paths, self.settings)  # its own: scans run on the server's worker threads

    def _load_config(self, path: Path) -> LoadConfig:
        """A model an API request names loads with the user's settings for it, as from the picker."""
        from app.core.load_policy import configured_load

        return configured_load(self.settings, Path(path).name)

    def _template_for(self, name: str) -> str | None:
        return self.settings.model_override(name).get("template")

    def _report(self, activity: Activity) -> None:  # the server's event loop thread: only emits
        self._relay.activity.emit(activity.in_flight)

    def _on_activity(self, in_flight: int) -> None:
        if self.server is None:
            return
        self.requests = in_flight
        self.requests_changed.emit(in_flight)
