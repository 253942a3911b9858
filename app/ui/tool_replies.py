"""Replies with tools in the window: the MCP servers of the app, one worker thread per reply, and the rows
each reply adds to the chat.

A reply with tools is several host jobs (one per round) and tool calls in between, driven by
app.core.tool_reply.HostToolReply on a thread of its own (it blocks on the host's queue, on MCP calls and on
the user's approval). Its events come back to plain methods here, on the GUI thread, which update the chat:
the streamed prose of each round, "Called X" blocks, a collapsible block per tool result. The history is
written by the worker (the host saves each round, the worker completes it and adds the results), so a
conversation reopened, branched or regenerated reads it back like any other.

The MCP servers come from mcp.json in the data folder (Settings -> Tools) and are shared by every chat; a
server starts on first use and stops when the configuration changes or the window closes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from app.core.builtin_tools import builtin_tools
from app.core.errors import ConfigError, HearthError
from app.core.tool_loop import (
    ApprovalPolicy,
    AssistantTurn,
    CallStarting,
    LoopSettings,
    ReplyText,
    ToolRunning,
    ToolTurn,
)
from app.core.tool_reply import HostToolReply, RoundPrompt
from app.core.tool_setup import load_mcp_servers, mcp_config_path, toolbox_for
from app.core.tools import ToolChoice
from app.ui.chat_model import STORED_FIELDS, MessageItem
from app.ui.tool_approval import ApprovalBridge

if TYPE_CHECKING:
    from pathlib import Path

    from app.core.host import EngineHost
    from app.core.mcp_client import McpHub, McpServerConfig
    from app.core.messages import ChatMessage
    from app.core.paths import AppPaths
    from app.core.sampling import SamplingSettings
    from app.core.tools import ToolSpec
    from app.ui.chat_session import ChatSession
    from app.ui.workers import TaskRunner

log = logging.getLogger("hearth.ui.tools")

JOIN_S = 15.0  # at exit: a stopped reply ends within a token, a cancelled MCP call at once


@dataclass(frozen=True)
class ToolCatalogue:
    """What the chat settings panel lists for a conversation's tools: each tool, and servers that failed."""

    names: tuple[str, ...]  # the names it was made for
    specs: tuple[ToolSpec, ...]
    problems: dict[str, str]  # server -> why it cannot be used


class _Relay(QObject):
    """Carries a worker's events to the GUI thread."""

    event = Signal(object, object)  # (LoopEvent, id of the last stored message or None)
    round = Signal(object)  # RoundPrompt: a round's prompt is ready
    notice = Signal(str)
    failed = Signal(str)
    finished = Signal()


@dataclass
class _Run:
    """One reply with tools: its thread, and the rows it owns in the chat."""

    conversation_id: int
    first_key: int
    relay: _Relay
    reply: HostToolReply | None = None
    thread: threading.Thread | None = None
    stop_requested: bool = False
    rounds: int = 0  # rounds started
    round_keys: dict[int, int] = field(default_factory=dict)  # round -> row key
    round_ids: dict[int, int | None] = field(default_factory=dict)  # round -> stored message id
    tool_keys: dict[str, int] = field(default_factory=dict)  # call id -> row key


