"""Replies with tools through the engine host (the path the app and `hearth chat` share): ReplyRequest.tools
rendered and forced by the grammar, each round saved as it streams and completed with its calls, tool results
stored after them, Stop, "always" remembered, and the history's branches and export.

The gemma-3-270m tests use the real model forced by the grammar (llama.cpp's grammar sampler cannot work with
the tiny test models' random vocabularies); the tiny model checks the plumbing without a forced call.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from app.cli import run
from app.core.builtin_tools import builtin_tools
from app.core.errors import GenerationError
from app.core.host import EngineHost, LoadDone, wait_for_text
from app.core.load_config import LoadConfig
from app.core.mcp_client import McpHub, McpServerConfig
from app.core.messages import ChatMessage, ToolCall
from app.core.reply import ReplyRequest, ReplyStarted
from app.core.sampling import SamplingSettings
from app.core.store import Store
from app.core.tool_loop import (
    DENIED_TEXT,
    STOPPED_TEXT,
    Approval,
    ApprovalPolicy,
    AssistantTurn,
    LoopFinished,
    LoopSettings,
    ToolRunning,
    ToolTurn,
)
from app.core.tool_reply import HostToolReply, RoundPrompt, allowed_in
from app.core.tools import ToolBox, ToolChoice
from tests.conftest import MCP_TEST_SERVER
from tests.core.test_tool_loop import Approvals, assert_none_left, children

PY = sys.executable
GREEDY = SamplingSettings(temperature=0.0, max_tokens=40, seed=1)
CALCULATOR = [spec.to_openai() for spec, _ in builtin_tools(["calculator"])]
CALL = ToolCall("abcdefghi", "calculator", '{"expression": "6*7"}')
ENDLESS = ((1, -100.0), (106, -100.0))  # gemma's <eos> and <end_of_turn> banned: a reply runs until stopped


@pytest.fixture
def history(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite3"


def started_host(history: Path, model: Path) -> EngineHost:
    host = EngineHost(store_path=history)
    done = host.client("loader").load(model, LoadConfig(n_ctx=2048, n_threads=2)).wait(120)
    assert isinstance(done, LoadDone) and done.error is None, done
    return host


@pytest.fixture(scope="module")
def gemma_host(gemma_path, tmp_path_factory) -> EngineHost:
    host = started_host(tmp_path_factory.mktemp("gemma") / "history.sqlite3", gemma_path)
    yield host
    assert host.shutdown(30)


# ---- ReplyRequest.tools on the local backend (tiny model: no forced call) -------------------------------------


def test_a_request_with_tools_renders_them_and_reports_the_call_syntax(tiny_model, history):
    host = started_host(history, tiny_model)
    try:
        client = host.client("test")
        job = client.reply(
            ReplyRequest(
                (ChatMessage("user", "6*7?"),), SamplingSettings(max_tokens=4, seed=1), tools=tuple(CALCULATOR)
            )
        )
        events = list(job.events(60))
        started = next(e for e in events if isinstance(e, ReplyStarted))
        assert started.tool_syntax == "hermes"  # no template in the file: ChatML with the generic tool prompt
        assert "<tools>" in started.prompt_text and '"name": "calculator"' in started.prompt_text
        plain = client.reply(ReplyRequest((ChatMessage("user", "hi"),), SamplingSettings(max_tokens=2, seed=1)))
        started = next(e for e in plain.events(60) if isinstance(e, ReplyStarted))
        assert started.tool_syntax is None and "<tools>" not in started.prompt_text
        hidden = client.reply(
            ReplyRequest(
                (ChatMessage("user", "hi"),),
                SamplingSettings(max_tokens=2, seed=1),
                tools=tuple(CALCULATOR),
                tool_choice="none",
            )
        )
        started = next(e for e in hidden.events(60) if isinstance(e, ReplyStarted))
        assert started.tool_syntax is None and "<tools>" not in started.prompt_text  # "none": no tools shown
        for tools, choice, message in [
            (({"type": "function", "function": {"name": "bad name!"}},), None, "the name must be"),
            (tuple(CALCULATOR), "shell", "not among the tools"),
            ((), "required", "needs tools"),
        ]:
            _text, done = wait_for_text(
                client.reply(ReplyRequest((ChatMessage("user", "x"),), tools=tools, tool_choice=choice)), 60
            )
            assert done.stats is None and message in (done.error or ""), done
    finally:
        assert host.shutdown(30)


def test_a_reply_that_cannot_start_is_an_error_of_the_loop(tiny_model, history):
    host = EngineHost(store_path=history)  # nothing loaded
    try:
        reply = HostToolReply(host.client("test"), ToolBox(builtin_tools(["calculator"])), Approvals(Approval.ONCE))
        with pytest.raises(GenerationError, match="no model is loaded"):
            list(reply.run([ChatMessage("user", "6*7?")]))
        assert reply.stats is None
    finally:
        host.shutdown(30)


# ---- the real model, forced by the grammar ------------------------------------------------------------------


def forced(tool: str, rounds: int = 2) -> LoopSettings:
    return LoopSettings(max_rounds=rounds, tool_choice=ToolChoice("named", tool), call_timeout=30)


@pytest.mark.slow
def test_every_turn_is_stored_as_it_ends_and_a_regenerated_reply_is_a_branch(gemma_host):
    store = Store.open(gemma_host.store_path)
    conversation = store.create_conversation(model_path="gemma")
    question = store.add_message(conversation.id, "user", "What is 6 times 7?")
    rounds: list[RoundPrompt] = []
    approvals = Approvals(Approval.ALWAYS)
    reply = HostToolReply(
        gemma_host.client("test"),
        ToolBox(builtin_tools(["calculator"])),
        approvals,
        sampling=GREEDY,
        conversation_id=conversation.id,
        parent_id=question.id,
        store=store,
        settings=forced("calculator"),
        on_round=rounds.append,
    )
    events = list(reply.run([question.to_chat()]))
    turns = [e for e in events if isinstance(e, AssistantTurn)]
    (tool_turn,) = [e for e in events if isinstance(e, ToolTurn)]
    call = turns[0].message.tool_calls[0]
    assert call.name == "calculator" and approvals.asked == [("calculator", call.arguments_dict())]
    assert [r.message_id for r in rounds] == [t.prompt.message_id for t in turns]  # the ids, as rounds begin
    stored = store.messages(conversation.id)
    assert [m.role for m in stored] == ["user", "assistant", "tool", "assistant"]
    first, result, answer = stored[1:]
    assert first.id == rounds[0].message_id and first.complete and first.finish_reason == "stop"
    assert first.content == turns[0].message.content and first.to_chat() == turns[0].message
    assert first.meta["sampling"]["temperature"] == 0.0 and first.meta["load"]["n_ctx"] == 2048  # the host's
    assert "<tools>" in store.prompt_text(first.id) and '"name": "calculator"' in store.prompt_text(first.id)
    assert result.parent_id == first.id and result.to_chat() == tool_turn.message
    assert result.meta["outcome"] == tool_turn.outcome and result.meta["approval"] == "always"
    assert answer.parent_id == result.id and answer.content == turns[1].message.content
    assert f"<tool_response>\n{result.content}\n</tool_response>" in store.prompt_text(answer.id)
    assert reply.last_id == answer.id and reply.stats is not None
    assert allowed_in(store.conversation(conversation.id).meta) == ["calculator"]  # "always" kept

    # Regenerate: a new reply to the same question is a second branch, the first one stays.
    again = HostToolReply(
        gemma_host.client("test"),
        ToolBox(builtin_tools(["calculator"])),
        Approvals(Approval.DENY),
        sampling=GREEDY,
        conversation_id=conversation.id,
        parent_id=question.id,
        store=store,
        settings=forced("calculator"),
        policy=ApprovalPolicy(allowed_in(store.conversation(conversation.id).meta)),
    )
    list(again.run([question.to_chat()]))
    branch = store.messages(conversation.id)
    assert branch[1].id != first.id and branch[1].sibling_index == 2 and branch[1].sibling_count == 2
    assert [m.role for m in branch] == ["user", "assistant", "tool", "assistant"]
    assert branch[2].meta["approval"] == "allowed"  # "always" held: not asked again
    old = store.switch_branch(first.id)
    assert [m.id for m in old] == [question.id, first.id, result.id, answer.id]
    store.close()


@pytest.mark.slow
def test_denied_call_is_stored_and_the_model_is_told(gemma_host):
    store = Store.open(gemma_host.store_path)
    conversation = store.create_conversation()
    question = store.add_message(conversation.id, "user", "What is 6 times 7?")
    reply = HostToolReply(
        gemma_host.client("test"),
        ToolBox(builtin_tools(["calculator"])),
        Approvals(Approval.DENY),
        sampling=GREEDY,
        conversation_id=conversation.id,
        parent_id=question.id,
        store=store,
        settings=forced("calculator"),
    )
    events = list(reply.run([question.to_chat()]))
    assert not [e for e in events if isinstance(e, ToolRunning)]
    stored = store.messages(conversation.id)
    assert stored[2].content == DENIED_TEXT and stored[2].meta["outcome"] == "denied"
    assert DENIED_TEXT in store.prompt_text(stored[3].id)
    store.close()


@pytest.mark.slow
def test_stop_during_a_call_stores_what_happened_and_leaves_nothing_running(gemma_host):
    before = children()
    hub = McpHub([McpServerConfig("test", PY, (str(MCP_TEST_SERVER), "stdio", "--grandchild"))])
    store = Store.open(gemma_host.store_path)
    conversation = store.create_conversation()
    question = store.add_message(conversation.id, "user", "Please stall.")
    holder: list[HostToolReply] = []
    pressed: list[float] = []

    def press_stop_soon() -> None:
        def press() -> None:
            pressed.append(time.monotonic())
            holder[0].stop()

        threading.Timer(0.5, press).start()

    try:
        reply = HostToolReply(
            gemma_host.client("test"),
            ToolBox(mcp=hub),
            Approvals(Approval.ONCE, press_stop_soon),
            sampling=GREEDY,
            conversation_id=conversation.id,
            parent_id=question.id,
            store=store,
            settings=forced("stall"),
        )
        holder.append(reply)
        events = list(reply.run([question.to_chat()]))
        ended = time.monotonic()
    finally:
        hub.close()
    assert_none_left(before)
    assert ended - pressed[0] < 3
    assert isinstance(events[-1], LoopFinished) and events[-1].reason == "stopped"
    stored = store.messages(conversation.id)
    assert [m.role for m in stored] == ["user", "assistant", "tool"]
    assert stored[2].content == STOPPED_TEXT and stored[2].meta["outcome"] == "stopped"
    assert all(m.complete for m in stored)
    store.close()


@pytest.mark.slow
def test_stop_while_the_model_writes_ends_the_round_and_the_host_is_free(gemma_host):
    store = Store.open(gemma_host.store_path)
    conversation = store.create_conversation()
    question = store.add_message(conversation.id, "user", "Count to a hundred.")
    reply = HostToolReply(
        gemma_host.client("test"),
        ToolBox(builtin_tools(["calculator"])),
        Approvals(Approval.ONCE),
        sampling=SamplingSettings(temperature=0.0, max_tokens=400, seed=1, logit_bias=ENDLESS),
        conversation_id=conversation.id,
        parent_id=question.id,
        store=store,
    )
    events = []
    for event in reply.run([question.to_chat()]):
        events.append(event)
        if len(events) == 3:
            threading.Thread(target=reply.stop).start()  # Stop from another thread, as the GUI does
    assert isinstance(events[-1], LoopFinished) and events[-1].reason == "stopped"
    assert reply.stats is not None and reply.stats.finish_reason == "cancelled"
    (stored,) = store.messages(conversation.id)[1:]
    assert stored.complete and stored.finish_reason == "cancelled" and stored.content == events[-2].message.content
    _text, done = wait_for_text(
        gemma_host.client("after").reply(ReplyRequest((ChatMessage("user", "Hi"),), SamplingSettings(max_tokens=2))), 60
    )
    assert done.error is None
    store.close()


def test_exported_history_keeps_the_exchange(hearth_home, capsys):
    """What the tool reply stores is what `history export` writes (no model needed: the rows as stored)."""
    from app.core.tool_loop import stored_meta

    store = Store.open(hearth_home.ensure().history_db)
    conversation = store.create_conversation()
    store.add_message(conversation.id, "user", "6*7?")
    call_message = ChatMessage("assistant", "", (CALL,))
    store.add_message(conversation.id, "assistant", "", meta=stored_meta(call_message))
    result = ChatMessage("tool", "42", tool_call_id="abcdefghi", name="calculator")
    store.add_message(conversation.id, "tool", "42", meta=stored_meta(result, outcome="ran", approval="once"))
    store.close()
    assert run(["history", "export", str(conversation.id), "--format", "json"]) == 0
    exported = json.loads(capsys.readouterr().out)["conversations"][0]["messages"]
    assert exported[1]["meta"]["tool_calls"] == [CALL.to_openai()]
    assert exported[2]["meta"] == {
        "tool_call_id": "abcdefghi",
        "name": "calculator",
        "outcome": "ran",
        "approval": "once",
    }
