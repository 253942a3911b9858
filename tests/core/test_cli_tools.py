"""`hearth tools list/call` against real servers, and the terminal side of tools in `hearth chat`
(approval answered on stdin, the reply loop with the real gemma-3-270m)."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import pytest

from app.cli import run
from app.cli.tools_cmds import ChatTools, add_tool_args, terminal_approval
from app.core.errors import ConfigError
from app.core.messages import ChatMessage, ToolCall
from app.core.tool_loop import Approval, StoreRecorder
from app.core.tools import ToolSpec
from tests.conftest import MCP_TEST_SERVER

PY = sys.executable


@pytest.fixture
def mcp_config(tmp_path) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "time": {"command": PY, "args": ["-m", "mcp_server_time", "--local-timezone", "Europe/Paris"]},
                    "broken": {"command": PY, "args": [str(MCP_TEST_SERVER), "exit-at-start"]},
                }
            }
        )
    )
    return path


def test_tools_list_shows_every_tool_and_names_the_broken_server(mcp_config, capsys):
    assert run(["tools", "list", "--mcp", str(mcp_config), "--builtin", "all"]) == 2  # a server failed
    captured = capsys.readouterr()
    assert "Built-in tools:\n  current_time(timezone?: string)\n" in captured.out
    assert "MCP server 'time':\n  get_current_time(timezone: string)\n      Get current time" in captured.out
    assert "convert_time(source_timezone: string, time: string, target_timezone: string)" in captured.out
    assert captured.err.strip().splitlines() == [
        "hearth: MCP server 'broken' could not start: it exited before answering; its last output: "
        "fatal: the test server refuses to start (missing API key)"
    ]
    assert run(["tools", "list", "--mcp", str(mcp_config), "--json"]) == 2
    listing = json.loads(capsys.readouterr().out)
    assert [t["function"]["name"] for t in listing["tools"]] == ["get_current_time", "convert_time"]
    assert listing["tools"][0]["source"] == "mcp:time" and "broken" in listing["errors"]


def test_tools_call_runs_one_tool(mcp_config, capsys):
    assert run(["tools", "call", "calculator", "--builtin", "calculator", "--args", '{"expression": "6*7"}']) == 0
    assert capsys.readouterr().out == "42\n"
    args = ["tools", "call", "get_current_time", "--mcp", str(mcp_config), "--args", '{"timezone": "Asia/Tokyo"}']
    assert run(args) == 0
    assert json.loads(capsys.readouterr().out)["timezone"] == "Asia/Tokyo"
    assert run(["tools", "call", "calculator", "--builtin", "calculator", "--args", '{"expression": "1/0"}']) == 1
    assert capsys.readouterr().out == "Error: division by zero\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tools", "list"], "name the tools to list"),
        (["tools", "list", "--builtin", "shell"], "unknown built-in tool 'shell'"),
        (["tools", "list", "--mcp", "/nonexistent/mcp.json"], "cannot read"),
        (["tools", "call", "nope", "--builtin", "calculator"], "no tool named 'nope'"),
        (["tools", "call", "calculator", "--builtin", "calculator", "--args", "{x"], "--args is not valid JSON"),
        (["tools", "call", "calculator", "--builtin", "calculator", "--args", "[1]"], "must be a JSON object"),
    ],
)
def test_tools_commands_refuse_bad_input_in_one_line(args, message, capsys):
    assert run(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# ---- approval on the terminal ---------------------------------------------------------------------------------

SPEC = ToolSpec("get_current_time", "", {"type": "object"}, "mcp:time")


@pytest.mark.parametrize(
    ("typed", "answer"),
    [
        ("y\n", Approval.ONCE),
        ("yes\n", Approval.ONCE),
        ("a\n", Approval.ALWAYS),
        ("n\n", Approval.DENY),
        ("\n", Approval.DENY),
        ("", Approval.DENY),
        ("sure\n", Approval.DENY),
    ],
)
def test_terminal_approval(typed, answer):
    out = io.StringIO()
    approve = terminal_approval(io.StringIO(typed), out)
    assert approve(ToolCall("1", "get_current_time", '{"timezone": "Asia/Tokyo"}'), SPEC) is answer
    assert 'get_current_time (MCP server \'time\') with {"timezone": "Asia/Tokyo"}' in out.getvalue()
    assert "[y] once, [a] always in this chat, [N] no" in out.getvalue()


def chat_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_tool_args(parser)
    return parser.parse_args(list(argv))


def test_chat_tool_options():
    assert ChatTools.from_args(chat_args()) is None
    with pytest.raises(ConfigError, match="need tools"):
        ChatTools.from_args(chat_args("--allow-tools", "calculator"))
    with pytest.raises(ConfigError, match="not among the tools"):
        ChatTools.from_args(chat_args("--tools-builtin", "calculator", "--tool-choice", "shell"))
    tools = ChatTools.from_args(chat_args("--tools-builtin", "calculator,current_time", "--allow-tools", "all"))
    assert tools.policy.names() == ["calculator", "current_time"]
    tools.close()


@pytest.mark.slow
def test_a_chat_reply_with_a_tool_approved_on_stdin(gemma_path, capsys):
    from app.core.conversation import ChatRunner
    from app.core.llama_engine import LlamaCppEngine
    from app.core.load_config import LoadConfig
    from app.core.paths import AppPaths
    from app.core.sampling import SamplingSettings
    from app.core.store import Store

    tools = ChatTools.from_args(
        chat_args("--tools-builtin", "current_time", "--tool-choice", "current_time", "--max-tool-rounds", "2")
    )
    tools.approve = terminal_approval(io.StringIO("y\n"), sys.stderr)
    engine = LlamaCppEngine()
    engine.load(gemma_path, LoadConfig(n_ctx=2048))
    store = Store.open(AppPaths.default().ensure().history_db)
    try:
        conversation = store.create_conversation(model_path=str(gemma_path))
        store.add_message(conversation.id, "user", "What time is it?")
        added = tools.reply(
            ChatRunner(engine),
            [ChatMessage("user", "What time is it?")],
            SamplingSettings(temperature=0.0, max_tokens=24, seed=1),
            out=sys.stdout,
            err=sys.stderr,
            recorder=StoreRecorder(store, conversation.id),
        )
        roles = [m.role for m in store.messages(conversation.id)]
    finally:
        engine.unload()
        store.close()
        tools.close()
    captured = capsys.readouterr()
    assert "The model wants to run current_time (built-in)" in captured.err
    assert "[running current_time" in captured.err and "[current_time result: " in captured.err
    assert [m.role for m in added] == ["assistant", "tool", "assistant"] and added[0].tool_calls
    assert roles == ["user", "assistant", "tool", "assistant"]
