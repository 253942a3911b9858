"""The open conversation: history from the store, replies through the engine thread, branches and edits.

Lives in the GUI thread. The store connection here is for short reads and writes (a conversation opens
in a few ms); the engine thread writes the streamed reply through its own connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from dataclasses import replace as _replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QGuiApplication

from app.core.chat_setup import ChatSetup
from app.core.documents.attached import AttachedDocuments, retrieval_report
from app.core.errors import HearthError
from app.core.remote_servers import RemoteModel
from app.core.reply import ReplyDone, ReplyRequest, ReplyStarted, create_conversation
from app.core.sampling import PRESETS, SamplingSettings
from app.core.structured import ReplyFormat
from app.core.tool_reply import allowed_in
from app.core.tool_setup import TOOLS_META, enabled_names
from app.ui.chat_model import STORED_FIELDS, ChatModel, MessageItem
from app.ui.workers import EngineBridge

if TYPE_CHECKING:
    from app.core.documents.retrieval import Source
    from app.core.settings import Settings
    from app.core.store import Conversation, SearchHit, Store, StoredMessage
    from app.ui.tool_replies import ToolReplies

log = logging.getLogger("hearth.ui.session")

TOOL_JOB = -1  # _Active.job_id of a reply with tools (rounds of host jobs run by app.ui.tool_replies)
CHOICE_META = "tool_choice"  # conversation meta: "required" or a tool's name ("auto" is not stored)


class ModelLoads(Protocol):
    """How a chat's load settings (an assistant's context, GPU layers, LoRA adapters) reach the loaded model
    (app.ui.chat_loads.ChatLoads)."""

    def problem(self, setup: ChatSetup) -> str | None:
        """Why replies with this setup cannot run on the loaded model (a LoRA adapter that does not fit it)."""
        ...

    def prepare(self, setup: ChatSetup) -> None:
        """Queue a reload with this setup's load settings when the loaded model was loaded otherwise."""
        ...


@dataclass
class _Active:
    """The reply being written, wherever it belongs (the user may look at another chat meanwhile)."""

    job_id: int
    conversation_id: int
    row_key: int  # the MessageItem key of its row while its conversation is shown
    message_id: int | None = None
    text: str = ""


@dataclass(frozen=True)
class PromptView:
    """What 'Show prompt' displays for a reply."""

    text: str
    template: str
    reason: str


