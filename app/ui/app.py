"""Create the QApplication and the main window from core objects: the one joint between core and UI.

Start-up stays light (no llama_cpp, no huggingface_hub, no numpy on the GUI thread): the library scan,
the engine and the Hub are imported by the threads that use them, after the window is shown.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, QTimer, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication, QIcon
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from app import APP_NAME, __version__
from app.core.documents.attached import AttachedDocuments, DocumentRetriever
from app.core.errors import HearthError
from app.core.host import EngineHost
from app.core.instance import InstanceLock
from app.core.kv_state import StateCache
from app.core.logs import setup_logging
from app.core.paths import AppPaths
from app.core.remote_catalog import RemoteCatalog
from app.core.remote_servers import RemoteModel, ServerRegistry
from app.core.reply import ReplyDone, ReplyStarted
from app.core.settings import Settings
from app.core.store_recover import open_store
from app.core.tool_loop import Approval
from app.resources import icon_path
from app.ui import theme
from app.ui.chat_model import ChatModel
from app.ui.chat_session import ChatSession
from app.ui.chat_workflows import ChatWorkflows
from app.ui.compare_controller import CompareController
from app.ui.document_drop import DocumentDropFilter
from app.ui.documents_controller import DocumentsController
from app.ui.hub_controller import HubController
from app.ui.library_controller import LibraryController, LibrarySnapshot
from app.ui.main_window import MainWindow
from app.ui.mcp_settings import McpSettingsPage
from app.ui.prompt_dialog import PromptDialog
from app.ui.server_controller import ServerController
from app.ui.servers_tab import ServerEdit
from app.ui.settings_dialog import SettingsDialog
from app.ui.tool_approval import ApprovalDialog, ApprovalRequest
from app.ui.tool_replies import ToolCatalogue, ToolReplies, builtin_catalogue
from app.ui.untrusted import confirm, warn
from app.ui.welcome import RECOMMENDED_QUANT, RECOMMENDED_REPO
from app.ui.workers import EngineBridge, TaskRunner

if TYPE_CHECKING:
    from collections.abc import Callable

    from app.core.downloads import DownloadStatus
    from app.core.engine import LoadedModel
    from app.core.hardware import HardwareInfo
    from app.core.host import EngineFactory

log = logging.getLogger("hearth.ui")


class HearthApp(QObject):
    """Builds the core objects and the window, and connects them. Tests drive it directly."""

    def __init__(
        self,
        paths: AppPaths,
        *,
        engine_factory: EngineFactory | None = None,
        hub_factory: Callable[[Settings], Any] | None = None,
        hardware: Callable[[], HardwareInfo] | None = None,
    ) -> None:
        """hardware: what loads are planned for (default: this machine; tests inject a simulated GPU)."""
        super().__init__()
        self.paths = paths
        self.settings = Settings(paths.settings_file)
        opened = open_store(paths.history_db)
        self.store = opened.store
        self.store_message = opened.message
        self.tasks = TaskRunner(self)
        self.state_cache = StateCache(
            paths.cache_dir / "kv-states", self.settings.get("conversation_cache_mib") * 1024 * 1024
        )
        retriever = DocumentRetriever(paths.documents_db, lambda: str(self.settings.get("embedding_model")))
        self.host = EngineHost(
            engine_factory,
            store_path=paths.history_db,
            hardware=hardware,
            state_cache=self.state_cache,
            documents=retriever,
        )
        self.engine = EngineBridge(self.host, self)
        self.local_server = ServerController(self.host, self.settings, paths, self.tasks, self)
        # Remote servers: one backend each, registered with the host (nothing is asked over the network here).
        self.servers = ServerRegistry(self.settings)
        self.remote = RemoteCatalog(self.host)
        self.remote.sync(self.servers.all())
        self._server_reset: tuple[str, ...] = ()  # a server whose key just changed (its backend is renewed)
        self.chat_model = ChatModel(self)
        self.session = ChatSession(self.store, self.engine, self.chat_model, self.settings)
        self.tools = ToolReplies(self.host, paths, self.tasks, self)  # MCP servers, approvals, replies with tools
        self.session.tools = self.tools
        self.approval_dialog: ApprovalDialog | None = None
        self.library = LibraryController(paths, self.settings, self.tasks, hardware)
        hub_args = {"client_factory": hub_factory} if hub_factory is not None else {}
        self.hub = HubController(paths, self.settings, self.tasks, **hub_args)
        self.documents = DocumentsController(paths, self.settings, self.tasks, self.hub)
        self.window = MainWindow(self.chat_model, self.tasks)
        self.drops = DocumentDropFilter(self)  # documents dropped on the chat are attached to it
        for target in (self.window.chat_view.viewport(), self.window.welcome, self.window.composer.editor.viewport()):
            self.drops.watch(target)
        self._documents_window: Any = None
        self.source_dialog: Any = None  # the passage view last opened from a citation
        self._pending_files: dict[str, int] = {}  # files being indexed for a chat: path -> conversation id
        # The view keeps a raw pointer to its model: the model must die with the window, not with this object
        # (a window deleted later, by deleteLater or at exit, would otherwise disconnect from a freed model).
        self.chat_model.setParent(self.window)
        self._pending_autoload = ""  # a download whose model loads when it completes (first-run button)
        self._autoloaded = False  # the last session's model is loaded once, at start-up
        self._settings_dialog: SettingsDialog | None = None
        self._closed = False
        self._connect()
        self.workflows = ChatWorkflows(self)  # assistants, prompt picker, reply format, LoRA adapters
        self.compare = CompareController(self)
        self._unsubscribe = self.settings.subscribe(self._on_setting_changed)

    # ---- wiring -------------------------------------------------------------------------------------------------
    def _connect(self) -> None:
        w, s = self.window, self.session
        w.closing.connect(self.shutdown)
        w.settings_requested.connect(self.open_settings)
        w.files_dropped.connect(self._on_import_requested)
        w.stop_requested.connect(self._on_escape)
        w.new_chat_shortcut.activated.connect(self.new_chat)
        w.page_changed.connect(self._on_page_changed)
        # sidebar
        w.sidebar.new_chat_requested.connect(self.new_chat)
        w.sidebar.conversation_selected.connect(self.open_conversation)
        w.sidebar.hit_selected.connect(self._on_hit_selected)
        w.sidebar.search_changed.connect(self._on_search)
        w.sidebar.rename_requested.connect(s.rename)
        w.sidebar.pin_requested.connect(s.pin)
        w.sidebar.delete_requested.connect(self._on_delete_conversation)
        w.sidebar.restore_requested.connect(s.restore)
        # chat
        w.composer.send_requested.connect(self._on_send)
        w.composer.stop_requested.connect(s.stop)
        w.composer.edit_cancelled.connect(s.cancel_edit)
        w.chat_view.action_requested.connect(self._on_message_action)
        w.chat_view.notice.connect(self._on_notice)
        s.conversation_changed.connect(self._on_conversation_changed)
        s.conversations_changed.connect(self.refresh_conversations)
        s.notice.connect(w.composer.set_notice)
        s.error.connect(self._on_error)
        s.state_changed.connect(self._update_chat_state)
        s.edit_started.connect(w.composer.begin_edit)
        s.template_used.connect(self._on_template_used)
        s.target_changed.connect(self._on_target_changed)
        self.chat_model.rowsInserted.connect(self._update_chat_state)
        self.chat_model.modelReset.connect(self._update_chat_state)
        # model loading
        w.picker.load_requested.connect(self.load_model)
        w.picker.eject_requested.connect(self.eject)
        w.picker.remote_requested.connect(self._on_remote_requested)
        w.picker.combo.currentIndexChanged.connect(self._on_picker_selection)
        self.engine.load_progress.connect(w.picker.set_progress)
        self.engine.loaded.connect(self._on_loaded)
        self.engine.load_failed.connect(self._on_load_failed)
        self.engine.unloaded.connect(self._on_unloaded)
        self.engine.reply_done.connect(self._on_reply_done)
        # chat settings panel
        w.settings_panel.system_prompt_changed.connect(s.set_system_prompt)
        w.settings_panel.sampling_changed.connect(s.set_sampling)
        w.settings_panel.template_changed.connect(self._on_template_override)
        w.settings_panel.load_settings_changed.connect(self._on_load_settings_changed)
        w.settings_panel.reload_requested.connect(self._on_reload)
        # tools
        w.settings_panel.tools.changed.connect(self._on_tools_changed)
        w.settings_panel.tools.choice_changed.connect(s.set_tool_choice)
        self.tools.catalogue.connect(self._on_tool_catalogue)
        self.tools.servers_changed.connect(self._on_tool_servers_changed)
        self.tools.bridge.requested.connect(self._on_tool_approval)
        # documents
        docs, section = self.documents, w.settings_panel.documents
        section.attach_collection.connect(s.attach_collection)
        section.attach_file.connect(self.attach_file)
        section.detach.connect(s.detach)
        section.manage_requested.connect(self.open_documents)
        section.offer_requested.connect(docs.offer_embedding_model)
        s.documents_changed.connect(self._show_documents)
        docs.collections_changed.connect(self._on_collections)
        docs.embedding_changed.connect(section.set_embedding_model)
        docs.offer_status.connect(section.set_offer_status)
        docs.file_ready.connect(self._on_file_ready)
        docs.failed.connect(self._on_error)
        self.drops.files_dropped.connect(self._on_documents_dropped)
        w.chat_view.source_requested.connect(self._on_source_requested)
        # library
        self.library.scanned.connect(self._on_scanned)
        self.library.failed.connect(self._on_library_message)
        self.library.import_progress.connect(w.models_page.set_import_progress)
        self.library.imported.connect(self._on_imported)
        w.models_page.import_requested.connect(self._on_import_requested)
        w.models_page.load_requested.connect(self._on_models_page_load)
        w.models_page.delete_requested.connect(self._on_delete_model)
        w.models_page.refresh_requested.connect(self.library.scan)
        w.models_page.open_folder_requested.connect(self._on_open_folder)
        # hub
        w.hub_page.search_requested.connect(self.hub.search)
        w.hub_page.repo_selected.connect(self.hub.open_repo)
        w.hub_page.download_requested.connect(self.hub.download)
        w.hub_page.pause_requested.connect(self.hub.pause)
        w.hub_page.resume_requested.connect(self.hub.resume)
        w.hub_page.cancel_requested.connect(self.hub.cancel)
        w.hub_page.remove_requested.connect(self.hub.remove)
        self.hub.results.connect(w.hub_page.set_results)
        self.hub.search_failed.connect(w.hub_page.set_error)
        self.hub.details.connect(w.hub_page.set_details)
        self.hub.details_failed.connect(w.hub_page.set_details_error)
        self.hub.downloads_changed.connect(self._on_downloads_changed)
        self.hub.download_finished.connect(self._on_download_finished)
        self.hub.queued.connect(self._on_download_queued)
        self.hub.failed.connect(self._on_hub_failed)
        # first run
        w.welcome.download_recommended.connect(self.download_recommended)
        w.welcome.import_requested.connect(self._on_import_dialog)
        w.welcome.browse_requested.connect(self._on_browse)
        w.welcome.load_last_requested.connect(self._on_load_last)
        # local server
        self.local_server.state_changed.connect(self._on_server_state)
        self.local_server.requests_changed.connect(self._on_server_requests)

    # ---- start and stop --------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Restore the last session (window, conversation, model) and start the first scan."""
        self.window.restore_state(self.settings.get("window_geometry"), self.settings.get("window_state"))
        last = self.settings.get("last_conversation")
        if not (last and self.session.open(last)):
            self.session.new_chat()
        self.refresh_conversations()
        self._update_chat_state()
        self.window.settings_panel.set_load_settings(self._load_options(""))
        self._on_tool_servers_changed()
        self.library.scan()
        self.local_server.apply()
        self.refresh_remote_models()
        self._on_target_changed()
        self.documents.refresh()
        self.window.settings_panel.documents.set_embedding_model(self.documents.embedding_model)
        self.tasks.run(self._purge_job, None, self._on_purge_failed)
        if self.store_message:
            QTimer.singleShot(0, self._show_store_problem)

    def _purge_job(self) -> int:  # pool thread: its own connection
        """Conversations deleted more than 30 days ago are removed for good (the undo window is over)."""
        from app.core.store import Store

        with Store.open(self.paths.history_db) as store:
            purged = store.purge_deleted()
        if purged:
            log.info("purged %d conversations deleted more than 30 days ago", purged)
        return purged

    def _on_purge_failed(self, error: BaseException) -> None:
        log.warning("could not purge old deleted conversations: %s", error)

    def _show_store_problem(self) -> None:
        warn(self.window, APP_NAME, self.store_message or "")

    def shutdown(self) -> None:
        """Save the window, stop the reply, stop the engine thread, then free the model (a freed llama.cpp
        context must never be in use: that segfaults)."""
        if self._closed:
            return
        self._closed = True
        geometry, state = self.window.save_state()
        try:
            self.settings.set("window_geometry", geometry)
            self.settings.set("window_state", state)
        except Exception as exc:  # a read-only settings file must not stop the app from closing
            log.warning("could not save the window state: %s", exc)
        self._unsubscribe()
        self.library.stop_watching()
        self.local_server.shutdown()  # its requests are cancelled before the engine host stops
        if self.approval_dialog is not None:
            self.approval_dialog.reject()
        self.tools.shutdown()  # approvals denied, the reply stopped, every MCP server process ended
        self.documents.close()
        self.engine.shutdown()
        self.remote.close()
        self.hub.close()
        self.tasks.close(10_000)
        self.documents.close_index()
        self.store.close()

    # ---- conversations -----------------------------------------------------------------------------------------------
    def new_chat(self) -> None:
        self.window.show_page("chat")
        self.session.new_chat()
        self.window.composer.focus()

    def open_conversation(self, conversation_id: int) -> None:
        self.window.show_page("chat")
        self.session.open(conversation_id)

    def refresh_conversations(self) -> None:
        self.window.sidebar.set_conversations(self.session.list_conversations(), self.session.conversation_id)

    def _on_conversation_changed(self, conversation_id: int) -> None:
        panel = self.window.settings_panel
        panel.set_system_prompt(self.session.system_prompt)
        panel.set_sampling(self.session.preset, self.session.sampling)
        panel.tools.set_enabled(self.session.tool_names)
        panel.tools.set_choice(self.session.tool_choice)
        self._list_tools()
        self.window.sidebar.set_current(conversation_id)
        self._update_chat_state()

    def _on_hit_selected(self, conversation_id: int, message_id: int) -> None:
        self.open_conversation(conversation_id)
        QTimer.singleShot(0, lambda: self.window.chat_view.scroll_to_message(message_id))

    def _on_search(self, text: str) -> None:
        if text:
            self.window.sidebar.set_search_results(self.session.search(text))

    def _on_delete_conversation(self, conversation_id: int) -> None:
        title = self.session.delete(conversation_id)
        if title is not None:
            self.window.sidebar.show_undo(conversation_id, title)

    # ---- chatting ----------------------------------------------------------------------------------------------------
    def _on_send(self, text: str) -> None:
        self.window.settings_panel.flush_prompt()
        problem = self.workflows.send_problem()
        if problem:
            self.window.composer.set_notice(problem)
            return
        if self.session.send(text):
            self.window.composer.accept_sent()
            self.window.chat_view.follow_bottom()

    def _on_escape(self) -> None:
        if self.session.generating:
            self.session.stop()
        elif self.window.composer.editing:
            self.window.composer.end_edit()
            self.window.composer.editor.clear()
            self.session.cancel_edit()

    def _on_message_action(self, action: str, row: int) -> None:
        s = self.session
        if action == "copy":
            s.copy(row)
            self._on_notice("Message copied")
        elif action == "regenerate":
            s.regenerate(row)
        elif action == "edit":
            s.begin_edit(row)
        elif action in ("prev", "next"):
            s.switch_branch(row, -1 if action == "prev" else 1)
        elif action == "prompt":
            view = s.prompt_of(row)
            if view is not None:
                PromptDialog(view.text, view.template, view.reason, self.window).open()
        elif action in ("expand", "collapse"):  # a tool result's block
            item = self.chat_model.item(row)
            self.chat_model.update(row, expanded=action == "expand", revision=item.revision + 1)

    def _update_chat_state(self) -> None:
        s, w = self.session, self.window
        reason = s.can_send() or (self.compare.busy_reason() if not s.generating else "")
        w.composer.set_state(can_send=not reason, generating=s.generating_here, hint=reason)
        empty = self.chat_model.rowCount() == 0
        w.show_chat(empty)
        if empty:
            snapshot = self.library.snapshot
            last = self._last_model()
            if snapshot is not None and not snapshot.usable:
                w.welcome.show_state("first-run", "")
            elif s.remote is not None:
                w.welcome.show_state("start", f"{s.remote.id} on {s.remote.server}")
            elif self.engine.model is None:
                known = snapshot is not None and snapshot.find(last) is not None and not self.engine.loading
                w.welcome.show_state("no-model", "", Path(last).name if known else "")
            else:
                w.welcome.show_state("start", self.engine.model.info.display_name)

    def _on_reply_done(self, done: ReplyDone) -> None:
        if done.stats is not None:
            self.window.status.set_speed(done.stats.gen_tps)
            if done.context_used:  # a remote reply uses no local context
                self.window.status.set_context(done.context_used)

    def _on_notice(self, text: str) -> None:
        self.window.status.showMessage(text, 3000)

    def _on_error(self, text: str) -> None:
        self.window.status.showMessage(text, 8000)
        log.warning("%s", text)

    # ---- documents ---------------------------------------------------------------------------------------------------
    def open_documents(self) -> Any:
        """The Documents window (one, non-modal): collections, indexing, the embedding model."""
        from app.ui.documents_window import DocumentsWindow

        if self._documents_window is None:
            self._documents_window = DocumentsWindow(self.documents, self.window)
            self._documents_window.attach_requested.connect(self.session.attach_collection)
        if self._documents_window.isVisible():
            self._documents_window.raise_()  # already open behind the main window: bring it forward
        self._documents_window.show()
        return self._documents_window

    def _on_collections(self, views: list[Any]) -> None:
        self.window.settings_panel.documents.set_collections([view.name for view in views])

    def _show_documents(self, attached: AttachedDocuments) -> None:
        cid = self.session.conversation_id
        pending = {path for path, owner in self._pending_files.items() if owner == cid}
        self.window.settings_panel.documents.set_attached(attached, pending)

    def attach_file(self, path: str) -> None:
        """Attach one file to the open chat: indexed on a worker first (shown as "indexing…" meanwhile)."""
        resolved = str(Path(path).expanduser().resolve())
        self._pending_files[resolved] = self.session.conversation_id
        self._show_documents(self.session.documents)
        self.documents.attach_file(resolved)

    def _on_documents_dropped(self, paths: list[str]) -> None:
        self.window.show_page("chat")
        for path in paths:
            self.attach_file(path)
        names = ", ".join(Path(p).name for p in paths)
        self._on_notice(f"Attaching {names} to this chat")

    def _on_file_ready(self, path: str, error: str) -> None:
        owner = self._pending_files.pop(path, None)
        if owner is None:
            return
        if error:
            self._on_error(f"{Path(path).name} cannot be used: {error}")
        elif owner == self.session.conversation_id:
            self.session.attach_file(path)
        elif owner:  # the user moved to another chat meanwhile: the file goes to the chat it was dropped on
            try:
                conversation = self.store.conversation(owner)
                attached = AttachedDocuments.from_meta(conversation.meta.get("documents")).with_file(path)
                self.store.update_conversation(owner, meta={**conversation.meta, "documents": attached.to_meta()})
            except Exception as exc:  # the chat was deleted meanwhile
                log.warning("could not attach %s to conversation %s: %s", path, owner, exc)
        self._show_documents(self.session.documents)

    def _on_source_requested(self, row: int, number: int) -> None:
        """A citation [n] was clicked: the passage it points at."""
        from app.ui.source_view import SourceDialog

        found = self.session.source_of(row, number)
        if found is None:
            return
        source, question = found
        dialog = SourceDialog(source, question, self.window)
        self.documents.check_indexed(source.path, dialog.set_indexed)
        self.source_dialog = dialog
        dialog.open()

    # ---- models ------------------------------------------------------------------------------------------------------
    def _last_model(self) -> str:
        return str(self.settings.get("last_model"))

    def _load_options(self, path: str) -> dict[str, Any]:
        """The load settings shown for a model (stored form): the defaults, overridden for this model."""
        from app.core.load_policy import model_load_values

        return model_load_values(self.settings, Path(path).name if path else "")

    def load_model(self, path: str) -> None:
        self.window.show_page("chat")
        self.session.use_remote(None)  # loading a model means chatting with it
        self.window.picker.select(path)
        self.window.picker.set_loading(path)
        self.tools.stop()  # a reply with tools stops like any reply (the bridge stops its own)
        self.engine.load(path, self.workflows.load_config(path))
        self._update_chat_state()

    def eject(self) -> None:
        if self.engine.loading:
            self.engine.stop()
            return
        self.tools.stop()
        self.engine.eject()
        self.settings.set("last_model", "")

    def _on_loaded(self, model: LoadedModel) -> None:
        info = model.info
        summary = f"{info.file_type} · context {model.n_ctx:,} · loaded in {model.load_ms / 1000:.1f} s"
        self.window.picker.set_loaded(str(model.path), summary)
        self.window.status.set_model(model)
        for note in self.engine.notes:
            self._on_notice(note)
        self.settings.set("last_model", str(model.path))
        self._refresh_template_info()
        self.update_reload_button()
        self._update_chat_state()

    def _on_load_failed(self, message: str) -> None:
        self.window.picker.set_error(message)
        if self.engine.model is None:
            self.window.status.set_model(None)
        self._update_chat_state()

    def _on_unloaded(self) -> None:
        self.window.picker.set_unloaded()
        self.window.status.set_model(None)
        self._update_chat_state()

    def _on_picker_selection(self) -> None:
        path = self.window.picker.selected_path()
        self.window.settings_panel.set_load_settings(self._load_options(path))
        self.update_reload_button()

    def _on_load_settings_changed(self, values: dict[str, Any]) -> None:
        path = self.window.picker.selected_path() or (str(self.engine.model.path) if self.engine.model else "")
        if path:
            from app.core.load_policy import save_model_load

            save_model_load(self.settings, Path(path).name, values=values)  # its LoRA adapters stay
            self.library.scan()  # the fit shown depends on the context, KV type and GPU layers
        self.update_reload_button()

    def update_reload_button(self) -> None:
        model = self.engine.model
        selected = self.window.picker.selected_path()
        self.window.settings_panel.set_reload_enabled(model is not None and str(model.path) == selected)

    def _on_reload(self) -> None:
        if self.engine.model is not None:
            self.load_model(str(self.engine.model.path))

    def _on_load_last(self) -> None:
        if self._last_model():
            self.load_model(self._last_model())

    # ---- tools -------------------------------------------------------------------------------------------------------
    def _on_tools_changed(self, names: tuple[str, ...]) -> None:
        self.session.set_tools(names)
        self._list_tools()

    def _list_tools(self) -> None:
        """List the chat's tools (starting its servers, off the GUI thread) for the panel."""
        names = self.session.tool_names
        self.window.settings_panel.tools.set_listing([n for n in names if n in self.tools.server_names()])
        self.tools.list_tools(names)

    def _on_tool_catalogue(self, catalogue: ToolCatalogue) -> None:
        if not self._closed and catalogue.names == self.session.tool_names:  # not an older listing
            self.window.settings_panel.tools.set_catalogue(catalogue)

    def _on_tool_servers_changed(self) -> None:
        panel = self.window.settings_panel.tools
        panel.set_available(builtin_catalogue(), self.tools.server_names(), self.tools.config_error)
        panel.set_enabled(self.session.tool_names)
        self._list_tools()

    def _on_tool_approval(self, request: ApprovalRequest) -> None:
        """A tool call waits for the user: show it (the reply goes on when answered; Stop answers "deny")."""
        if self._closed:
            self.tools.bridge.answer(request, Approval.DENY)
            return
        self.window.show_page("chat")
        dialog = ApprovalDialog(request, self.tools.bridge, self.window)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.finished.connect(self._on_approval_closed)
        self.approval_dialog = dialog
        dialog.open()

    def _on_approval_closed(self) -> None:
        self.approval_dialog = None

    # ---- remote servers ----------------------------------------------------------------------------------------------
    def refresh_remote_models(self) -> None:
        """Ask every server for its models (off the GUI thread); the picker lists them under each server."""
        names = [config.name for config in self.servers.all()]
        self.window.picker.set_servers(names)
        for name in names:
            self.tasks.run(_remote_models_job(self.remote, name), self._on_remote_models)

    def _on_remote_models(self, result: tuple[str, list[str], str]) -> None:
        name, models, error = result
        if self.servers.find(name) is not None:  # not removed meanwhile
            self.window.picker.set_remote(name, models, error)

    def _on_remote_requested(self, server: str, model: str) -> None:
        self.window.show_page("chat")
        self.session.use_remote(RemoteModel(server, model))
        self.window.composer.focus()

    def _on_target_changed(self) -> None:
        remote = self.session.remote
        self.window.picker.set_remote_in_use((remote.server, remote.id) if remote else None)
        self._update_chat_state()

    def _on_servers_changed(self) -> None:
        reset, self._server_reset = self._server_reset, ()
        self.remote.sync(self.servers.all(), reset=reset)
        self.refresh_remote_models()
        dialog = self._settings_dialog
        if dialog is not None:
            dialog.servers.reload()

    def _on_server_save(self, edit: ServerEdit) -> None:
        self.tasks.run(_server_key_job(edit), self._on_server_key_saved, self._on_server_failed)

    def _on_server_key_saved(self, edit: ServerEdit) -> None:
        self._server_reset = (edit.config.name,)
        try:
            config = self.servers.put(edit.config, replacing=edit.replacing)
        except HearthError as exc:
            self._server_reset = ()
            self._on_server_failed(exc)
            return
        dialog = self._settings_dialog
        if dialog is not None:
            dialog.servers.reload(select=config.name)
            dialog.servers.set_status(f"Saved {config.name}. Its models are listed in the model picker.")

    def _on_server_failed(self, error: BaseException) -> None:
        dialog = self._settings_dialog
        if dialog is not None:
            dialog.servers.set_status(str(error), error=True)

    def _on_server_remove(self, name: str) -> None:
        config = self.servers.find(name)
        try:
            removed = self.servers.remove(name)
        except HearthError as exc:
            self._on_server_failed(exc)
            return
        if config is not None and config.has_key:
            from app.core.remote_keys import clear_key

            self.tasks.run(lambda: clear_key(removed), None, self._on_server_failed)
        dialog = self._settings_dialog
        if dialog is not None:
            dialog.servers.set_status(f"Removed {removed}.")

    def _on_server_test(self, config: Any, key: str) -> None:
        remote = self.remote
        self.tasks.run(
            lambda: remote.check(config, key or None).message, self._on_server_tested, self._on_server_failed
        )

    def _on_server_tested(self, message: str) -> None:
        dialog = self._settings_dialog
        if dialog is not None:
            dialog.servers.set_status(message)

    # ---- templates ---------------------------------------------------------------------------------------------------
    def _template_override(self) -> str:
        model = self.engine.model
        if model is None:
            return ""
        return str(self.settings.model_override(model.path.name).get("template", ""))

    def _refresh_template_info(self) -> None:
        model = self.engine.model
        if model is None:
            return
        override = self._template_override()
        self.session.template_override = override
        info = model.info

        def job() -> tuple[list[str], Any]:
            from app.core.templates import choose_template, families

            names = [f.name for f in families()]
            if info.chat_template:
                names.insert(0, "embedded")
            names += [f"embedded:{name}" for name in info.chat_templates]
            return names, choose_template(info, override or None)

        self.tasks.run(job, self._on_template_info, self._on_template_failed)

    def _on_template_info(self, result: tuple[list[str], Any]) -> None:
        names, choice = result
        self.window.settings_panel.set_templates(
            names, self._template_override(), choice.label, choice.reason, choice.warning
        )

    def _on_template_failed(self, error: BaseException) -> None:
        self.window.settings_panel.set_templates([], self._template_override(), "", str(error), None)

    def _on_template_override(self, name: str) -> None:
        model = self.engine.model
        if model is None:
            return
        self.settings.set_model_override(model.path.name, "template", name or None)
        self._refresh_template_info()

    def _on_template_used(self, started: ReplyStarted) -> None:
        self.window.status.set_context(started.prompt_tokens)

    # ---- library -----------------------------------------------------------------------------------------------------
    def _on_scanned(self, snapshot: LibrarySnapshot) -> None:
        w = self.window
        w.picker.set_entries(snapshot.entries, snapshot.fits)
        w.models_page.set_entries(snapshot.entries, snapshot.fits, snapshot.deletable, snapshot.folder)
        if self.engine.model is None and not self.engine.loading:
            last = self._last_model()
            if last and snapshot.find(last) is not None:
                w.picker.select(last)
                if not self._autoloaded:
                    self._autoloaded = True
                    self.load_model(last)  # the model that was loaded when Hearth was closed
        self._update_chat_state()

    def _on_library_message(self, text: str) -> None:
        self.window.models_page.show_message(text, error=True)
        self._on_error(text)

    def _on_import_requested(self, paths: list[str]) -> None:
        self.window.show_page("models")
        self.window.models_page.show_message("")
        self.library.import_files(paths)

    def _on_import_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self.window, "Import GGUF models", str(Path.home()), "GGUF models (*.gguf)"
        )
        if files:
            self._on_import_requested(files)

    def _on_imported(self, path: str) -> None:
        self.window.models_page.show_message(f"Added {Path(path).name} to your library.")

    def _on_models_page_load(self, path: str) -> None:
        self.load_model(path)

    def _on_delete_model(self, path: str) -> None:
        model = self.engine.model
        if model is not None and str(model.path) == path:
            self.window.models_page.show_message("Eject the model before deleting it.", error=True)
            return
        entry = self.library.snapshot.find(path) if self.library.snapshot else None
        if entry is None:
            return
        from app.ui.formatting import format_bytes

        question = f"Delete {entry.display_name}? This removes {format_bytes(entry.size_bytes)} from your disk."
        if confirm(self.window, "Delete model", question):  # plain text: the name comes from the file
            self.library.delete(path)

    def _on_open_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.paths.models_dir)))

    # ---- hub ---------------------------------------------------------------------------------------------------------
    def _on_page_changed(self, page: str) -> None:
        if page == "hub":
            self.hub.ensure_started()

    def _on_browse(self) -> None:
        self.window.show_page("hub")

    def download_recommended(self) -> None:
        self.window.welcome.set_status("Looking up the model on Hugging Face…")
        self._pending_autoload = "recommended"
        self.hub.download_quant(RECOMMENDED_REPO, RECOMMENDED_QUANT)

    def _on_download_queued(self, status: DownloadStatus) -> None:
        if self._pending_autoload == "recommended":
            self._pending_autoload = status.id
        self.window.hub_page.set_downloads(self.hub.bridge.statuses() if self.hub.bridge else [status])

    def _on_downloads_changed(self, statuses: list[DownloadStatus]) -> None:
        if self._closed:
            return
        self.window.hub_page.set_downloads(statuses)
        for status in statuses:
            if status.id == self._pending_autoload:
                from app.ui.formatting import format_bytes

                self.window.welcome.set_status(
                    f"Downloading {status.name}: {format_bytes(status.done_bytes)} of "
                    f"{format_bytes(status.total_bytes)} ({status.fraction:.0%})"
                    if status.state != "failed"
                    else f"Download failed: {status.error}"
                )

    def _on_download_finished(self, status: DownloadStatus) -> None:
        if self._closed:
            return
        self.library.scan()
        self._on_notice(f"Downloaded {status.name}")
        if status.id == self._pending_autoload and status.paths:
            self._pending_autoload = ""
            self.window.welcome.set_status("")
            self.load_model(str(status.paths[0]))

    def _on_hub_failed(self, message: str) -> None:
        self.window.hub_page.set_error(message)
        if self._pending_autoload:
            self._pending_autoload = ""
            self.window.welcome.set_status(f"Could not start the download: {message}")
        self._on_error(message)

    # ---- settings ----------------------------------------------------------------------------------------------------
    def open_settings(self) -> SettingsDialog:
        dialog = SettingsDialog(self.settings, self.window)
        dialog.set_server_status(self.local_server.status_text)
        tools_page = McpSettingsPage(self.tools.config_path, builtin_catalogue(), dialog)
        tools_page.saved.connect(self.tools.reload)
        dialog.add_page("Tools", tools_page)
        dialog.token_save_requested.connect(self._on_token_save)
        dialog.token_clear_requested.connect(self._on_token_clear)
        dialog.servers.save_requested.connect(self._on_server_save)
        dialog.servers.remove_requested.connect(self._on_server_remove)
        dialog.servers.test_requested.connect(self._on_server_test)
        self._settings_dialog = dialog
        self.tasks.run(_token_status, self._on_token_status, self._on_token_error)
        dialog.open()
        return dialog

    def _on_token_status(self, text: str) -> None:
        dialog = self._settings_dialog
        if dialog is not None:
            dialog.set_token_status(text)

    def _on_token_error(self, error: BaseException) -> None:
        self._on_token_status(str(error))

    def _on_token_save(self, token: str) -> None:
        def job() -> str:
            from app.core.hub_token import save_token

            save_token(token)
            return _token_status()

        self.tasks.run(job, self._on_token_status, self._on_token_error)

    def _on_token_clear(self) -> None:
        def job() -> str:
            from app.core.hub_token import clear_token

            clear_token()
            return _token_status()

        self.tasks.run(job, self._on_token_status, self._on_token_error)

    # ---- local server ------------------------------------------------------------------------------------------------
    def _on_server_state(self, state: str) -> None:
        server = self.local_server.server
        if state == "running" and server is not None:
            self.window.status.set_server(server.port, self.local_server.requests, self.local_server.url())
        else:
            self.window.status.set_server(None)
        if state == "error":
            self._on_error(f"Local server: {self.local_server.status_text}")
        if self._settings_dialog is not None:
            self._settings_dialog.set_server_status(self.local_server.status_text)

    def _on_server_requests(self, count: int) -> None:
        server = self.local_server.server
        if server is not None:
            self.window.status.set_server(server.port, count, self.local_server.url())
        if count == 0 and self.settings.get("server_save_history"):
            self.refresh_conversations()  # API conversations were saved

    def _on_setting_changed(self, name: str) -> None:
        self.local_server.setting_changed(name)
        if name == "theme":
            self.apply_theme()
        elif name == "conversation_cache_mib":
            self.state_cache.cap_bytes = self.settings.get(name) * 1024 * 1024
        elif name in ("model_folders", "scan_external_libraries") or name.startswith("default_n"):
            self.library.scan()
        elif name == "remote_servers":
            self._on_servers_changed()

    def apply_theme(self) -> None:
        app = QApplication.instance()
        if isinstance(app, QApplication):
            theme.apply(app, self.settings.get("theme"))
            self.window.chat_view.refresh_style()
            if self.library.snapshot is not None:
                self._on_scanned(self.library.snapshot)


