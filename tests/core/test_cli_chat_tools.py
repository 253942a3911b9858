"""`hearth chat MODEL --mcp CONFIG.json` run as a user runs it: the real gemma-3-270m forced by the grammar to
call the tools of real MCP servers (mcp-server-time from PyPI, server-everything from npm, a server that
crashes), the approval typed on stdin, the result fed back, the whole exchange in the history and in
`history export`; denial and Ctrl-C leave no server process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from app.core.tool_loop import DENIED_TEXT, STOPPED_TEXT
from tests.conftest import MCP_TEST_SERVER

PY = sys.executable
GEMMA = ["--ctx", "2048", "--temperature", "0", "--max-tokens", "40", "--seed", "1", "--max-tool-rounds", "2"]


def hearth(*args: str, stdin: str = "", timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "app", *args], capture_output=True, text=True, input=stdin, timeout=timeout, env=os.environ.copy()
    )


def servers_file(tmp_path: Path, servers: dict[str, tuple[str, list[str]]]) -> tuple[Path, str]:
    """An mcpServers file; every server gets a unique tag in its environment, to find what it left running."""
    tag = uuid.uuid4().hex
    config = {
        name: {"command": command, "args": args, "env": {"HEARTH_TEST_TAG": tag}}
        for name, (command, args) in servers.items()
    }
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": config}))
    return path, tag


def tagged(tag: str) -> list[psutil.Process]:
    """Live processes started with this tag in their environment (MCP servers and their children)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("HEARTH_TEST_TAG") == tag and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


def exported(conversation: int = 1) -> list[dict]:
    result = hearth("history", "export", str(conversation), "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["conversations"][0]["messages"]


@pytest.mark.slow
def test_a_call_approved_on_stdin_runs_is_fed_back_saved_and_exported(gemma_path, tmp_path):
    config, tag = servers_file(tmp_path, {"time": (PY, ["-m", "mcp_server_time", "--local-timezone", "Asia/Tokyo"])})
    result = hearth(
        "chat", str(gemma_path), *GEMMA, "--mcp", str(config), "--tool-choice", "get_current_time",
        "-m", "What time is it in Tokyo?", stdin="y\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Tools: get_current_time, convert_time" in result.stderr
    assert "The model wants to run get_current_time (MCP server 'time') with {" in result.stderr
    assert "[running get_current_time" in result.stderr
    assert not tagged(tag)  # the server ended with the chat

    messages = exported()
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    (call,) = messages[1]["meta"]["tool_calls"]
    assert call["function"]["name"] == "get_current_time"
    assert messages[2]["meta"]["tool_call_id"] == call["id"] and messages[2]["meta"]["name"] == "get_current_time"
    assert messages[2]["meta"]["approval"] == "once"
    if messages[2]["meta"]["outcome"] == "ran":  # the model picks the zone; a wrong one is refused by the server
        assert '"timezone"' in messages[2]["content"] and '"datetime"' in messages[2]["content"]
    else:
        assert messages[2]["content"].startswith("Error:")
    assert f"[get_current_time {'result' if messages[2]['meta']['outcome'] == 'ran' else 'error'}: " in result.stderr
    markdown = hearth("history", "export", "1", "--format", "md").stdout
    assert "*Called `get_current_time` with `" in markdown and "**Tool result (get_current_time):**" in markdown
    listing = json.loads(hearth("history", "list", "--json").stdout)
    assert listing  # the conversation is in the history like any other


@pytest.mark.slow
def test_a_denied_call_never_runs_and_leaves_nothing_running(gemma_path, tmp_path, npm_everything_server):
    command, *args = npm_everything_server
    config, tag = servers_file(tmp_path, {"everything": (command, args)})
    result = hearth(
        "chat", str(gemma_path), *GEMMA, "--mcp", str(config), "--tool-choice", "get-sum",
        "-m", "What is 2 + 3?", stdin="n\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "The model wants to run get-sum (MCP server 'everything')" in result.stderr
    assert "[running get-sum" not in result.stderr and f"[get-sum denied: {DENIED_TEXT}]" in result.stderr
    assert not tagged(tag)
    messages = exported()
    assert messages[2]["role"] == "tool" and messages[2]["content"] == DENIED_TEXT
    assert messages[2]["meta"]["outcome"] == "denied"


@pytest.mark.slow
def test_a_server_that_crashes_gives_an_error_in_place_and_the_chat_goes_on(gemma_path, tmp_path):
    config, tag = servers_file(tmp_path, {"crashy": (PY, [str(MCP_TEST_SERVER), "stdio", "--grandchild"])})
    result = hearth(
        "chat", str(gemma_path), *GEMMA, "--mcp", str(config), "--tool-choice", "crash", "--allow-tools", "crash",
        "-m", "Crash, please.",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "The model wants to run" not in result.stderr  # --allow-tools: not asked
    assert "[crash error: Error: MCP server 'crashy' stopped working" in result.stderr
    assert not tagged(tag)  # the crashed server's child too
    messages = exported()
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]  # the model got the error
    assert "crash tool called" in messages[2]["content"] and messages[2]["meta"]["outcome"] == "failed"


@pytest.mark.slow
def test_ctrl_c_during_a_call_stops_the_reply_and_every_server(gemma_path, tmp_path):
    config, tag = servers_file(tmp_path, {"test": (PY, [str(MCP_TEST_SERVER), "stdio", "--grandchild"])})
    process = subprocess.Popen(
        [PY, "-m", "app", "chat", str(gemma_path), *GEMMA, "--mcp", str(config), "--tool-choice", "stall",
         "--allow-tools", "stall"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
        # Run in the background (pytest &), a child inherits SIGINT as ignored: give it the default back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    lines: list[str] = []
    running = threading.Event()

    def read_errors() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "[running stall" in line:
                running.set()

    reader = threading.Thread(target=read_errors, daemon=True)
    reader.start()
    try:
        assert process.stdin is not None
        process.stdin.write("Please stall.\n")
        process.stdin.flush()
        assert running.wait(240), "".join(lines)
        assert len(tagged(tag)) == 2  # the server and its child are running
        pressed = time.monotonic()
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 20
        while not any("(stopped)" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped_after = time.monotonic() - pressed
        process.stdin.write("/exit\n")
        process.stdin.flush()
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(5)
    assert stopped_after < 5, "".join(lines)  # the minute-long call was abandoned at once
    assert "[stall not run: " + STOPPED_TEXT + "]\n" in lines
    assert not tagged(tag)
    messages = exported()
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[2]["content"] == STOPPED_TEXT and messages[2]["meta"]["outcome"] == "stopped"


def test_tool_options_are_checked_before_anything_loads(tmp_path, tiny_model):
    for args, message in [
        (["--tools-builtin", "calculator", "--json"], "cannot be combined with tools"),
        (["--allow-tools", "calculator"], "need tools"),
        (["--tools-builtin", "shell"], "unknown built-in tool 'shell'"),
        (["--mcp", str(tmp_path / "missing.json")], "cannot read"),
        (["--tools-builtin", "calculator", "--tool-choice", "get_weather"], "not among the tools"),
    ]:
        result = hearth("chat", str(tiny_model), "-m", "hi", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Loaded" not in result.stderr
