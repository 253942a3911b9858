"""MCP servers through the official SDK: real servers started by the tests, and nothing left running after.

Servers: mcp-server-time (PyPI reference server), @modelcontextprotocol/server-everything (npm, run with
node), and tests/support/mcp_test_server.py (the SDK's own server: crashes mid-call, fails or hangs at start,
spawns a grandchild, serves streamable HTTP).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from app.core.errors import ConfigError, ToolError
from app.core.mcp_client import McpHub, McpServerConfig, parse_mcp_config, read_mcp_config
from app.core.messages import ToolCall
from app.core.tools import ToolBox
from tests.conftest import MCP_TEST_SERVER

PY = sys.executable


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def wait_gone(pids: set[int], seconds: float = 10.0) -> set[int]:
    """The pids still alive (not zombies) after waiting up to `seconds`."""
    deadline = time.monotonic() + seconds
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.05)
    return alive


def scripted_server(name: str, *args: str) -> McpServerConfig:
    return McpServerConfig(name, PY, (str(MCP_TEST_SERVER), *args))


@pytest.fixture
def hub_factory() -> Iterator:
    """Hubs made in a test are closed after it, and the test fails if any child process outlives that."""
    before = children()
    hubs: list[McpHub] = []

    def make(servers: list[McpServerConfig], **options: float) -> McpHub:
        hub = McpHub(servers, **options)
        hubs.append(hub)
        return hub

    yield make
    started = children() - before
    for hub in hubs:
        hub.close()
    assert not wait_gone(started), "MCP server processes were left running"


# ---- configuration ------------------------------------------------------------------------------------------


def test_the_usual_mcp_servers_json(tmp_path):
    config = {
        "mcpServers": {
            "time": {"command": "uvx", "args": ["mcp-server-time", "--local-timezone", "Europe/Paris"]},
            "files": {
                "command": "npx",
                "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
                "env": {"DEBUG": "1"},
            },
            "remote": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer x"}},
            "off": {"command": "x", "disabled": True},
        }
    }
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(config))
    servers = {s.name: s for s in read_mcp_config(path)}
    assert servers["time"].args == ("mcp-server-time", "--local-timezone", "Europe/Paris")
    assert servers["files"].env == {"DEBUG": "1"} and servers["files"].transport == "stdio"
    assert servers["remote"].transport == "http" and servers["remote"].headers["Authorization"] == "Bearer x"
    assert servers["off"].disabled and "off" not in McpHub(list(servers.values())).servers


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([], "must be a JSON object"),
        ({"mcpServers": {"a": "npx"}}, "must be an object"),
        ({"mcpServers": {"a": {}}}, "either a 'command'"),
        ({"mcpServers": {"a": {"command": "x", "url": "http://h"}}}, "not both"),
        ({"mcpServers": {"a": {"command": "x", "args": "-y"}}}, "'args' must be a list"),
        ({"mcpServers": {"a": {"command": "x", "env": {"K": 1}}}}, "'env' must map"),
        ({"mcpServers": {"a": {"url": "ftp://h"}}}, "http:// or https://"),
        ({"mcpServers": {"a": {"type": "sse", "url": "http://h/sse"}}}, "SSE servers are not supported"),
    ],
)
def test_bad_configurations_say_what_is_wrong(config, message):
    with pytest.raises(ConfigError, match=message):
        parse_mcp_config(config)


def test_unreadable_configuration_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        read_mcp_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_mcp_config(tmp_path / "bad.json")


# ---- published reference servers ------------------------------------------------------------------------------


def test_mcp_server_time_from_pypi(hub_factory):
    hub = hub_factory([McpServerConfig("time", PY, ("-m", "mcp_server_time", "--local-timezone", "Asia/Tokyo"))])
    tools = {t.name: t for t in hub.tools()}
    assert set(tools) == {"get_current_time", "convert_time"}
    assert "Get current time" in tools["get_current_time"].description
    assert tools["get_current_time"].input_schema["required"] == ["timezone"]
    result = hub.call_tool("time", "get_current_time", {"timezone": "Asia/Tokyo"}, timeout=20)
    assert not result.is_error and json.loads(result.text)["timezone"] == "Asia/Tokyo"
    refused = hub.call_tool("time", "get_current_time", {"timezone": "Mars/Base"}, timeout=20)
    assert refused.is_error and "Mars/Base" in refused.text


@pytest.mark.slow
def test_server_everything_from_npm(hub_factory, npm_everything_server):
    command, *args = npm_everything_server
    hub = hub_factory([McpServerConfig("everything", command, tuple(args))])
    tools = {t.name: t for t in hub.tools()}
    assert {"echo", "get-sum", "get-tiny-image", "trigger-long-running-operation"} <= set(tools)
    assert tools["get-sum"].input_schema["properties"]["a"]["type"] == "number"
    assert hub.call_tool("everything", "echo", {"message": "hello"}).text == "Echo: hello"
    assert "5" in hub.call_tool("everything", "get-sum", {"a": 2, "b": 3}).text
    image = hub.call_tool("everything", "get-tiny-image", {}).text
    assert "[image returned by the tool: image/png" in image and "bytes (not shown to the model)]" in image
    links = hub.call_tool("everything", "get-resource-links", {"count": 2}).text
    assert links.count("[resource link ") == 2
    # Stop during a long call: the call ends at once, the server stays usable.
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with pytest.raises(ToolError, match="was stopped"):
        hub.call_tool("everything", "trigger-long-running-operation", {"duration": 30, "steps": 3}, cancel=stop)
    assert time.monotonic() - started < 3
    assert hub.call_tool("everything", "echo", {"message": "still here"}).text == "Echo: still here"


# ---- servers that fail ------------------------------------------------------------------------------------------


def test_servers_that_cannot_start_are_named_and_the_others_work(hub_factory):
    hub = hub_factory(
        [
            scripted_server("good"),
            scripted_server("refuses", "exit-at-start"),
            McpServerConfig("missing", "hearth-no-such-mcp-server"),
            scripted_server("hangs", "hang-at-start"),
        ],
        start_timeout=4,
    )
    started = time.monotonic()
    assert {t.name for t in hub.tools()} == {"echo", "crash", "sleep", "stall", "pid"}
    assert time.monotonic() - started < 12  # servers start together; the hung one costs one timeout
    errors = hub.errors()
    assert set(errors) == {"refuses", "missing", "hangs"}
    assert "could not start: it exited before answering" in errors["refuses"]
    assert "missing API key" in errors["refuses"]  # the end of its stderr, quoted
    assert "'hearth-no-such-mcp-server' was not found" in errors["missing"]
    assert "did not start within 4 s" in errors["hangs"]
    with pytest.raises(ToolError, match="could not start"):
        hub.call_tool("refuses", "echo", {"text": "x"})
    assert hub.call_tool("good", "echo", {"text": "x"}).text == "echo: x"


def test_a_crash_mid_call_is_an_error_and_the_server_comes_back(hub_factory):
    hub = hub_factory([scripted_server("crashy", "stdio", "--grandchild")])
    server_pid, grandchild = map(int, hub.call_tool("crashy", "pid", {}).text.split())
    started = time.monotonic()
    with pytest.raises(ToolError, match="'crashy' stopped working; its last output: crash tool called"):
        hub.call_tool("crashy", "crash", {}, timeout=30)
    assert time.monotonic() - started < 5  # noticed at once, not at the timeout
    assert "stopped working" in hub.errors()["crashy"]
    assert not wait_gone({server_pid, grandchild})  # the crashed server's orphan is killed with its group
    assert hub.call_tool("crashy", "echo", {"text": "back"}).text == "echo: back"  # started again on demand
    assert hub.errors() == {}


def test_timeouts_and_stop_end_a_call(hub_factory):
    hub = hub_factory([scripted_server("slow")])
    started = time.monotonic()
    with pytest.raises(ToolError, match="did not answer within 1 s"):
        hub.call_tool("slow", "sleep", {"seconds": 30}, timeout=1)
    assert time.monotonic() - started < 20  # includes the server's first start
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(ToolError, match="was stopped"):
        hub.call_tool("slow", "sleep", {"seconds": 30}, cancel=stop)
    assert time.monotonic() - started < 2
    assert hub.call_tool("slow", "sleep", {"seconds": 0}).text == "slept 0.0"


def test_close_stops_every_process_even_grandchildren():
    before = children()
    hub = McpHub([scripted_server("a", "stdio", "--grandchild"), scripted_server("b")])
    assert len(hub.tools()) == 10
    spawned = children() - before
    assert len(spawned) == 3  # two servers and one grandchild
    hub.close()
    assert not wait_gone(spawned)
    hub.close()  # idempotent
    with pytest.raises(ToolError, match="shut down"):
        hub.call_tool("a", "echo", {"text": "x"})


def test_unknown_tools_and_servers():
    with McpHub([scripted_server("t")]) as hub:
        result = hub.call_tool("t", "nope", {})
        assert result.is_error and "nope" in result.text
        with pytest.raises(ToolError, match="no MCP server named 'x'"):
            hub.call_tool("x", "echo", {})


# ---- streamable HTTP ---------------------------------------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [PY, str(MCP_TEST_SERVER), "http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.kill()
        process.wait(10)


def test_streamable_http_server(hub_factory, http_server):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    hub = hub_factory(
        [McpServerConfig("web", url=http_server), McpServerConfig("down", url=f"http://127.0.0.1:{dead}/mcp")],
        start_timeout=10,
    )
    assert {t.name for t in hub.tools()} == {"echo", "crash", "sleep", "stall", "pid"}
    assert "'down' could not be reached" in hub.errors()["down"]
    assert hub.call_tool("web", "echo", {"text": "over HTTP"}).text == "echo: over HTTP"


# ---- the toolbox over MCP ---------------------------------------------------------------------------------------


def test_toolbox_merges_servers_and_builtins_and_renames_clashes(hub_factory):
    from app.core.builtin_tools import builtin_tools

    hub = hub_factory([scripted_server("one"), scripted_server("two")])
    box = ToolBox(builtin_tools(["calculator"]), hub)
    names = [s.name for s in box.specs()]
    assert names[0] == "calculator" and "echo" in names and "two_echo" in names and len(names) == 11
    assert box.spec("echo").source == "mcp:one" and box.spec("two_echo").source == "mcp:two"
    assert box.call(ToolCall("1", "two_echo", '{"text": "hi"}')).text == "echo: hi"
    crashed = box.call(ToolCall("2", "crash", "{}"), timeout=20)
    assert crashed.is_error and "stopped working" in crashed.text  # an error result, never an exception
