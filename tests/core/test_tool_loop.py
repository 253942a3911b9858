"""The tool loop end to end: the real gemma-3-270m forced by the grammar to call real MCP servers' tools, the
approval answered by the test, results fed back, the exchange stored and exported; denial, Stop and a
crashing server leave nothing running.

A few policy tests (round limit, malformed calls, "always") script the model's text instead of sampling it,
so each rule is checked exactly; everything else in them (tools, servers, parser, approval) is real.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from app.cli import run
from app.core.builtin_tools import builtin_tools
from app.core.conversation import ChatRunner
from app.core.engine import GenerationStats
from app.core.llama_engine import LlamaCppEngine
from app.core.load_config import LoadConfig
from app.core.mcp_client import McpHub, McpServerConfig
from app.core.messages import ChatMessage, ToolCall
from app.core.paths import AppPaths
from app.core.sampling import SamplingSettings
from app.core.store import Store
from app.core.tool_loop import (
    DENIED_TEXT,
    STOPPED_TEXT,
    Approval,
    ApprovalPolicy,
    AssistantTurn,
    CallStarting,
    LoopFinished,
    LoopSettings,
    ReplyText,
    RoundRequest,
    StoreRecorder,
    ToolLoop,
    ToolRunning,
    ToolTurn,
    runner_generator,
)
from app.core.tools import ToolBox, ToolChoice
from tests.conftest import MCP_TEST_SERVER

PY = sys.executable


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def assert_none_left(before: set[int], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    alive = children() - before
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {p for p in children() - before if psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
    assert not alive, f"processes left running: {alive}"


class Approvals:
    """The user's answers, recorded: the test answers every approval request with `answer`."""

    def __init__(self, answer: Approval, then: Callable[[], None] | None = None) -> None:
        self.answer = answer
        self.asked: list[tuple[str, dict]] = []
        self.then = then

    def __call__(self, call, spec):
        self.asked.append((call.name, call.arguments_dict()))
        if self.then:
            self.then()
        return self.answer


# ---- the real model, forced by the grammar ------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_runner(gemma_path) -> Iterator[ChatRunner]:
    engine = LlamaCppEngine()
    engine.load(gemma_path, LoadConfig(n_ctx=2048))
    try:
        yield ChatRunner(engine)
    finally:
        engine.unload()


GREEDY = SamplingSettings(temperature=0.0, max_tokens=40, seed=1)


def forced_loop(runner, box, approve, tool, *, stop=None, max_rounds=2, policy=None) -> ToolLoop:
    settings = LoopSettings(max_rounds=max_rounds, tool_choice=ToolChoice("named", tool), call_timeout=30)
    return ToolLoop(box, runner_generator(runner, GREEDY), approve, settings=settings, stop=stop, policy=policy)