def _remote_models_job(catalog: RemoteCatalog, name: str) -> Callable[[], tuple[str, list[str], str]]:
    def job() -> tuple[str, list[str], str]:  # pool thread: network only
        try:
            return name, [model.id for model in catalog.models(name, refresh=True)], ""
        except HearthError as exc:
            return name, [], str(exc)

    return job


def _server_key_job(edit: ServerEdit) -> Callable[[], ServerEdit]:
    def job() -> ServerEdit:  # pool thread: the keyring may block (a locked keyring asks to be unlocked)
        from app.core import remote_keys

        name, old = edit.config.name, edit.replacing
        if edit.key is not None:
            remote_keys.save_key(name, edit.key)
        elif edit.forget_key and old:
            remote_keys.clear_key(old)
        elif old and old.lower() != name.lower() and edit.config.has_key:
            key = remote_keys.load_key(old)  # renamed: the key moves with it
            if key:
                remote_keys.save_key(name, key)
                remote_keys.clear_key(old)
        return edit

    return job


def _token_status() -> str:
    from app.core.hub_token import load_token

    token = load_token()
    if token.value:
        return f"Using a token from {token.source.value} ({token.masked})."
    note = f" ({token.note})" if token.note else ""
    return f"No token: public models only{note}."


# ---- the process -----------------------------------------------------------------------------------------------------
def server_name(paths: AppPaths) -> str:
    """The local socket a running Hearth listens on, per data folder (so test homes never collide)."""
    digest = hashlib.sha1(str(paths.data_dir.resolve()).encode("utf-8")).hexdigest()[:12]
    return f"hearth-{digest}"


