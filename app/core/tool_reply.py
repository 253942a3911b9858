"""One reply with tools through the engine host: the path `hearth chat` and the app share.

The tool loop (app/core/tool_loop.py) asks for one generation per round; here each round is a ReplyRequest
to the host with the tools shown (ReplyRequest.tools / tool_choice: the local backend renders them in the
model's template and, when a call is forced, samples with the call grammar of that template's syntax). The
host saves each round's reply as it streams, like any reply; when a round ends, its stored message is
completed with the loop's verdict (the prose without the calls, "tool_calls" and notes in meta), and each
tool result is stored after it (role "tool", "tool_call_id" and "name" in meta), so reopening, branches,
regenerate and `history export` see the whole exchange.

Threading: run() iterates on one thread (a GUI worker, the CLI's main thread), which blocks in the host's
job queue and in the approval callback; stop() may be called from any other thread (Stop, Ctrl-C).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.core.errors import GenerationError
from app.core.messages import ChatMessage
from app.core.reply import ReplyChunk, ReplyDone, ReplyRequest, ReplyStarted
from app.core.sampling import SamplingSettings
from app.core.template_families import GENERIC_TOOL_SYNTAX
from app.core.tool_loop import (
    ApprovalPolicy,
    ApproveFn,
    AssistantTurn,
    LoopEvent,
    LoopSettings,
    RoundRequest,
    ToolLoop,
    ToolTurn,
    stored_meta,
)
from app.core.tools import ToolBox, openai_tool_choice

if TYPE_CHECKING:
    from collections.abc import Callable

    from app.core.engine import GenerationStats
    from app.core.host import HostClient, Job
    from app.core.store import Store

log = logging.getLogger("hearth.tools")

CANCEL_WAIT_S = 30.0  # a cancelled round ends within a token; this only guards against a stuck host
ALLOWED_META = "tools_allowed"  # conversation meta: the tools the user answered "always" for


@dataclass(frozen=True)
class RoundPrompt:
    """What a round's generation reports first (the loop keeps it as AssistantTurn.prompt): the host's
    ReplyStarted (template, prompt text, the stored reply's id) and the call syntax to parse the reply with."""

    started: ReplyStarted
    tool_syntax: str

    @property
    def text(self) -> str:
        return self.started.prompt_text

    @property
    def message_id(self) -> int | None:
        return self.started.message_id


class HostToolReply:
    """Runs one reply with tools on a host client, storing every turn when conversation_id is given.

    store: a connection owned by the thread that iterates run() (needed with a conversation_id).
    on_round(RoundPrompt): called on that thread when a round's prompt is ready (the GUI learns the id of
    the reply being written). After run(): `stats` is the last round's GenerationStats (None if no round
    started), `last_id` the id of the last stored message.
    """

    def __init__(
        self,
        client: HostClient,
        toolbox: ToolBox,
        approve: ApproveFn,
        *,
        sampling: SamplingSettings | None = None,
        template_override: str | None = None,
        conversation_id: int | None = None,
        parent_id: int | str | None = "leaf",
        key: Hashable = None,
        store: Store | None = None,
        meta: dict[str, Any] | None = None,
        policy: ApprovalPolicy | None = None,
        settings: LoopSettings | None = None,
        on_round: Callable[[RoundPrompt], None] | None = None,
    ) -> None:
        if conversation_id is not None and store is None:
            raise ValueError("a stored reply with tools needs a store to add the tool results to")
        self.client = client
        self.toolbox = toolbox
        self.approve = approve
        self.sampling = sampling or SamplingSettings()
        self.template_override = template_override
        self.conversation_id = conversation_id
        self.parent_id = parent_id  # each round answers the last stored message
        self.key = key
        self.store = store if conversation_id is not None else None
        self.meta = dict(meta or {})
        self.policy = policy or ApprovalPolicy()
        self.settings = settings or LoopSettings()
        self.on_round = on_round
        self.stop_event = threading.Event()
        self.stats: GenerationStats | None = None
        self.last_id: int | None = None
        self._job: Job | None = None
        self._done: ReplyDone | None = None

    def stop(self) -> None:
        """End the reply now (any thread): the round being written stops within a token, a running tool call
        is cancelled, an approval being asked is answered "deny" by the asker (it watches stop_event)."""
        self.stop_event.set()
        job = self._job
        if job is not None:
            job.cancel()

    def run(self, messages: Sequence[ChatMessage]) -> Iterator[LoopEvent]:
        """The loop's events, each already stored when it is yielded (see ToolLoop.run)."""
        loop = ToolLoop(
            self.toolbox,
            self._generate,
            self.approve,
            policy=self.policy,
            settings=self.settings,
            stop=self.stop_event,
        )
        events = loop.run(messages)
        try:
            for event in events:
                self._record(event)
                yield event
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # a consumer that stops early: the round in progress is cancelled and waited for

    # ---- one round ------------------------------------------------------------------------------------------
    def _generate(self, messages: Sequence[ChatMessage], request: RoundRequest) -> Iterator[Any]:
        tools = tuple(request.tools or ())
        job = self.client.reply(
            ReplyRequest(
                tuple(messages),
                self.sampling,
                template_override=self.template_override,
                conversation_id=self.conversation_id,
                parent_id=self.parent_id,
                key=self.key,
                meta=self.meta,
                tools=tools,
                tool_choice=openai_tool_choice(request.tool_choice) if tools else None,
            )
        )
        self._job, self._done = job, None
        if self.stop_event.is_set():
            job.cancel()
        try:
            for event in job.events():
                if isinstance(event, ReplyStarted):
                    prompt = RoundPrompt(event, event.tool_syntax or GENERIC_TOOL_SYNTAX)
                    if self.on_round is not None:
                        self.on_round(prompt)
                    yield prompt
                elif isinstance(event, ReplyChunk):
                    yield event.text
                elif isinstance(event, ReplyDone):
                    self._done = event
                    if event.stats is None:
                        raise GenerationError(event.error or "the reply could not start")
                    self.stats = event.stats
                    yield event.stats
        finally:
            if not job.done.is_set():  # the loop left early (Stop): the host must finish writing this round
                job.cancel()  # before the loop completes the stored turn
                try:
                    done = job.wait(CANCEL_WAIT_S)
                except TimeoutError:
                    log.error("a cancelled reply did not end within %.0f s", CANCEL_WAIT_S)
                else:
                    if isinstance(done, ReplyDone):
                        self._done = done
                        self.stats = done.stats or self.stats
            self._job = None

    # ---- the history ----------------------------------------------------------------------------------------
    def _record(self, event: LoopEvent) -> None:
        store, conversation_id = self.store, self.conversation_id
        if store is None or conversation_id is None:
            return
        if isinstance(event, AssistantTurn):
            message_id = event.prompt.message_id if isinstance(event.prompt, RoundPrompt) else None
            if message_id is None:
                return
            from app.core.store import ReplyStats, ReplyWriter

            stats = self._done.stats if self._done is not None else None
            writer = ReplyWriter(store, message_id)
            writer.finish(
                ReplyStats(
                    stats.finish_reason if stats else "cancelled",
                    stats.prompt_tokens if stats else None,
                    stats.generated_tokens if stats else None,
                    stats.gen_tps if stats else None,
                    stats.ttft_ms if stats else None,
                ),
                stored_meta(event.message, event.notes),
                content=event.message.content,
            )
            self.parent_id = self.last_id = message_id
        elif isinstance(event, ToolTurn):
            meta = stored_meta(event.message, outcome=event.outcome, approval=event.approval)
            stored = store.add_message(
                conversation_id, "tool", event.message.content, parent_id=self.parent_id, meta=meta
            )
            self.parent_id = self.last_id = stored.id
            if event.approval == "always":
                remember_allowed(store, conversation_id, self.policy.names())


def remember_allowed(store: Store, conversation_id: int, names: Sequence[str]) -> None:
    """Keep a conversation's "always allow" answers in its meta, so they hold after a restart."""
    conversation = store.conversation(conversation_id)
    store.update_conversation(conversation_id, meta={**conversation.meta, ALLOWED_META: sorted(names)})


def allowed_in(meta: dict[str, Any]) -> list[str]:
    """The tools a conversation's meta says the user always allows."""
    names = meta.get(ALLOWED_META)
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []
