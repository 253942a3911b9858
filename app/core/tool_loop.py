"""One reply with tools: generate, parse calls, ask the user, run the tools, feed results back, repeat.

The loop knows nothing of Qt, engines or servers. It is given:
- generate(messages, request): the reply pipeline's own generator (the injection point). It renders the
  conversation with request.tools (OpenAI tool definitions; None = show no tools), samples with
  request.grammar(prompt.tool_syntax) (None unless tool_choice forces a call), and yields the
  RenderedPrompt/PreparedPrompt it used first (its tool_syntax tells the loop how to parse the reply), then
  text (str or engine TextChunk), then optionally GenerationStats. runner_generator() builds one over
  ChatRunner; the engine host, the GUI and the local server plug in their own.
- a ToolBox (what may run) and approve(call, spec) -> Approval, called on the loop's thread before every call
  not already allowed ("always" answers are remembered in the ApprovalPolicy for the conversation). The
  callback may block (a dialog, a terminal prompt); when Stop is pressed it must return DENY.
- a threading.Event for Stop: the reply stops at the next chunk, a running tool call is cancelled, calls not
  yet run are answered "not run", and run() returns without leaving anything running.

run() yields events as they happen (text to show, a call starting, each finished assistant message and tool
result) so a GUI worker, the CLI and the server can each show and store them their own way. Every call gets a
result message, so the conversation always stays renderable. tool_choice "required"/a named tool applies to
the first round only (else the model could never answer); later rounds may call tools or answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

from app.core.engine import GenerationStats, TextChunk
from app.core.messages import ChatMessage, ToolCall
from app.core.template_families import GENERIC_TOOL_SYNTAX
from app.core.tool_calls import ParsedReply, ToolCallStream
from app.core.tool_grammar import tool_call_grammar
from app.core.tools import DEFAULT_CALL_TIMEOUT, ToolBox, ToolChoice, ToolResult, ToolSpec

if TYPE_CHECKING:
    from app.core.conversation import ChatRunner
    from app.core.sampling import SamplingSettings
    from app.core.store import Store

DEFAULT_MAX_ROUNDS = 5


class Approval(Enum):
    ONCE = "once"  # run this call
    ALWAYS = "always"  # run it, and every later call of this tool in this conversation
    DENY = "deny"


ApproveFn = Callable[[ToolCall, ToolSpec], Approval]


class ApprovalPolicy:
    """The tools one conversation may run without asking (the user's "always" answers, --allow-tools)."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self._allowed = set(allowed)
        self._lock = threading.Lock()

    def allows(self, name: str) -> bool:
        with self._lock:
            return name in self._allowed

    def allow(self, name: str) -> None:
        with self._lock:
            self._allowed.add(name)

    def names(self) -> list[str]:
        """For conversation meta (so "always" survives a restart), sorted."""
        with self._lock:
            return sorted(self._allowed)


@dataclass(frozen=True)
class RoundRequest:
    """What one generation of the loop asks for: the tools to show, and whether a call is forced."""

    tools: list[dict[str, Any]] | None  # OpenAI tool definitions for the prompt; None: show none
    specs: tuple[ToolSpec, ...]
    tool_choice: ToolChoice
    round: int

    def grammar(self, syntax: str) -> str | None:
        """The GBNF to sample with, for the call syntax of the template that rendered the prompt."""
        return tool_call_grammar(syntax, self.specs, self.tool_choice) if self.tools else None


GenerateFn = Callable[[Sequence[ChatMessage], RoundRequest], Iterable[Any]]


@dataclass(frozen=True)
class LoopSettings:
    max_rounds: int = DEFAULT_MAX_ROUNDS  # generations per reply; calls in the last one are not run
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    tool_choice: ToolChoice = field(default_factory=ToolChoice)


# ---- events -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyText:
    """Prose to show now (never part of a tool call)."""

    text: str
    round: int


@dataclass(frozen=True)
class CallStarting:
    """The model has begun writing a tool call (show "calling a tool…" instead of its text)."""

    round: int


@dataclass(frozen=True)
class AssistantTurn:
    """A finished generation: the assistant message to store (content + tool_calls), with notes on calls that
    were refused (malformed, unknown tool, bad arguments, round limit, Stop)."""

    message: ChatMessage
    notes: tuple[str, ...]
    stats: GenerationStats | None
    prompt: Any  # the RenderedPrompt/PreparedPrompt the generator reported, if any ("show prompt")
    round: int


@dataclass(frozen=True)
class ToolRunning:
    """An approved call is running now."""

    call: ToolCall
    spec: ToolSpec
    round: int


Outcome = Literal["ran", "failed", "denied", "stopped"]


@dataclass(frozen=True)
class ToolTurn:
    """A tool result message to store (role "tool"), and how it came about."""

    message: ChatMessage
    call: ToolCall
    outcome: Outcome
    approval: str  # "once" | "always" | "allowed" (already allowed) | "denied" | "" (not asked)
    round: int


@dataclass(frozen=True)
class LoopFinished:
    reason: Literal["answered", "stopped", "round_limit"]
    messages: tuple[ChatMessage, ...]  # everything this reply added, in order


LoopEvent = ReplyText | CallStarting | AssistantTurn | ToolRunning | ToolTurn | LoopFinished

DENIED_TEXT = "The user did not allow this tool call."
STOPPED_TEXT = "Not run: the user stopped the reply."


class ToolLoop:
    """Runs one reply with tools (see the module docstring). Not reentrant: one run() at a time."""

    def __init__(
        self,
        toolbox: ToolBox,
        generate: GenerateFn,
        approve: ApproveFn,
        *,
        policy: ApprovalPolicy | None = None,
        settings: LoopSettings | None = None,
        stop: threading.Event | None = None,
        syntax: str = GENERIC_TOOL_SYNTAX,
    ) -> None:
        self.toolbox = toolbox
        self.generate = generate
        self.approve = approve
        self.policy = policy or ApprovalPolicy()
        self.settings = settings or LoopSettings()
        self.stop = stop or threading.Event()
        self.syntax = syntax

    def run(self, messages: Sequence[ChatMessage]) -> Iterator[LoopEvent]:
        specs = [] if self.settings.tool_choice.mode == "none" else self.toolbox.specs()
        tools = [spec.to_openai() for spec in specs] or None
        added: list[ChatMessage] = []
        for round_number in range(1, max(1, self.settings.max_rounds) + 1):
            choice = self.settings.tool_choice if round_number == 1 else ToolChoice()
            parsed, stats, prompt = yield from self._generate([*messages, *added], specs, tools, choice, round_number)
            last = round_number >= self.settings.max_rounds
            stopped = self.stop.is_set()
            notes = list(parsed.notes)
            calls = parsed.calls
            if calls and (stopped or last):
                names = ", ".join(call.name for call in calls)
                why = (
                    "the reply was stopped"
                    if stopped
                    else f"the limit of {self.settings.max_rounds} rounds was reached"
                )
                notes.append(f"Tool calls not run ({names}): {why}.")
                calls = ()
            assistant = ChatMessage("assistant", parsed.content, calls)
            added.append(assistant)
            yield AssistantTurn(assistant, tuple(notes), stats, prompt, round_number)
            if not calls:
                reason = "stopped" if stopped else ("round_limit" if last and parsed.calls else "answered")
                yield LoopFinished(reason, tuple(added))
                return
            for call in calls:
                turn = yield from self._run_call(call, round_number)
                added.append(turn.message)
                yield turn
            if self.stop.is_set():
                yield LoopFinished("stopped", tuple(added))
                return
        yield LoopFinished("round_limit", tuple(added))  # max_rounds < 1 never gets here; kept for safety

    def _generate(
        self,
        conversation: list[ChatMessage],
        specs: list[ToolSpec],
        tools: list[dict[str, Any]] | None,
        choice: ToolChoice,
        round_number: int,
    ) -> Generator[LoopEvent, None, tuple[ParsedReply, GenerationStats | None, Any]]:
        """Stream one generation; returns (ParsedReply, stats, prompt) through StopIteration."""
        request = RoundRequest(tools, tuple(specs), choice, round_number)
        stream = iter(self.generate(conversation, request))
        parser: ToolCallStream | None = None
        stats: GenerationStats | None = None
        prompt: Any = None
        announced = False
        try:
            for item in stream:
                if self.stop.is_set():
                    break
                if isinstance(item, GenerationStats):
                    stats = item
                    continue
                syntax = getattr(item, "tool_syntax", None) or getattr(
                    getattr(item, "rendered", None), "tool_syntax", None
                )
                if syntax is not None:  # the prompt the generator rendered: its template's call syntax
                    prompt, self.syntax = item, syntax
                    continue
                text = item.text if isinstance(item, TextChunk) else str(item)
                if parser is None:
                    parser = ToolCallStream(self.syntax, specs if tools else [])
                shown = parser.feed(text)
                if shown:
                    yield ReplyText(shown, round_number)
                if parser.in_call and not announced:
                    announced = True
                    yield CallStarting(round_number)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # a generator left mid-reply: the engine stops and releases its lock
        parsed = parser.finish() if parser is not None else ParsedReply("", ())
        if not tools and parsed.calls:  # no tools shown: nothing can be called
            parsed = ParsedReply(parsed.content, ())
        return parsed, stats, prompt

    def _run_call(self, call: ToolCall, round_number: int) -> Generator[LoopEvent, None, ToolTurn]:
        """Ask (unless allowed), run, and return the ToolTurn through StopIteration."""
        spec = self.toolbox.spec(call.name)
        if self.stop.is_set() or spec is None:
            return self._turn(call, ToolResult(STOPPED_TEXT, True), "stopped", "", round_number)
        if self.policy.allows(call.name):
            approval = "allowed"
        else:
            answer = self.approve(call, spec)
            if self.stop.is_set():
                return self._turn(call, ToolResult(STOPPED_TEXT, True), "stopped", "", round_number)
            if answer is Approval.DENY:
                return self._turn(call, ToolResult(DENIED_TEXT, True), "denied", "denied", round_number)
            if answer is Approval.ALWAYS:
                self.policy.allow(call.name)
            approval = answer.value
        yield ToolRunning(call, spec, round_number)
        result = self.toolbox.call(call, timeout=self.settings.call_timeout, cancel=self.stop)
        if self.stop.is_set() and result.is_error:
            return self._turn(call, ToolResult(STOPPED_TEXT, True), "stopped", approval, round_number)
        return self._turn(call, result, "failed" if result.is_error else "ran", approval, round_number)

    @staticmethod
    def _turn(call: ToolCall, result: ToolResult, outcome: Outcome, approval: str, round_number: int) -> ToolTurn:
        message = ChatMessage("tool", result.text, tool_call_id=call.id, name=call.name)
        return ToolTurn(message, call, outcome, approval, round_number)


# ---- glue for the pipeline, the store and tests -------------------------------------------------------------


def runner_generator(
    runner: ChatRunner,
    sampling: SamplingSettings,
    *,
    override: str | None = None,
    conversation: Any = None,
) -> GenerateFn:
    """A GenerateFn over ChatRunner (template, context trimming, engine): the prompt first, then the reply."""

    def generate(messages: Sequence[ChatMessage], request: RoundRequest) -> Iterator[Any]:
        prepared = runner.prepare(messages, sampling, override=override, conversation=conversation, tools=request.tools)
        yield prepared
        yield from runner.stream(
            messages,
            sampling,
            override=override,
            grammar=request.grammar(prepared.rendered.tool_syntax),
            conversation=conversation,
            prepared=prepared,
            tools=request.tools,
        )

    return generate


def stored_meta(message: ChatMessage, notes: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    """A message's tool fields as the store keeps them in meta (StoredMessage.to_chat() reads them back)."""
    meta: dict[str, Any] = {}
    if message.tool_calls:
        meta["tool_calls"] = [call.to_openai() for call in message.tool_calls]
    if message.role == "tool":
        meta["tool_call_id"] = message.tool_call_id
        meta["name"] = message.name
    if notes:
        meta["tool_notes"] = list(notes)
    meta.update({k: v for k, v in extra.items() if v not in (None, "")})
    return meta


class StoreRecorder:
    """Saves a loop's finished messages into a conversation, in order (call it with every event)."""

    def __init__(self, store: Store, conversation_id: int, *, model: str = "", template: str = "") -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.model = model
        self.template = template
        self.message_ids: list[int] = []

    def __call__(self, event: LoopEvent) -> None:
        if isinstance(event, AssistantTurn):
            columns: dict[str, Any] = {"model": self.model, "template": self.template}
            if event.stats is not None:
                stats = event.stats
                columns.update(
                    prompt_tokens=stats.prompt_tokens,
                    generated_tokens=stats.generated_tokens,
                    gen_tps=stats.gen_tps,
                    ttft_ms=stats.ttft_ms,
                    finish_reason=stats.finish_reason,
                )
            prompt = getattr(getattr(event.prompt, "rendered", event.prompt), "text", None)
            if prompt is not None:
                columns["prompt_text"] = prompt
            meta = stored_meta(event.message, event.notes)
            stored = self.store.add_message(
                self.conversation_id, "assistant", event.message.content, meta=meta, **columns
            )
            self.message_ids.append(stored.id)
        elif isinstance(event, ToolTurn):
            meta = stored_meta(event.message, outcome=event.outcome, approval=event.approval)
            stored = self.store.add_message(self.conversation_id, "tool", event.message.content, meta=meta)
            self.message_ids.append(stored.id)