def ask_running_instance(name: str, timeout_ms: int = 1000) -> bool:
    """Ask the running Hearth to show its window; True if it answered."""
    socket = QLocalSocket()
    socket.connectToServer(name)
    if not socket.waitForConnected(timeout_ms):
        return False
    socket.write(b"raise\n")
    socket.flush()
    socket.waitForBytesWritten(timeout_ms)
    socket.disconnectFromServer()
    return True


class InstanceServer(QObject):
    """Listens for later launches and brings the window to the front."""

    def __init__(self, name: str, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.server = QLocalServer(self)
        QLocalServer.removeServer(name)  # a crashed instance may have left its socket file behind
        self.server.listen(name)
        self.server.newConnection.connect(self._on_connection)

    def _on_connection(self) -> None:
        while self.server.hasPendingConnections():
            connection = self.server.nextPendingConnection()
            connection.disconnected.connect(connection.deleteLater)
            self.raise_window()

    def raise_window(self) -> None:
        self.window.setWindowState(self.window.windowState() & ~Qt.WindowState.WindowMinimized)
        self.window.show()
        self.window.raise_()
        self.window.activateWindow()


def make_application() -> QApplication:
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(sys.argv)
    app.setApplicationName(APP_NAME)
    app.setApplicationVersion(__version__)
    app.setDesktopFileName("hearth")
    app.setWindowIcon(QIcon(str(icon_path("hearth.svg"))))
    return app


def run_gui() -> int:
    paths = AppPaths.default().ensure()
    setup_logging(paths.logs_dir)
    app = make_application()
    lock = InstanceLock(paths.data_dir / "hearth.lock")
    name = server_name(paths)
    if not lock.acquire():
        if ask_running_instance(name):
            return 0
        QMessageBox.information(None, APP_NAME, "Hearth is already running.")
        return 1
    try:
        hearth = HearthApp(paths)
        theme.apply(app, hearth.settings.get("theme"))
        QGuiApplication.styleHints().colorSchemeChanged.connect(hearth.apply_theme)
        InstanceServer(name, hearth.window)
        hearth.window.show()
        hearth.start()
        return app.exec()
    finally:
        lock.release()