@pytest.mark.slow
def test_forced_call_to_mcp_server_time_runs_is_fed_back_stored_and_exported(gemma_runner, capsys):
    before = children()
    hub = McpHub([McpServerConfig("time", PY, ("-m", "mcp_server_time", "--local-timezone", "Asia/Tokyo"))])
    store = Store.open(AppPaths.default().ensure().history_db)
    try:
        box = ToolBox(mcp=hub)
        approvals = Approvals(Approval.ONCE)
        conversation = store.create_conversation(model_path="gemma-3-270m", template="gemma")
        question = ChatMessage("user", "What time is it in Tokyo right now?")
        store.add_message(conversation.id, "user", question.content)
        recorder = StoreRecorder(store, conversation.id, model="gemma-3-270m", template="gemma")
        events = []
        for event in forced_loop(gemma_runner, box, approvals, "get_current_time").run([question]):
            recorder(event)
            events.append(event)
    finally:
        hub.close()
    assert_none_left(before)

    turns = [e for e in events if isinstance(e, AssistantTurn)]
    first = turns[0].message
    assert [c.name for c in first.tool_calls] == ["get_current_time"]
    arguments = first.tool_calls[0].arguments_dict()
    assert isinstance(arguments["timezone"], str)
    assert approvals.asked == [("get_current_time", arguments)]  # asked once, with exactly these arguments
    assert isinstance(turns[0].stats, GenerationStats) and turns[0].prompt.rendered.tool_syntax == "hermes"
    assert "<tools>" in turns[0].prompt.rendered.text  # gemma has no tool syntax: the generic prompt
    tool_turns = [e for e in events if isinstance(e, ToolTurn)]
    assert len(tool_turns) == 1 and tool_turns[0].approval == "once"
    result = tool_turns[0].message
    assert result.tool_call_id == first.tool_calls[0].id and result.name == "get_current_time"
    if tool_turns[0].outcome == "ran":
        assert '"timezone"' in result.content and '"datetime"' in result.content
    else:  # the model may invent a zone name; the server's refusal is fed back just the same
        assert tool_turns[0].outcome == "failed" and result.content.startswith("Error:")
    # The result went back to the model: the second round's prompt holds it.
    assert len(turns) == 2
    assert f"<tool_response>\n{result.content}\n</tool_response>" in turns[1].prompt.rendered.text
    assert isinstance(events[-1], LoopFinished) and events[-1].reason in ("answered", "round_limit")
    assert [m.role for m in events[-1].messages] == ["assistant", "tool", "assistant"]

    stored = store.messages(conversation.id)
    assert [m.role for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1].meta["tool_calls"] == [first.tool_calls[0].to_openai()]
    assert stored[1].prompt_tokens and stored[1].finish_reason == "stop"
    assert stored[2].meta["tool_call_id"] == first.tool_calls[0].id and stored[2].meta["name"] == "get_current_time"
    assert stored[2].to_chat() == result and stored[1].to_chat() == first
    store.close()

    assert run(["history", "export", str(conversation.id), "--format", "json"]) == 0
    exported = json.loads(capsys.readouterr().out)["conversations"][0]["messages"]
    assert [m["role"] for m in exported] == ["user", "assistant", "tool", "assistant"]
    assert exported[1]["meta"]["tool_calls"][0]["function"]["name"] == "get_current_time"
    assert exported[2]["meta"]["tool_call_id"] == first.tool_calls[0].id
    assert exported[2]["content"] == result.content
    assert run(["history", "export", str(conversation.id), "--format", "md"]) == 0
    markdown = capsys.readouterr().out
    assert "**Tool result (get_current_time):**" in markdown and "*Called `get_current_time` with `" in markdown


@pytest.mark.slow
def test_denied_call_never_runs_and_the_model_is_told(gemma_runner, npm_everything_server):
    before = children()
    command, *args = npm_everything_server
    hub = McpHub([McpServerConfig("everything", command, tuple(args))])
    try:
        approvals = Approvals(Approval.DENY)
        events = list(
            forced_loop(gemma_runner, ToolBox(mcp=hub), approvals, "get-sum").run(
                [ChatMessage("user", "What is 2 + 3?")]
            )
        )
    finally:
        hub.close()
    assert_none_left(before)
    assert [name for name, _ in approvals.asked] == ["get-sum"]
    assert not [e for e in events if isinstance(e, ToolRunning)]  # nothing ran
    (turn,) = [e for e in events if isinstance(e, ToolTurn)]
    assert turn.outcome == "denied" and turn.message.content == DENIED_TEXT
    second = [e for e in events if isinstance(e, AssistantTurn)][1]
    assert DENIED_TEXT in second.prompt.rendered.text


@pytest.mark.slow
def test_stop_during_a_tool_call_ends_the_loop_and_leaves_nothing_running(gemma_runner):
    before = children()
    hub = McpHub([McpServerConfig("test", PY, (str(MCP_TEST_SERVER), "stdio", "--grandchild"))])
    stop = threading.Event()
    stopped_at: list[float] = []

    def press_stop_soon() -> None:
        def press() -> None:
            stopped_at.append(time.monotonic())
            stop.set()

        threading.Timer(0.5, press).start()

    try:
        loop = forced_loop(
            gemma_runner, ToolBox(mcp=hub), Approvals(Approval.ONCE, press_stop_soon), "stall", stop=stop
        )
        events = list(loop.run([ChatMessage("user", "Please stall.")]))
        ended = time.monotonic()
    finally:
        hub.close()
    assert_none_left(before)
    assert ended - stopped_at[0] < 3  # the minute-long call was abandoned at once
    assert [type(e) for e in events][-3:] == [ToolRunning, ToolTurn, LoopFinished]
    assert events[-2].outcome == "stopped" and events[-2].message.content == STOPPED_TEXT
    assert events[-1].reason == "stopped"
    assert len([e for e in events if isinstance(e, AssistantTurn)]) == 1  # no second round after Stop


