"""The Hugging Face Hub for the GUI: searches and file lists on the task pool, the download queue through
DownloadBridge. Nothing here is imported or started until the user opens the Hub or asks for a download."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from app.core.errors import HearthError
from app.ui.workers import DownloadBridge, TaskRunner

if TYPE_CHECKING:
    from app.core.downloads import DownloadManager, DownloadStatus
    from app.core.hub import HubClient
    from app.core.hub_files import QuantOption
    from app.core.paths import AppPaths
    from app.core.settings import Settings

log = logging.getLogger("hearth.ui.hub")


def make_hub_client(settings: Settings) -> HubClient:
    """A client for the configured endpoint with the user's token (blocks on the keyring: not the GUI thread)."""
    from app.core.hub import HubClient, resolve_endpoint
    from app.core.hub_token import load_token

    return HubClient(resolve_endpoint(settings.get("hub_endpoint")), load_token().value)


class HubController(QObject):
    """Signals:
    results(object list[RepoSummary]), search_failed(str), details(object RepoDetails, object recommended),
    details_failed(str), downloads_changed(object list[DownloadStatus]), download_finished(object status),
    queued(object DownloadStatus), failed(str).
    """

    results = Signal(object)
    search_failed = Signal(str)
    details = Signal(object, object)
    details_failed = Signal(str)
    downloads_changed = Signal(object)
    download_finished = Signal(object)
    queued = Signal(object)
    failed = Signal(str)

    def __init__(
        self,
        paths: AppPaths,
        settings: Settings,
        tasks: TaskRunner,
        client_factory: Callable[[Settings], HubClient] = make_hub_client,
    ) -> None:
        super().__init__()
        self.paths = paths
        self.settings = settings
        self.tasks = tasks
        self.client_factory = client_factory
        self.bridge: DownloadBridge | None = None
        self._starting = False
        self._waiting: list[Callable[[], None]] = []
        self._search_serial = 0

    # ---- the download manager (created lazily) ------------------------------------------------------------------
    def ensure_started(self, then: Callable[[], None] | None = None) -> None:
        if self.bridge is not None:
            if then is not None:
                then()
            return
        if then is not None:
            self._waiting.append(then)
        if self._starting:
            return
        self._starting = True
        self.tasks.run(self._create_manager, self._on_manager, self._on_manager_failed)

    def _create_manager(self) -> DownloadManager:  # pool thread
        from app.core.downloads import DownloadManager

        return DownloadManager(self.paths, lambda: self.client_factory(self.settings))

    def _on_manager(self, manager: DownloadManager) -> None:
        self._starting = False
        self.bridge = DownloadBridge(manager, self)
        self.bridge.changed.connect(self.downloads_changed)
        self.bridge.finished.connect(self.download_finished)
        self.downloads_changed.emit(manager.statuses())
        waiting, self._waiting = self._waiting, []
        for callback in waiting:
            callback()

    def _on_manager_failed(self, error: BaseException) -> None:
        self._starting = False
        self._waiting.clear()
        self.failed.emit(f"The download queue could not start: {error}")

    @property
    def manager(self) -> DownloadManager | None:
        return self.bridge.manager if self.bridge is not None else None

    # ---- search and details --------------------------------------------------------------------------------------
    def search(self, query: str) -> None:
        self._search_serial += 1
        serial = self._search_serial

        def job() -> tuple[int, Any]:
            return serial, self.client_factory(self.settings).search(query, limit=40)

        self.tasks.run(job, self._on_results, self._on_search_failed)

    def _on_results(self, result: tuple[int, Any]) -> None:
        serial, repos = result
        if serial == self._search_serial:  # an older, slower search must not replace a newer one
            self.results.emit(repos)

    def _on_search_failed(self, error: BaseException) -> None:
        self.search_failed.emit(_message(error))

    def open_repo(self, repo_id: str) -> None:
        def job() -> tuple[Any, Any]:
            from app.core.hub_files import recommend

            details = self.client_factory(self.settings).details(repo_id)
            return details, recommend(details.options)

        self.tasks.run(job, self._on_details, self._on_details_failed)

    def _on_details(self, result: tuple[Any, Any]) -> None:
        self.details.emit(result[0], result[1])

    def _on_details_failed(self, error: BaseException) -> None:
        self.details_failed.emit(_message(error))

    # ---- downloads ---------------------------------------------------------------------------------------------------
    def download(self, repo_id: str, option: QuantOption, revision: str) -> None:
        def add() -> None:
            manager = self.manager
            assert manager is not None
            self.tasks.run(lambda: manager.add(repo_id, option, revision=revision), self._on_queued, self._on_failed)

        self.ensure_started(add)

    def download_quant(self, repo_id: str, quant: str) -> None:
        """Queue a repository's file of this quantization (the first-run 'download a model' button)."""

        def add() -> None:
            manager = self.manager
            assert manager is not None

            def job() -> DownloadStatus:
                from app.core.hub_files import select_option

                details = self.client_factory(self.settings).details(repo_id)
                try:
                    option = select_option(details.options, quant=quant)
                except LookupError as exc:
                    raise HearthError(str(exc)) from None
                return manager.add(repo_id, option, revision=details.sha or "main")

            self.tasks.run(job, self._on_queued, self._on_failed)

        self.ensure_started(add)

    def _on_queued(self, status: DownloadStatus) -> None:
        self.queued.emit(status)
        if self.bridge is not None:
            self.downloads_changed.emit(self.bridge.statuses())

    def _on_failed(self, error: BaseException) -> None:
        self.failed.emit(_message(error))

    def _control(self, action: str, item_id: str) -> None:
        manager = self.manager
        if manager is None:
            return

        def job() -> None:
            getattr(manager, action)(item_id)

        self.tasks.run(job, self._on_controlled, self._on_failed)

    def _on_controlled(self, _result: object) -> None:
        if self.bridge is not None:
            self.downloads_changed.emit(self.bridge.statuses())

    def pause(self, item_id: str) -> None:
        self._control("pause", item_id)

    def resume(self, item_id: str) -> None:
        self._control("resume", item_id)

    def cancel(self, item_id: str) -> None:
        self._control("cancel", item_id)

    def remove(self, item_id: str) -> None:
        self._control("remove", item_id)

    def close(self) -> None:
        if self.bridge is not None:
            self.bridge.close()


def _message(error: BaseException) -> str:
    return str(error) if isinstance(error, HearthError) else f"{type(error).__name__}: {error}"