class ChatSession(QObject):
    """Signals:
    conversation_changed(int): the open conversation (0 = a new chat not saved yet).
    conversations_changed(): titles, order or membership of the list changed.
    notice(str): something the user should read above the composer ('' clears it).
    error(str): an operation failed (one line).
    state_changed(): generating / can-send changed.
    edit_started(str): the composer should edit this text.
    template_used(object ReplyStarted): the template and prompt of the reply just started.
    target_changed(): replies now go to another place (a remote model, or back to the loaded one).
    documents_changed(object AttachedDocuments): what the open conversation answers from changed.
    """

    conversation_changed = Signal(int)
    conversations_changed = Signal()
    notice = Signal(str)
    error = Signal(str)
    state_changed = Signal()
    edit_started = Signal(str)
    template_used = Signal(object)
    target_changed = Signal()
    documents_changed = Signal(object)

    def __init__(self, store: Store, engine: EngineBridge, model: ChatModel, settings: Settings) -> None:
        super().__init__()
        self.store = store
        self.engine = engine
        self.model = model
        self.settings = settings
        self.conversation: Conversation | None = None
        self.system_prompt = settings.get("default_system_prompt")
        self.preset = settings.get("default_sampling_preset")
        self.sampling = PRESETS.get(self.preset, SamplingSettings())
        self.template_override = ""
        # The rest of the chat's setup (assistant, reply format, load settings); system prompt, preset and
        # sampling live in the attributes above while the chat is open (current_setup() puts them together).
        self.setup = ChatSetup()
        self.loads: ModelLoads | None = None  # set by the app: reloads a chat's load settings need
        self.remote: RemoteModel | None = None  # replies go to this server's model instead of the loaded one
        self.tools: ToolReplies | None = None  # set by the app: replies with tools go through it
        self.tool_names: tuple[str, ...] = ()  # the tools and MCP servers this chat has on (its meta "tools")
        self.tool_choice = "auto"  # "auto", "required" or a tool's name: the first reply must call it
        self.documents = AttachedDocuments()  # what the open conversation answers from
        self._active: _Active | None = None
        self._editing_row = -1
        self._templates: dict[int, ReplyStarted] = {}
        engine.reply_started.connect(self._on_reply_started)
        engine.reply_chunk.connect(self._on_reply_chunk)
        engine.reply_done.connect(self._on_reply_done)
        engine.state_changed.connect(self.state_changed)

    # ---- state ------------------------------------------------------------------------------------------
    @property
    def conversation_id(self) -> int:
        return self.conversation.id if self.conversation else 0

    @property
    def generating(self) -> bool:
        return self._active is not None

    @property
    def generating_here(self) -> bool:
        return self._active is not None and self._active.conversation_id == self.conversation_id

    @property
    def store_path(self) -> Path:
        return Path(self.store.path)

    def list_conversations(self) -> list[Conversation]:
        return self.store.list_conversations(500)

    # ---- opening ------------------------------------------------------------------------------------------
    def _leave(self) -> None:
        """The open conversation is being left: its KV cache goes to disk, so it reopens instantly."""
        if self.conversation is not None and self.engine.model is not None:
            self.engine.save_conversation(self.conversation.id)

    def new_chat(self, setup: ChatSetup | None = None) -> None:
        """Start a chat (saved with its first message): the defaults, or `setup` (an assistant applied)."""
        self._leave()
        self.conversation = None
        if setup is None:
            preset = self.settings.get("default_sampling_preset")
            sampling = PRESETS.get(preset, SamplingSettings())
            setup = ChatSetup(self.settings.get("default_system_prompt"), preset=preset, sampling=sampling)
        self.setup = setup
        self.system_prompt, self.preset, self.sampling = setup.system_prompt, setup.preset, setup.sampling
        self.tool_names = tuple(setup.tools)  # an assistant's tools are on; a plain chat has none
        self.tool_choice = "auto"
        self.documents = AttachedDocuments(tuple(setup.documents))  # an assistant's collections
        self._editing_row = -1
        self.model.reset([])
        self.notice.emit("")
        self.conversation_changed.emit(0)
        self.documents_changed.emit(self.documents)
        self.state_changed.emit()

    def open(self, conversation_id: int) -> bool:
        try:
            conversation = self.store.conversation(conversation_id)
            messages = self.store.messages(conversation_id)
        except HearthError as exc:
            self.error.emit(str(exc))
            return False
        if conversation.deleted_at is not None:
            return False
        if self.conversation is not None and self.conversation.id != conversation_id:
            self._leave()
        self.conversation = conversation
        self.setup = ChatSetup.from_conversation(conversation, self.settings.get("default_sampling_preset"))
        self.system_prompt, self.preset, self.sampling = (
            self.setup.system_prompt,
            self.setup.preset,
            self.setup.sampling,
        )
        self.tool_names = enabled_names(conversation.meta)
        self.tool_choice = str(conversation.meta.get(CHOICE_META) or "auto")
        self.documents = AttachedDocuments.from_meta(conversation.meta.get("documents"))
        self._editing_row = -1
        self._set_remote(RemoteModel.from_meta(conversation.meta.get("remote")))
        items = [_item(m) for m in messages if m.role != "system"]
        active = self._active
        if active is not None and active.conversation_id == conversation_id:
            if active.job_id == TOOL_JOB and self.tools is not None:
                self.tools.reattach(items)
            else:
                self._reattach(items, active)
        self.model.reset(items)
        self.notice.emit("")
        self.settings.set("last_conversation", conversation_id)
        self.conversation_changed.emit(conversation_id)
        self.documents_changed.emit(self.documents)
        self.state_changed.emit()
        return True

    def _reattach(self, items: list[MessageItem], active: _Active) -> None:
        """The conversation being written to was opened again: show the live reply, not the saved part."""
        for item in items:
            if active.message_id is not None and item.message_id == active.message_id:
                item.content, item.streaming = active.text, True
                active.row_key = item.key
                return
        placeholder = MessageItem(role="assistant", content=active.text, streaming=True)
        active.row_key = placeholder.key
        items.append(placeholder)

    def _ensure_conversation(self) -> Conversation:
        if self.conversation is None:
            model = None if self.remote is not None else self.engine.model
            args = self.current_setup().create_args({"remote": self.remote.to_meta()} if self.remote else None)
            conversation_id = create_conversation(
                self.store,
                model_path=self.remote.id if self.remote else str(model.path) if model else "",
                load_settings=model.config.to_dict() if model else {},
                **{**args, "template_override": self.template(), "meta": self._conversation_meta(args["meta"])},
            )
            self.conversation = self.store.conversation(conversation_id)
            self.settings.set("last_conversation", self.conversation.id)
            self.conversation_changed.emit(self.conversation.id)
        return self.conversation

    # ---- sending --------------------------------------------------------------------------------------------
    def use_remote(self, target: RemoteModel | None) -> None:
        """Send this chat's replies to a server's model (None: to the loaded model); the conversation
        remembers it."""
        if target == self.remote:
            return
        self._set_remote(target)
        if self.conversation is not None:
            meta = {k: v for k, v in self.conversation.meta.items() if k != "remote"}
            if target is not None:
                meta["remote"] = target.to_meta()
            self._update(meta=meta)
        self.state_changed.emit()

    def _set_remote(self, target: RemoteModel | None) -> None:
        changed = target != self.remote
        self.remote = target
        if changed:
            self.target_changed.emit()

    def can_send(self) -> str:
        """'' when a message can be sent now, else why not (shown under the composer)."""
        if self.remote is None and self.engine.model is None:
            return "Load a model above to start chatting." if not self.engine.loading else "The model is loading…"
        if self._active is not None:
            return "" if self.generating_here else "A reply is being written in another chat; stop it first."
        return ""

    def send(self, text: str) -> bool:
        """Send a message (or, while editing, the edited message as a new branch)."""
        text = text.strip()
        if not text or self.can_send() or self._active is not None:
            return False
        args = self._reply_args()
        if args is None:
            return False
        if self._editing_row >= 0:
            return self._send_edit(text, args)
        try:
            conversation = self._ensure_conversation()
            user = self.store.add_message(conversation.id, "user", text)
        except HearthError as exc:
            self.error.emit(str(exc))
            return False
        self.model.append(MessageItem.from_message(user))
        self._start_reply(user.id, args)
        self.conversations_changed.emit()
        return True

    def _history(self, upto_row: int) -> list:
        from app.core.messages import ChatMessage

        history = [ChatMessage("system", self.system_prompt)] if self.system_prompt.strip() else []
        for item in self.model.items[: upto_row + 1]:
            if item.message_id is not None and item.role in ("user", "assistant", "tool"):
                history.append(item.to_chat())
        return history

    def current_setup(self) -> ChatSetup:
        """What this chat runs with now (its setup with the live system prompt and sampling)."""
        return _replace(self.setup, system_prompt=self.system_prompt, preset=self.preset, sampling=self.sampling)

    def template(self) -> str:
        """The template override for replies: the assistant's when it names one, else the model's setting."""
        return (
            self.setup.template if self.setup.assistant is not None and self.setup.template else self.template_override
        )

    def _reply_args(self) -> dict[str, Any] | None:
        """ReplyRequest arguments from the chat's setup, or None (and the reason shown) when no reply can be
        sent with it: an unusable reply schema, a LoRA adapter that does not fit the loaded model."""
        setup = self.current_setup()
        try:
            if self.remote is not None:  # a server gets the reply format as response_format (from meta)
                args = {"sampling": setup.sampling, "meta": {"reply_format": setup.reply_format.to_dict()}}
            else:
                args = setup.request_args()
                problem = self.loads.problem(setup) if self.loads is not None else None
                if problem:
                    raise HearthError(problem)
        except HearthError as exc:
            self.notice.emit(f"Not sent: {exc}")
            self.error.emit(str(exc))
            return None
        args["template_override"] = self.template() or None
        return args

    def _start_reply(self, parent_id: int, args: dict[str, Any]) -> None:
        """Generate a reply to the user message parent_id, which must be the last row."""
        assert self.conversation is not None
        user_row = self.model.rowCount() - 1
        placeholder = MessageItem(role="assistant", content="", streaming=True, parent_id=parent_id)
        if self.tools is not None and self.tool_names and self.remote is None:
            self.model.append(placeholder)
            self._active = _Active(TOOL_JOB, self.conversation.id, placeholder.key)
            self.tools.start(
                self,
                self._history(user_row),
                names=self.tool_names,
                conversation_id=self.conversation.id,
                parent_id=parent_id,
                row_key=placeholder.key,
                sampling=self.sampling,
                template_override=self.template() or None,
                allowed=allowed_in(self.conversation.meta),
                tool_choice=self.tool_choice,
            )
            self.notice.emit("")
            self.state_changed.emit()
            return
        remote = self.remote
        request = ReplyRequest(
            tuple(self._history(user_row)),
            conversation_id=self.conversation.id,
            parent_id=parent_id,
            backend=remote.server if remote else None,
            **{**args, "meta": {**args.get("meta", {}), **({"model": remote.id} if remote else {})}},
            documents=self.documents or None,
        )
        self.model.append(placeholder)
        if remote is None and self.loads is not None:
            self.loads.prepare(self.current_setup())  # a reload queued now runs before the reply
        job_id = self.engine.reply(request)
        self._active = _Active(job_id, self.conversation.id, placeholder.key)
        without = remote is not None and self.tool_names and self.tools is not None
        self.notice.emit(
            "Tools work with models loaded here only: this reply goes to the server without them." if without else ""
        )
        self.state_changed.emit()

    def stop(self) -> None:
        self.engine.stop()
        if self.tools is not None:
            self.tools.stop()

    def tool_reply_finished(self) -> None:
        """The reply with tools has ended (app.ui.tool_replies calls this on the GUI thread)."""
        if self._active is not None and self._active.job_id == TOOL_JOB:
            conversation_id = self._active.conversation_id
            self._active = None
            if conversation_id == self.conversation_id:
                self._refresh_conversation()
        self.conversations_changed.emit()
        self.state_changed.emit()

    def _refresh_conversation(self) -> None:
        """Read the open conversation's row again ("always allow" answers were added to its meta)."""
        try:
            self.conversation = self.store.conversation(self.conversation_id)
        except HearthError as exc:
            self.error.emit(str(exc))

    # ---- replies from the engine thread (plain methods: they run on the GUI thread) ---------------------------
    def _row(self, active: _Active) -> int:
        if active.conversation_id != self.conversation_id:
            return -1
        return self.model.row_of_key(active.row_key)

    def _on_reply_started(self, started: ReplyStarted) -> None:
        active = self._active
        if active is None or active.job_id != started.job_id:
            return
        active.message_id = started.message_id
        self._templates[started.message_id] = started
        row = self._row(active)
        if row >= 0:
            sources = tuple(started.meta.get("sources") or ())
            self.model.update(row, message_id=started.message_id, template=started.template, sources=sources)
        notices = []
        if started.dropped:
            notices.append(
                f"The {started.dropped} oldest messages no longer fit in the model's context and were left out "
                "of this reply. Load the model with a larger context to keep them."
            )
        if started.template_warning:
            notices.append(started.template_warning)
        if "sources" in started.meta and not started.meta["sources"]:
            note = (started.meta.get("retrieval") or {}).get("note", "")
            notices.append(f"No passage of the attached documents went to the model{f' ({note})' if note else ''}.")
        if notices and active.conversation_id == self.conversation_id:
            self.notice.emit(" ".join(notices))
        self.template_used.emit(started)

    def _on_reply_chunk(self, job_id: int, text: str) -> None:
        active = self._active
        if active is None or active.job_id != job_id:
            return
        active.text += text
        row = self._row(active)
        if row >= 0:
            self.model.append_text(active.row_key, text)

    def _on_reply_done(self, done: ReplyDone) -> None:
        active = self._active
        if active is None or active.job_id != done.job_id:
            return
        self._active = None
        self.model.flush()
        row = self._row(active)
        if row >= 0:
            if done.message_id is not None:
                try:
                    message = self.store.message(done.message_id)
                    fresh = MessageItem.from_message(message)
                    self.model.update(
                        row,
                        **{k: getattr(fresh, k) for k in STORED_FIELDS},
                        streaming=False,
                        error=_error_text(done),
                    )
                except HearthError as exc:
                    self.model.update(row, streaming=False, error=str(exc))
            else:
                self.model.update(row, streaming=False, error=_error_text(done) or "Stopped before the reply began.")
        elif done.error and done.conversation_id != self.conversation_id:
            self.error.emit(f"A reply in another chat failed: {done.error}")
        self.conversations_changed.emit()
        self.state_changed.emit()

    # ---- message actions ---------------------------------------------------------------------------------------
    def regenerate(self, row: int) -> bool:
        """A new reply to the same question, as a new branch (the old reply stays one click away)."""
        if self._active is not None or self.can_send() or not 0 < row < self.model.rowCount():
            return False
        item = self.model.item(row)
        if item.role != "assistant":
            return False
        user_row = row - 1
        while user_row > 0 and self.model.item(user_row).role in ("assistant", "tool"):
            user_row -= 1  # a reply with tools: its rounds and results all answer the same message
        parent = self.model.item(user_row)
        if parent.message_id is None or parent.role != "user":
            return False
        args = self._reply_args()
        if args is None:
            return False
        self.model.truncate(user_row + 1)
        self._start_reply(parent.message_id, args)
        return True

    def begin_edit(self, row: int) -> bool:
        item = self.model.item(row)
        if item.role != "user" or item.message_id is None or self._active is not None:
            return False
        self._editing_row = row
        self.edit_started.emit(item.content)
        return True

    def cancel_edit(self) -> None:
        self._editing_row = -1

    def _send_edit(self, text: str, args: dict[str, Any]) -> bool:
        row, self._editing_row = self._editing_row, -1
        item = self.model.item(row)
        assert item.message_id is not None
        try:
            edited = self.store.edit_message(item.message_id, text)
        except HearthError as exc:
            self.error.emit(str(exc))
            return False
        self.model.truncate(row)
        self.model.append(MessageItem.from_message(edited))
        self._start_reply(edited.id, args)
        self.conversations_changed.emit()
        return True

    def switch_branch(self, row: int, step: int) -> bool:
        """Show the previous (-1) or next (+1) alternative of the message at row."""
        item = self.model.item(row)
        if item.message_id is None or self.generating_here:
            return False
        try:
            siblings = self.store.siblings(item.message_id)
            index = siblings.index(item.message_id) + step
            if not 0 <= index < len(siblings):
                return False
            messages = [m for m in self.store.switch_branch(siblings[index]) if m.role != "system"]
        except HearthError as exc:
            self.error.emit(str(exc))
            return False
        self.model.truncate(row)
        for message in messages[row:]:
            self.model.append(_item(message))
        return True

    def copy(self, row: int) -> None:
        QGuiApplication.clipboard().setText(self.model.item(row).content)

    def prompt_of(self, row: int) -> PromptView | None:
        """The exact text the model was given for the reply at row, with its template and why."""
        item = self.model.item(row)
        if item.message_id is None or item.role != "assistant":
            return None
        text = self.store.prompt_text(item.message_id) or ""
        try:
            report = retrieval_report(self.store.message(item.message_id).meta)
        except HearthError:
            report = ""
        if report:  # what the documents search found, with scores and ranks, after the prompt itself
            text = f"{text}\n\n──── Retrieved from the attached documents ────\n{report}\n"
        started = self._templates.get(item.message_id)
        if started is not None:
            return PromptView(text, started.template_label, started.template_reason)
        reason = "Chosen when this reply was written; the reason is shown for replies of this session."
        return PromptView(text, item.template or "unknown", reason)

    def source_of(self, row: int, number: int) -> tuple[Source, str] | None:
        """The source [number] of the reply at row and the question it answered (to highlight), or None."""
        from app.core.documents.retrieval import sources_from_meta

        item = self.model.item(row)
        try:
            sources = sources_from_meta(item.sources)
        except (TypeError, ValueError):  # malformed meta from an imported history
            return None
        source = next((s for s in sources if s.number == number), None)
        if source is None:
            return None
        question = ""
        for earlier in range(row - 1, -1, -1):
            if self.model.item(earlier).role == "user":
                question = self.model.item(earlier).content
                break
        return source, question

    # ---- documents ---------------------------------------------------------------------------------------------
    def attach_collection(self, name: str) -> None:
        self._set_documents(self.documents.with_collection(name))

    def attach_file(self, path: str) -> None:
        self._set_documents(self.documents.with_file(path))

    def detach(self, item: str) -> None:
        self._set_documents(self.documents.without(item))

    def _set_documents(self, documents: AttachedDocuments) -> None:
        """Attach or detach: kept with the conversation (or, for a new chat, when it is first saved)."""
        self.documents = documents
        if self.conversation is not None:
            meta = {**self.conversation.meta, "documents": documents.to_meta()}
            self._update(meta=meta)
        self.documents_changed.emit(documents)

    # ---- conversation settings ---------------------------------------------------------------------------------
    def set_system_prompt(self, text: str) -> None:
        self.system_prompt = text
        if self.conversation is not None:
            self._update(system_prompt=text)

    def set_sampling(self, preset: str, sampling: SamplingSettings) -> None:
        self.preset, self.sampling = preset, sampling
        if self.conversation is not None:
            self._update(sampling={"preset": preset, **sampling.to_dict()})

    def set_reply_format(self, reply_format: ReplyFormat) -> None:
        """Text, JSON or JSON matching a schema for this chat's replies (kept in the conversation's meta)."""
        self.setup = _replace(self.setup, reply_format=reply_format)
        if self.conversation is not None:
            self._update(meta={**self.conversation.meta, "reply_format": reply_format.to_dict()})

    def apply_setup(self, setup: ChatSetup) -> None:
        """Give this chat another setup (an assistant chosen in the chat settings): system prompt, template,
        sampling, reply format and load settings all change; messages stay."""
        self.setup = setup
        self.system_prompt, self.preset, self.sampling = setup.system_prompt, setup.preset, setup.sampling
        if self.conversation is not None:
            fields = setup.conversation_fields(self.conversation.meta)
            if setup.assistant is None:
                fields["template"] = self.template_override
            self._update(**fields)
        self.conversation_changed.emit(self.conversation_id)

    def set_tools(self, names: tuple[str, ...]) -> None:
        """Turn tools on for this chat (names of built-in tools and MCP servers; () turns them off)."""
        self.tool_names = tuple(names)
        if self.conversation is not None:
            self._update(meta=self._tool_meta(self.conversation.meta))

    def set_tool_choice(self, choice: str) -> None:
        """ "auto", "required" (the first reply of each turn must call a tool) or the name of the tool to call."""
        self.tool_choice = choice or "auto"
        if self.conversation is not None:
            self._update(meta=self._tool_meta(self.conversation.meta))

    def _conversation_meta(self, meta: dict[str, Any]) -> dict[str, Any]:
        """A new conversation's meta: its setup's, with this chat's tools and attached documents."""
        meta = self._tool_meta(meta)
        if self.documents:
            meta["documents"] = self.documents.to_meta()
        else:
            meta.pop("documents", None)
        return meta

    def _tool_meta(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The conversation's meta with this chat's tool choices in it (other keys kept)."""
        meta = {**meta, TOOLS_META: list(self.tool_names)}
        if self.tool_choice != "auto":
            meta[CHOICE_META] = self.tool_choice
        else:
            meta.pop(CHOICE_META, None)
        return meta

    def _update(self, **changes: object) -> None:
        try:
            self.conversation = self.store.update_conversation(self.conversation_id, **changes)
        except HearthError as exc:
            self.error.emit(str(exc))

    # ---- the conversation list ----------------------------------------------------------------------------------
    def rename(self, conversation_id: int, title: str) -> None:
        try:
            renamed = self.store.rename(conversation_id, title)
        except HearthError as exc:
            self.error.emit(str(exc))
            return
        if conversation_id == self.conversation_id:
            self.conversation = renamed
        self.conversations_changed.emit()

    def pin(self, conversation_id: int, pinned: bool) -> None:
        try:
            self.store.pin(conversation_id, pinned)
        except HearthError as exc:
            self.error.emit(str(exc))
        self.conversations_changed.emit()

    def delete(self, conversation_id: int) -> str | None:
        """Move a chat to the trash (restorable); returns its title for the undo bar (None: it failed)."""
        try:
            title = self.store.conversation(conversation_id).title
            if self._active is not None and self._active.conversation_id == conversation_id:
                self.stop()
            self.store.delete(conversation_id)
        except HearthError as exc:
            self.error.emit(str(exc))
            return None
        if conversation_id == self.conversation_id:
            self.new_chat()
        self.conversations_changed.emit()
        return title

    def restore(self, conversation_id: int) -> None:
        try:
            self.store.restore(conversation_id)
        except HearthError as exc:
            self.error.emit(str(exc))
        self.conversations_changed.emit()

    def search(self, text: str) -> list[SearchHit]:
        try:
            return self.store.search(text)
        except HearthError as exc:
            self.error.emit(str(exc))
            return []


def _item(message: StoredMessage) -> MessageItem:
    """A stored message as a row; a reply that failed shows why (its text so far stays)."""
    item = MessageItem.from_message(message)
    error = message.meta.get("error")
    if message.finish_reason == "error" and isinstance(error, str) and error:
        item.error = f"The reply failed: {error}"
    return item


def _error_text(done: ReplyDone) -> str | None:
    if done.error:
        return f"The reply failed: {done.error}"
    return None