@pytest.mark.slow
def test_stop_while_the_model_writes_releases_the_engine(gemma_runner):
    stop = threading.Event()
    policy = ApprovalPolicy()
    box = ToolBox(builtin_tools(["current_time"]))
    loop = forced_loop(gemma_runner, box, Approvals(Approval.ALWAYS), "current_time", stop=stop, policy=policy)
    events = []
    for event in loop.run([ChatMessage("user", "What time is it?")]):
        events.append(event)
        if isinstance(event, ReplyText | CallStarting) and event.round == 2:
            stop.set()  # Stop pressed while the second reply streams
    assert policy.names() == ["current_time"]  # "always" remembered for this conversation
    assert events[-1] == LoopFinished("stopped", events[-1].messages) and events[-1].reason == "stopped"
    # The engine was left mid-reply and is free again: a new reply runs at once.
    again = list(gemma_runner.stream([ChatMessage("user", "Hi")], SamplingSettings(max_tokens=2, seed=1)))
    assert isinstance(again[-1], GenerationStats) and again[-1].error is None


@pytest.mark.slow
def test_a_server_that_crashes_mid_call_gives_an_error_and_the_chat_goes_on(gemma_runner):
    before = children()
    hub = McpHub([McpServerConfig("crashy", PY, (str(MCP_TEST_SERVER),))])
    try:
        events = list(
            forced_loop(gemma_runner, ToolBox(mcp=hub), Approvals(Approval.ONCE), "crash").run(
                [ChatMessage("user", "Crash, please.")]
            )
        )
    finally:
        hub.close()
    assert_none_left(before)
    (turn,) = [e for e in events if isinstance(e, ToolTurn)]
    assert turn.outcome == "failed" and "'crashy' stopped working" in turn.message.content
    assert "crash tool called" in turn.message.content  # the server's own last words
    assert len([e for e in events if isinstance(e, AssistantTurn)]) == 2  # the model got the error and answered
    assert events[-1].reason in ("answered", "round_limit")


# ---- the loop's rules, with the model's text scripted ---------------------------------------------------------


def scripted(*replies: str):
    """A GenerateFn that answers each round with the next reply (and records what it was asked)."""
    requests: list[RoundRequest] = []
    conversations: list[list[ChatMessage]] = []

    def generate(messages, request):
        requests.append(request)
        conversations.append(list(messages))
        reply = replies[len(requests) - 1]
        for start in range(0, len(reply), 3):  # streamed in small pieces, as an engine does
            yield reply[start : start + 3]

    generate.requests = requests
    generate.conversations = conversations
    return generate


CALC = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call>'


def test_rounds_run_calls_and_end_with_the_answer():
    generate = scripted(CALC, "It is 42.")
    approvals = Approvals(Approval.ALWAYS)
    policy = ApprovalPolicy()
    loop = ToolLoop(ToolBox(builtin_tools(["calculator"])), generate, approvals, policy=policy)
    events = list(loop.run([ChatMessage("user", "6*7?")]))
    kinds = [type(e).__name__ for e in events]
    kinds = [k for i, k in enumerate(kinds) if not (k == "ReplyText" and kinds[i - 1] == "ReplyText")]
    assert kinds == [
        "CallStarting",
        "AssistantTurn",
        "ToolRunning",
        "ToolTurn",
        "ReplyText",
        "AssistantTurn",
        "LoopFinished",
    ]
    assert events[3].message.content == "42" and events[3].approval == "always"
    assert "".join(e.text for e in events if isinstance(e, ReplyText)) == "It is 42."
    assert events[-1].reason == "answered" and events[-1].messages[-1] == ChatMessage("assistant", "It is 42.")
    assert generate.conversations[1][-1] == events[3].message  # the result is in the second round's input
    assert generate.requests[0].tools[0]["function"]["name"] == "calculator"
    assert generate.requests[0].grammar("hermes") is None  # "auto": nothing forced
    # "always": the next reply in this conversation does not ask again.
    events = list(
        ToolLoop(ToolBox(builtin_tools(["calculator"])), scripted(CALC, "42."), approvals, policy=policy).run(
            [ChatMessage("user", "again")]
        )
    )
    assert len(approvals.asked) == 1 and next(e for e in events if isinstance(e, ToolTurn)).approval == "allowed"


def test_the_round_limit_stops_calling_tools():
    generate = scripted(CALC, CALC)
    events = list(
        ToolLoop(
            ToolBox(builtin_tools(["calculator"])),
            generate,
            Approvals(Approval.ONCE),
            settings=LoopSettings(max_rounds=2),
        ).run([ChatMessage("user", "loop")])
    )
    last = [e for e in events if isinstance(e, AssistantTurn)][-1]
    assert last.message.tool_calls == () and "limit of 2 rounds" in last.notes[0]
    assert events[-1].reason == "round_limit" and len([e for e in events if isinstance(e, ToolTurn)]) == 1