class ToolReplies(QObject):
    """The window's tools: MCP servers, approvals, and the replies that use them (one at a time).

    Signals: servers_changed() — the configuration was (re)read; catalogue(ToolCatalogue) — tools listed.
    """

    servers_changed = Signal()
    catalogue = Signal(object)

    def __init__(self, host: EngineHost, paths: AppPaths, tasks: TaskRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.paths = paths
        self.tasks = tasks
        self.bridge = ApprovalBridge(self)
        self.hub: McpHub | None = None
        self.config_error = ""
        self.max_rounds = LoopSettings().max_rounds
        self.session: ChatSession | None = None
        self._run: _Run | None = None
        self._closed = False
        self.reload()

    # ---- the MCP servers ---------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return mcp_config_path(self.paths)

    def server_names(self) -> list[str]:
        return list(self.hub.servers) if self.hub is not None else []

    def reload(self) -> None:
        """(Re)read mcp.json. Running servers of the old configuration are stopped off the GUI thread."""
        from app.core.mcp_client import McpHub

        old, self.hub = self.hub, None
        try:
            servers: list[McpServerConfig] = load_mcp_servers(self.config_path)
        except ConfigError as exc:
            self.config_error = str(exc)
            log.warning("MCP configuration not used: %s", exc)
        else:
            self.config_error = ""
            self.hub = McpHub(servers) if servers else None
        if old is not None:
            threading.Thread(target=old.close, name="hearth-mcp-close", daemon=True).start()
        self.servers_changed.emit()

    def list_tools(self, names: Sequence[str]) -> None:
        """List the tools these names turn on (starting their servers) off the GUI thread; -> catalogue."""
        hub, wanted = self.hub, tuple(names)

        def job() -> ToolCatalogue:
            box = toolbox_for(wanted, hub)
            specs = tuple(box.specs())
            return ToolCatalogue(wanted, specs, box.problems())

        self.tasks.run(job, self.catalogue.emit, self._on_list_failed)

    def _on_list_failed(self, error: BaseException) -> None:
        log.warning("listing tools failed: %s", error)

    # ---- replies --------------------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._run is not None

    def start(
        self,
        session: ChatSession,
        history: Sequence[ChatMessage],
        *,
        names: Sequence[str],
        conversation_id: int,
        parent_id: int,
        row_key: int,
        sampling: SamplingSettings,
        template_override: str | None,
        allowed: Sequence[str],
        tool_choice: str = "auto",
    ) -> None:
        """Start a reply with these tools to the last message of history (row_key: its placeholder row)."""
        self.session = session
        relay = _Relay()
        run = _Run(conversation_id, row_key, relay)
        relay.event.connect(self._on_event)
        relay.round.connect(self._on_round)
        relay.notice.connect(self._on_notice)
        relay.failed.connect(self._on_failed)
        relay.finished.connect(self._on_finished)
        self._run = run
        hub, host, store_path = self.hub, self.host, session.store_path
        max_rounds = self.max_rounds
        policy = ApprovalPolicy(allowed)
        bridge = self.bridge

        def work() -> None:  # the worker thread: touches nothing but the relay
            from app.core.store import Store

            store = None
            try:
                store = Store.open(store_path)
                toolbox = toolbox_for(names, hub)
                toolbox.specs()  # starts the servers now: one that fails is reported before the model writes
                notices = [f"{problem}. The chat goes on without it." for problem in toolbox.problems().values()]
                choice = _choice(tool_choice, toolbox.specs(), notices)
                if notices:
                    relay.notice.emit(" ".join(notices))
                settings = LoopSettings(max_rounds=max_rounds, tool_choice=choice)
                reply = HostToolReply(
                    host.client("window-tools"),
                    toolbox,
                    lambda call, spec: bridge.ask(call, spec, reply.stop_event),
                    sampling=sampling,
                    template_override=template_override,
                    conversation_id=conversation_id,
                    parent_id=parent_id,
                    key=("conversation", conversation_id),
                    store=store,
                    policy=policy,
                    settings=settings,
                    on_round=relay.round.emit,
                )
                run.reply = reply
                if run.stop_requested:
                    reply.stop()
                for event in reply.run(history):
                    relay.event.emit(event, reply.last_id)
            except HearthError as exc:
                relay.failed.emit(str(exc))
            except Exception as exc:  # never lose a reply silently
                log.exception("reply with tools failed")
                relay.failed.emit(f"{type(exc).__name__}: {exc}")
            finally:
                if store is not None:
                    store.close()
                relay.finished.emit()

        run.thread = threading.Thread(target=work, name="hearth-tool-reply", daemon=True)
        run.thread.start()

    def stop(self) -> None:
        """Stop the reply in progress (GUI thread): the round stops within a token, a running call is
        cancelled, an approval waiting is answered "deny" and its dialog closes."""
        run = self._run
        if run is None:
            return
        run.stop_requested = True
        if run.reply is not None:
            run.reply.stop()

    def shutdown(self) -> None:
        """The window closes: deny every approval, stop the reply, wait for its thread, stop every server."""
        if self._closed:
            return
        self._closed = True
        self.bridge.close()
        run = self._run
        self.stop()
        if run is not None and run.thread is not None:
            run.thread.join(JOIN_S)
            if run.thread.is_alive():
                log.error("a reply with tools did not stop within %.0f s", JOIN_S)
        if self.hub is not None:
            self.hub.close()
            self.hub = None

    # ---- events (GUI thread) -------------------------------------------------------------------------------------
    def _shown(self, run: _Run) -> bool:
        session = self.session
        return session is not None and session.conversation_id == run.conversation_id and not self._closed

    def _row(self, key: int | None) -> int:
        if key is None or self.session is None:
            return -1
        return self.session.model.row_of_key(key)

    def _round_row(self, run: _Run, round_number: int) -> int:
        """The row of a round's assistant message, added (streaming) when the round has none yet."""
        assert self.session is not None
        model = self.session.model
        if round_number == 1 and 1 not in run.round_keys:
            run.round_keys[1] = run.first_key
        row = self._row(run.round_keys.get(round_number))
        if row < 0:
            item = MessageItem(role="assistant", content="", streaming=True, message_id=run.round_ids.get(round_number))
            row = model.append(item)
            run.round_keys[round_number] = item.key
        return row

    def _on_round(self, prompt: RoundPrompt) -> None:
        run = self._run
        if run is None:
            return
        run.rounds += 1
        run.round_ids[run.rounds] = prompt.message_id
        if self.session is not None:
            self.session.template_used.emit(prompt.started)
        if self._shown(run):
            row = self._round_row(run, run.rounds)
            assert self.session is not None
            self.session.model.update(row, message_id=prompt.message_id, template=prompt.started.template)

    def _on_event(self, event: Any, stored_id: int | None) -> None:
        run = self._run
        if run is None or not self._shown(run):
            return  # the user is looking at another chat: the history has it all
        assert self.session is not None
        model = self.session.model
        if isinstance(event, ReplyText):
            row = self._round_row(run, event.round)
            model.append_text(model.item(row).key, event.text)
        elif isinstance(event, CallStarting):
            model.flush()
            model.update(self._round_row(run, event.round), status="Calling a tool…")
        elif isinstance(event, AssistantTurn):
            model.flush()
            row = self._round_row(run, event.round)
            self._show_stored(row, stored_id, event.message.content, status="")
        elif isinstance(event, ToolRunning):
            item = MessageItem(
                role="tool",
                content="",
                streaming=True,
                tool_name=event.call.name,
                tool_call_id=event.call.id,
                status=f"Running {event.call.name}…",
            )
            model.append(item)
            run.tool_keys[event.call.id] = item.key
        elif isinstance(event, ToolTurn):
            row = self._row(run.tool_keys.get(event.call.id))
            if row < 0:
                item = MessageItem(role="tool", content="", tool_name=event.call.name, tool_call_id=event.call.id)
                row = model.append(item)
            self._show_stored(row, stored_id, event.message.content, tool_outcome=event.outcome, status="")

    def _show_stored(self, row: int, stored_id: int | None, content: str, **extra: Any) -> None:
        """Show a finished turn as the history has it (ids, statistics, calls), else as the loop gave it."""
        assert self.session is not None
        model = self.session.model
        changes: dict[str, Any] = {"content": content, "streaming": False, **extra}
        if stored_id is not None:
            try:
                stored = MessageItem.from_message(self.session.store.message(stored_id))
            except HearthError as exc:
                changes["error"] = str(exc)
            else:
                changes.update({name: getattr(stored, name) for name in STORED_FIELDS})
        model.update(row, **changes)

    def _on_notice(self, text: str) -> None:
        run = self._run
        if run is not None and self._shown(run) and self.session is not None:
            self.session.notice.emit(text)

    def _on_failed(self, message: str) -> None:
        run = self._run
        if run is None:
            return
        if not self._shown(run):
            if self.session is not None:
                self.session.error.emit(f"A reply in another chat failed: {message}")
            return
        assert self.session is not None
        model = self.session.model
        for key in [*run.round_keys.values(), run.first_key]:
            row = self._row(key)
            if row >= 0 and model.item(row).streaming:
                model.update(row, streaming=False, status="", error=f"The reply failed: {message}")
                return
        self.session.error.emit(f"The reply failed: {message}")

    def _on_finished(self) -> None:
        run, self._run = self._run, None
        if run is None or self.session is None or self._closed:
            return  # closed: the window (and the session's store) may be gone already
        model = self.session.model
        model.flush()
        if self._shown(run):
            for key in [run.first_key, *run.round_keys.values(), *run.tool_keys.values()]:
                row = self._row(key)
                if row >= 0 and model.item(row).streaming:
                    item = model.item(row)
                    if not item.content and not item.error and item.message_id is None:
                        model.update(row, streaming=False, status="", error="Stopped before the reply began.")
                    else:
                        model.update(row, streaming=False, status="")
        self.session.tool_reply_finished()

    def reattach(self, items: list[MessageItem]) -> None:
        """The conversation of the running reply was opened again: its rows are the stored ones now; the
        round being written continues in its stored row."""
        run = self._run
        if run is None:
            return
        run.round_keys.clear()
        run.tool_keys.clear()
        current = run.round_ids.get(run.rounds)
        for item in items:
            if current is not None and item.message_id == current:
                item.streaming = True
                item.content = ""  # the stored text so far has the raw call text; the round's prose follows
                run.round_keys[run.rounds] = item.key
        run.first_key = run.round_keys.get(1, run.first_key)


def _choice(value: str, specs: Sequence[ToolSpec], notices: list[str]) -> ToolChoice:
    """The chat's "first reply" setting as the loop's ToolChoice; a tool no longer available is ignored."""
    if value in ("", "auto"):
        return ToolChoice()
    if value == "required":
        return ToolChoice("required") if specs else ToolChoice()
    if any(spec.name == value for spec in specs):
        return ToolChoice("named", value)
    notices.append(f"The tool {value!r} is not available now, so the model may answer without calling it.")
    return ToolChoice()


def builtin_catalogue() -> list[tuple[str, str]]:
    """(name, description) of every built-in tool, for Settings and the chat panel."""
    from app.core.builtin_tools import BUILTIN_TOOLS

    return [(spec.name, spec.description) for spec, _function in builtin_tools(list(BUILTIN_TOOLS))]
