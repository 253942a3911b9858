"""One reply from request to history, the same for every client and backend: what is asked, the events
clients see, and the recorder that saves the reply as it streams.

The engine host (app/core/host.py) prepares the prompt through a backend (app/core/backends.py), then feeds
the backend's stream into a ReplyRecorder, which writes the reply to the history (when asked to) and
publishes ReplyStarted / ReplyChunk / ReplyDone to the client that asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from app.core.errors import HearthError
from app.core.messages import ChatMessage
from app.core.sampling import SamplingSettings

if TYPE_CHECKING:
    from app.core.engine import GenerationStats
    from app.core.store import ReplyWriter, Store

log = logging.getLogger("hearth.engine")


@dataclass(frozen=True)
class ReplyRequest:
    """A reply to a conversation: its messages (ending with the user's), how to sample, where to save.

    conversation_id None: not saved (API calls unless the user asks, benchmarks). key: whose cached tokens
    the prompt continues (default: the conversation). backend: None for the local model, else the name of
    a registered backend (a remote server). meta: extras stored with the reply (reply format, assistant).
    """

    messages: tuple[ChatMessage, ...]
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    template_override: str | None = None
    grammar: str | None = None  # GBNF: JSON mode, a JSON schema, a tool call
    stop: tuple[str, ...] = ()  # more stop strings (the API's "stop")
    conversation_id: int | None = None
    parent_id: int | str | None = "leaf"  # the user message answered ("leaf": the end of the active path)
    key: Hashable = None
    backend: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    response_format: dict[str, Any] | None = None  # OpenAI's shape, for backends that take it as such

    @property
    def cache_key(self) -> Hashable:
        if self.key is not None:
            return self.key
        return ("conversation", self.conversation_id) if self.conversation_id is not None else None


@dataclass(frozen=True)
class PreparedReply:
    """The exact input a backend will send for a reply, and how it was chosen ("show prompt").

    prompt_text: the rendered prompt (local), or the JSON request body (a remote server, which applies its
    own template). payload: what the backend needs to start (a PromptRequest locally, the body remotely)."""

    prompt_text: str
    template: str
    template_label: str
    template_reason: str
    template_warning: str | None
    dropped: int  # oldest messages left out to fit the context
    prompt_tokens: int  # 0 when the backend cannot count them before sending
    model_name: str  # stored as the reply's model
    payload: Any = None
    load_settings: dict[str, Any] = field(default_factory=dict)  # how the model was loaded (stored with it)
    key: Hashable = None  # whose cached tokens the prompt continues


# ---- events ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyStarted:
    job_id: int
    conversation_id: int | None
    message_id: int | None  # the reply's row in the history (None when not saved)
    template: str
    template_label: str
    template_reason: str
    template_warning: str | None
    dropped: int
    prompt_tokens: int
    prompt_text: str


@dataclass(frozen=True)
class ReplyChunk:
    job_id: int
    text: str


@dataclass(frozen=True)
class ReplyDone:
    """The last event of a reply job. stats is None when the reply never started (no model, too long ...)."""

    job_id: int
    conversation_id: int | None
    message_id: int | None
    stats: GenerationStats | None
    error: str | None
    context_used: int = 0
    text: str = ""


Publish = Callable[[object], None]


class ReplyRecorder:
    """Saves one reply as it streams (when it belongs to a conversation) and publishes its events.

    Runs on the thread that drives the backend; store is that thread's own connection."""

    def __init__(self, job_id: int, request: ReplyRequest, store: Store | None, publish: Publish) -> None:
        self.job_id = job_id
        self.request = request
        self.store = store if request.conversation_id is not None else None
        self.publish = publish
        self.writer: ReplyWriter | None = None
        self.prepared: PreparedReply | None = None
        self.parts: list[str] = []

    @property
    def message_id(self) -> int | None:
        return self.writer.message_id if self.writer is not None else None

    def start(self, prepared: PreparedReply) -> None:
        """The prompt is ready: create the (incomplete) reply in the history and tell the client."""
        self.prepared = prepared
        request = self.request
        if self.store is not None and request.conversation_id is not None:
            meta = {
                "sampling": request.sampling.to_dict(),
                "load": prepared.load_settings,
                "backend": request.backend or "local",
                **request.meta,
            }
            self.writer = self.store.start_reply(
                request.conversation_id,
                parent_id=request.parent_id,
                model=prepared.model_name,
                template=prepared.template,
                prompt_text=prepared.prompt_text,
                meta=meta,
            )
        self.publish(
            ReplyStarted(
                self.job_id,
                request.conversation_id,
                self.message_id,
                prepared.template,
                prepared.template_label,
                prepared.template_reason,
                prepared.template_warning,
                prepared.dropped,
                prepared.prompt_tokens,
                prepared.prompt_text,
            )
        )

    def chunk(self, text: str) -> None:
        self.parts.append(text)
        if self.writer is not None:
            self.writer.append(text)
        self.publish(ReplyChunk(self.job_id, text))

    def finish(self, stats: GenerationStats | None, error: str | None = None, context_used: int = 0) -> ReplyDone:
        """Write the whole reply with its statistics (also when stopped or failed: what was written stays)."""
        if stats is not None and self.prepared is not None:
            stats = replace(stats, dropped_messages=self.prepared.dropped)
        error = error or (stats.error if stats is not None else None)
        if self.writer is not None:
            from app.core.store import ReplyStats

            try:
                extra: dict[str, Any] = {}
                if stats is not None and stats.seed is not None:
                    extra["sampling"] = {**self.request.sampling.to_dict(), "seed": stats.seed}
                if error:
                    extra["error"] = error
                reason = stats.finish_reason if stats is not None else "error"
                self.writer.finish(
                    ReplyStats(
                        reason,
                        stats.prompt_tokens if stats else None,
                        stats.generated_tokens if stats else None,
                        stats.gen_tps if stats else None,
                        stats.ttft_ms if stats else None,
                    ),
                    meta=extra,
                )
            except HearthError as exc:  # the disk is full: the client hears of it, the text it has stays
                log.error("could not save the reply: %s", exc)
                error = error or str(exc)
        done = ReplyDone(
            self.job_id,
            self.request.conversation_id,
            self.message_id,
            stats,
            error,
            context_used,
            "".join(self.parts),
        )
        self.publish(done)
        return done


def create_conversation(
    store: Store,
    *,
    model_path: str,
    load_settings: dict[str, Any],
    system_prompt: str = "",
    template_override: str = "",
    preset: str = "",
    sampling: SamplingSettings | None = None,
    meta: dict[str, Any] | None = None,
) -> int:
    """A new conversation, stored with the same fields whichever client starts it (the app or the CLI)."""
    values = (sampling or SamplingSettings()).to_dict()
    conversation = store.create_conversation(
        model_path=model_path,
        template=template_override,
        system_prompt=system_prompt,
        sampling={"preset": preset, **values} if preset else values,
        load_settings=load_settings,
        meta=meta,
    )
    return conversation.id