def test_malformed_and_unknown_calls_are_never_run():
    generate = scripted(
        '<tool_call>{"name": "calculator", "arguments": {"expression": 7}}</tool_call>\n'
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'
    )
    approvals = Approvals(Approval.ONCE)
    events = list(ToolLoop(ToolBox(builtin_tools(["calculator"])), generate, approvals).run([ChatMessage("user", "x")]))
    assert approvals.asked == [] and not [e for e in events if isinstance(e, ToolRunning | ToolTurn)]
    (turn,) = [e for e in events if isinstance(e, AssistantTurn)]
    assert turn.message.tool_calls == () and '"rm_rf"' in turn.message.content
    assert "7 is not of type 'string'" in turn.notes[0] and "unknown tool 'rm_rf'" in turn.notes[1]
    assert events[-1].reason == "answered"


def test_required_tool_choice_forces_the_first_round_only():
    generate = scripted(CALC, "Done.")
    settings = LoopSettings(tool_choice=ToolChoice("required"))
    list(
        ToolLoop(
            ToolBox(builtin_tools(["calculator", "current_time"])),
            generate,
            Approvals(Approval.ONCE),
            settings=settings,
        ).run([ChatMessage("user", "x")])
    )
    first, second = generate.requests
    grammar = first.grammar("hermes")
    assert grammar.startswith('root ::= "<tool_call>\\n" tool-call "\\n</tool_call>"')
    assert '"\\"calculator\\""' in grammar and '"\\"current_time\\""' in grammar
    assert second.grammar("hermes") is None


def test_tool_choice_none_shows_no_tools_and_runs_nothing():
    generate = scripted(CALC)
    events = list(
        ToolLoop(
            ToolBox(builtin_tools(["calculator"])),
            generate,
            Approvals(Approval.ONCE),
            settings=LoopSettings(tool_choice=ToolChoice("none")),
        ).run([ChatMessage("user", "x")])
    )
    assert generate.requests[0].tools is None
    assert [type(e).__name__ for e in events][-2:] == ["AssistantTurn", "LoopFinished"]
    assert not [e for e in events if isinstance(e, ToolTurn)]


def test_chat_runner_renders_tools_and_answers_tool_results(tiny_model):
    """ChatRunner (context trimming, template, engine) takes tools and may continue after tool results."""
    engine = LlamaCppEngine()
    engine.load(tiny_model, LoadConfig(n_ctx=1024))
    try:
        runner = ChatRunner(engine)
        tools = [spec.to_openai() for spec, _ in builtin_tools(["calculator"])]
        call = ToolCall("abc123XYZ", "calculator", '{"expression": "6*7"}')
        messages = [
            ChatMessage("user", "6*7?"),
            ChatMessage("assistant", "", (call,)),
            ChatMessage("tool", "42", tool_call_id="abc123XYZ", name="calculator"),
        ]
        prepared = runner.prepare(messages, SamplingSettings(max_tokens=4), tools=tools)
        assert prepared.rendered.tool_syntax == "hermes"  # the tiny model has no template: ChatML + generic
        assert '"name": "calculator"' in prepared.rendered.text and "<tool_response>\n42\n</tool_response>" in (
            prepared.rendered.text
        )
        events = list(runner.stream(messages, SamplingSettings(max_tokens=4, seed=1), tools=tools))
        assert isinstance(events[-1], GenerationStats) and events[-1].error is None
    finally:
        engine.unload()


def test_a_streamed_reply_is_finished_with_its_final_content_and_tool_meta():
    """The GUI streams prose into a ReplyWriter; the finished turn's content (calls taken out) replaces it."""
    from app.core.store import ReplyStats
    from app.core.tool_loop import stored_meta

    store = Store.open(AppPaths.default().ensure().history_db)
    conversation = store.create_conversation()
    store.add_message(conversation.id, "user", "6*7?")
    writer = store.start_reply(conversation.id)
    loop = ToolLoop(
        ToolBox(builtin_tools(["calculator"])), scripted("Let me compute.\n" + CALC, "42."), Approvals(Approval.ONCE)
    )
    for event in loop.run([ChatMessage("user", "6*7?")]):
        if isinstance(event, ReplyText) and event.round == 1:
            writer.append(event.text)
        elif isinstance(event, AssistantTurn) and event.round == 1:
            assert writer.text == "Let me compute.\n"
            stored = writer.finish(
                ReplyStats("stop"), stored_meta(event.message, event.notes), content=event.message.content
            )
    assert stored.content == "Let me compute." and stored.to_chat().tool_calls[0].name == "calculator"
    store.close()
