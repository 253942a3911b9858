"""A tiny MCP server for the tool tests, built with the official SDK: it can crash, hang, stall or fail to start.

Usage: python mcp_test_server.py [stdio | exit-at-start | hang-at-start | http PORT] [--grandchild]
Tools: echo(text), crash() (the process exits mid-call), sleep(seconds), stall() (a minute), pid() (its own and
its child's pid).
--grandchild starts a long `sleep` child process at start, to prove that shutdown kills the whole tree.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("hearth-test-server")
GRANDCHILD: subprocess.Popen | None = None


@server.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return f"echo: {text}"


@server.tool()
def crash() -> str:
    """Exit the server process in the middle of the call."""
    sys.stderr.write("crash tool called: exiting with status 3\n")
    sys.stderr.flush()
    os._exit(3)


@server.tool()
async def sleep(seconds: float) -> str:
    """Wait, then answer."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
async def stall() -> str:
    """Take a minute to answer (for Stop tests: no arguments, so a forced call is fully determined)."""
    await asyncio.sleep(60)
    return "done stalling"


@server.tool()
def pid() -> str:
    """This server's process id, and its child's."""
    return f"{os.getpid()} {GRANDCHILD.pid if GRANDCHILD else 0}"


def main() -> None:
    global GRANDCHILD
    args = sys.argv[1:]
    mode = args[0] if args else "stdio"
    if "--grandchild" in args:
        # Its own stdin/stdout: a child holding the server's pipes would hide the server's exit from the client.
        GRANDCHILD = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(300)"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
    if mode == "exit-at-start":
        sys.stderr.write("fatal: the test server refuses to start (missing API key)\n")
        sys.exit(1)
    if mode == "hang-at-start":
        time.sleep(300)
    if mode == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(args[1]))
    else:
        server.run()


if __name__ == "__main__":
    main()
