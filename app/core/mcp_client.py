"""MCP servers (Model Context Protocol) through the official `mcp` SDK, behind a small synchronous facade.

Servers are configured as in Claude Desktop and LM Studio ({"mcpServers": {name: {"command", "args", "env"}
or {"url", "headers"}}}): stdio servers are started as child processes, streamable-HTTP servers are
connected to. The SDK is asyncio-based and its sessions must be entered and left in the task that owns them,
so McpHub runs one background event-loop thread that owns every session (one task per server); the rest of
Hearth calls tools() and call_tool() from any thread and gets plain values or ToolError.

A server starts on first use and stays up until close(). One that cannot start, does not answer in time or
crashes is reported by name with the end of its error output, and the others carry on; a crashed server is
started again on its next call. close() (also on errors, Stop and interpreter exit) ends every session; the
SDK closes a stdio server's stdin, then terminates and kills its whole process tree, so nothing is left
running.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import json
import logging
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.errors import ConfigError, ToolError
from app.core.tools import ToolResult, check_schema

log = logging.getLogger("hearth.tools")

START_TIMEOUT = 30.0  # seconds for a server to start and answer the handshake (npx may download first)
CLOSE_TIMEOUT = 10.0  # the SDK needs at most ~5 s per stdio server (stdin closed, SIGTERM, SIGKILL)
STDERR_TAIL = 600  # characters of a server's error output quoted when it fails
MAX_RESULT_CHARS = 100_000  # a tool result longer than this is cut (it all goes into the prompt)


@dataclass(frozen=True)
class McpServerConfig:
    """One entry of "mcpServers": a command to run (stdio) or a URL (streamable HTTP)."""

    name: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    disabled: bool = False

    @property
    def transport(self) -> str:
        return "http" if self.url else "stdio"

    def describe(self) -> str:
        return self.url if self.url else " ".join([self.command, *self.args])


def parse_mcp_config(data: Any, where: str = "the MCP configuration") -> list[McpServerConfig]:
    """Read {"mcpServers": {...}} (or the inner mapping itself); ConfigError naming the bad entry."""
    if isinstance(data, Mapping) and "mcpServers" in data:
        data = data["mcpServers"]
    if not isinstance(data, Mapping):
        raise ConfigError(f'{where} must be a JSON object like {{"mcpServers": {{"name": {{"command": ...}}}}}}')
    servers = []
    for name, entry in data.items():
        place = f"{where}: server {name!r}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{place} must be an object with a 'command' or a 'url'")
        kind = entry.get("type") or entry.get("transport")
        if kind in ("sse",):
            raise ConfigError(f"{place}: SSE servers are not supported; use the server's streamable HTTP URL")
        url, command = entry.get("url") or entry.get("serverUrl"), entry.get("command")
        if bool(url) == bool(command):
            raise ConfigError(f"{place} needs either a 'command' (a program to start) or a 'url', not both")
        args, env, headers = entry.get("args", []), entry.get("env", {}), entry.get("headers", {})
        if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
            raise ConfigError(f"{place}: 'args' must be a list of strings")
        for label, mapping in (("env", env), ("headers", headers)):
            if not isinstance(mapping, Mapping) or not all(isinstance(v, str) for v in mapping.values()):
                raise ConfigError(f"{place}: '{label}' must map names to strings")
        if url and not str(url).startswith(("http://", "https://")):
            raise ConfigError(f"{place}: the url must start with http:// or https://")
        servers.append(
            McpServerConfig(
                name=str(name),
                command=str(command or ""),
                args=tuple(str(a) for a in args),
                env=dict(env),
                cwd=str(entry["cwd"]) if entry.get("cwd") else None,
                url=str(url or ""),
                headers=dict(headers),
                disabled=bool(entry.get("disabled", False)),
            )
        )
    return servers


def read_mcp_config(path: Path) -> list[McpServerConfig]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    return parse_mcp_config(data, str(path))


@dataclass(frozen=True)
class McpTool:
    """A tool one server offers."""

    server: str
    name: str
    description: str
    input_schema: dict[str, Any]


def result_to_text(result: Any) -> ToolResult:
    """A CallToolResult as the text a model reads: text as it is, images/audio/binary resources described."""
    parts: list[str] = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            size = len(block.data) * 3 // 4  # base64
            parts.append(f"[{kind} returned by the tool: {block.mime_type}, {size:,} bytes (not shown to the model)]")
        elif kind == "resource":
            resource = block.resource
            if hasattr(resource, "text"):
                parts.append(f"[resource {resource.uri}]\n{resource.text}")
            else:
                size = len(resource.blob) * 3 // 4
                mime = resource.mime_type or "binary"
                parts.append(f"[resource {resource.uri}: {mime}, {size:,} bytes (not shown to the model)]")
        elif kind == "resource_link":
            about = f": {block.description}" if block.description else ""
            parts.append(f"[resource link {block.name} <{block.uri}>{about}]")
        else:
            parts.append(f"[{kind or 'unknown'} content]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"\n[... cut: the result had {len(text):,} characters]"
    if result.is_error:
        return ToolResult(f"Error: {text}" if text else "Error: the tool failed", True)
    return ToolResult(text)


class _Connection:
    """One server's session, owned by one task on the hub's event loop."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self.client: Any = None  # mcp.Client once connected
        self.task: asyncio.Task[None] | None = None
        self.ready: asyncio.Future[Any] | None = None
        self.stop: asyncio.Event | None = None
        self.tools: list[McpTool] | None = None
        self.error: str | None = None
        self.stderr: Any = None  # a temporary file: the server's error output, quoted when it fails
        self.process_group: int | None = None  # a stdio server's own process group (POSIX)

    def stderr_tail(self) -> str:
        if self.stderr is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self.stderr.flush()
            with open(self.stderr.name, encoding="utf-8", errors="replace") as handle:
                text = handle.read()[-STDERR_TAIL:].strip()
            return f"; its last output: {text}" if text else ""
        return ""


class McpHub:
    """The MCP servers of one configuration, started on demand, each owned by a background event loop.

    Thread-safe: every public method may be called from any thread (never from the hub's own loop).
    """

    def __init__(self, servers: Sequence[McpServerConfig], *, start_timeout: float = START_TIMEOUT) -> None:
        self.servers = {s.name: s for s in servers if not s.disabled}
        self.start_timeout = start_timeout
        self._connections = {name: _Connection(config) for name, config in self.servers.items()}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._spawn_lock_value: asyncio.Lock | None = None
        hub = weakref.ref(self)
        self._atexit = lambda: (h := hub()) and h.close()
        atexit.register(self._atexit)

    def __enter__(self) -> McpHub:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- the sync facade -----------------------------------------------------------------------------------

    def tools(self) -> list[McpTool]:
        """The tools of every server (starting those not running, all at once); failures go to errors()."""
        if not self.servers:
            return []
        return self._run(self._all_tools(), self.start_timeout + 15)

    def server_tools(self, server: str) -> list[McpTool]:
        """One server's tools; ToolError when it cannot start."""
        return self._run(self._tools_of(self._connection(server)), self.start_timeout + 15)

    def errors(self) -> dict[str, str]:
        """Servers that failed to start or crashed, with the reason."""
        return {name: conn.error for name, conn in self._connections.items() if conn.error}

    def call_tool(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout: float = 60.0,
        cancel: threading.Event | None = None,
    ) -> ToolResult:
        """Run one tool; ToolError when the server cannot start, crashes, times out or cancel is set."""
        conn = self._connection(server)
        future = self._submit(self._call(conn, tool, arguments, timeout))
        deadline = time.monotonic() + timeout + self.start_timeout
        while True:
            try:
                return future.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                pass
            except concurrent.futures.CancelledError:
                raise ToolError(f"{tool} on {server} was stopped") from None
            if cancel is not None and cancel.is_set():
                future.cancel()
                raise ToolError(f"{tool} on {server} was stopped")
            if time.monotonic() > deadline:
                future.cancel()
                raise ToolError(f"{tool} on {server} did not answer within {timeout:g} s")

    def close(self) -> None:
        """End every session and stop every server process; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        atexit.unregister(self._atexit)
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close_all(), loop).result(CLOSE_TIMEOUT + 5)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("MCP servers did not all shut down in time")
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            if not thread.is_alive():
                loop.close()

    # ---- plumbing ------------------------------------------------------------------------------------------

    def _connection(self, server: str) -> _Connection:
        conn = self._connections.get(server)
        if conn is None:
            raise ToolError(f"there is no MCP server named {server!r}")
        return conn

    def _submit(self, coroutine: Any) -> concurrent.futures.Future[Any]:
        with self._lock:
            if self._closed:
                coroutine.close()
                raise ToolError("the MCP servers were shut down")
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="hearth-mcp", daemon=True)
                self._thread.start()
            return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _run(self, coroutine: Any, timeout: float) -> Any:
        future = self._submit(coroutine)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ToolError(f"the MCP servers did not answer within {timeout:g} s") from None

    # ---- on the hub's event loop ---------------------------------------------------------------------------

    @property
    def _spawn_lock(self) -> asyncio.Lock:
        if self._spawn_lock_value is None:  # created on the loop that uses it
            self._spawn_lock_value = asyncio.Lock()
        return self._spawn_lock_value

    async def _all_tools(self) -> list[McpTool]:
        results = await asyncio.gather(
            *(self._tools_of(conn) for conn in self._connections.values()), return_exceptions=True
        )
        tools: list[McpTool] = []
        for result in results:
            if isinstance(result, ToolError):
                continue  # recorded in conn.error
            if isinstance(result, BaseException):
                raise result
            tools.extend(result)
        return tools

    async def _tools_of(self, conn: _Connection) -> list[McpTool]:
        client = await self._connected(conn)
        if conn.tools is None:
            try:
                conn.tools = await self._list_tools(conn, client)
            except Exception as exc:
                raise self._failed(conn, f"could not list its tools: {_reason(exc)}") from None
        return conn.tools

    async def _list_tools(self, conn: _Connection, client: Any) -> list[McpTool]:
        tools, cursor = [], None
        for _page in range(100):  # a server that pages forever must not hang us
            page = await asyncio.wait_for(client.list_tools(cursor=cursor), self.start_timeout)
            for tool in page.tools:
                schema = dict(tool.input_schema or {"type": "object", "properties": {}})
                try:
                    check_schema(schema, f"{conn.config.name}/{tool.name}")
                except ConfigError as exc:
                    log.warning("MCP tool left out: %s", exc)
                    continue
                tools.append(McpTool(conn.config.name, tool.name, tool.description or "", schema))
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def _call(self, conn: _Connection, tool: str, arguments: dict[str, Any], timeout: float) -> ToolResult:
        from mcp import MCPError
        from mcp_types.jsonrpc import CONNECTION_CLOSED

        client = await self._connected(conn)
        try:
            result = await asyncio.wait_for(client.call_tool(tool, arguments, read_timeout_seconds=timeout), timeout)
        except TimeoutError:
            raise ToolError(f"{tool} on {conn.config.name} did not answer within {timeout:g} s") from None
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED or not self._alive(conn):
                raise self._crashed(conn) from None
            return ToolResult(f"Error: {exc.message}", True)  # e.g. unknown tool, invalid arguments
        except Exception as exc:
            if not self._alive(conn):
                raise self._crashed(conn) from None
            raise ToolError(f"{tool} on {conn.config.name} failed: {_reason(exc)}") from None
        return result_to_text(result)

    def _alive(self, conn: _Connection) -> bool:
        return conn.task is not None and not conn.task.done()

    def _crashed(self, conn: _Connection) -> ToolError:
        return self._failed(conn, f"stopped working{conn.stderr_tail()}", quote=False)

    def _failed(self, conn: _Connection, what: str, *, quote: bool = True) -> ToolError:
        message = f"MCP server {conn.config.name!r} {what}" + (conn.stderr_tail() if quote else "")
        conn.error = message
        conn.tools = None
        if conn.stop is not None:
            conn.stop.set()  # its session ends (and its process with it); the next use starts it again
        if conn.task is not None and conn.ready is not None and not conn.ready.done():
            conn.task.cancel()  # still starting: the SDK's shielded cleanup stops the process
        return ToolError(message)

    async def _connected(self, conn: _Connection) -> Any:
        """The server's client, starting the server if it is not running (or crashed)."""
        if conn.task is not None and not conn.task.done() and conn.stop is not None and conn.stop.is_set():
            await asyncio.wait([conn.task], timeout=CLOSE_TIMEOUT)  # a crashed session still winding down
        if conn.task is None or conn.task.done():
            if conn.stderr is not None:  # a fresh start: quote only what the new process writes
                with contextlib.suppress(OSError, ValueError):
                    conn.stderr.seek(0)
                    conn.stderr.truncate()
            conn.ready = asyncio.get_running_loop().create_future()
            # A start that failed after its caller gave up must not log "exception was never retrieved".
            conn.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
            conn.stop = asyncio.Event()
            conn.task = asyncio.create_task(self._serve(conn, conn.ready, conn.stop))
        assert conn.ready is not None
        try:
            client = await asyncio.wait_for(asyncio.shield(conn.ready), self.start_timeout)
        except TimeoutError:
            raise self._failed(conn, f"did not start within {self.start_timeout:g} s") from None
        except ToolError as exc:
            conn.error = str(exc)
            raise
        conn.error = None
        return client

    async def _serve(self, conn: _Connection, ready: asyncio.Future[Any], stop: asyncio.Event) -> None:
        """Own one server's session from start to close (the SDK's contexts must stay in one task)."""
        from mcp import Client
        from mcp.types import Implementation

        from app import __version__

        if conn.stderr is None:
            conn.stderr = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open for the server's lifetime
                "w+", encoding="utf-8", prefix=f"hearth-mcp-{_safe(conn.config.name)}-", suffix=".log", delete=False
            )
        try:
            async with contextlib.AsyncExitStack() as stack:
                transport = await self._transport(conn, stack)
                client = Client(transport, client_info=Implementation(name="Hearth", version=__version__))
                await stack.enter_async_context(client)
                conn.client = client
                ready.set_result(client)
                log.info("MCP server %s started (%s)", conn.config.name, conn.config.describe())
                await stop.wait()
        except BaseException as exc:  # the session ended: failed to start, crashed, or cancelled on close
            if not ready.done():
                reason = _start_reason(conn.config, exc) + conn.stderr_tail()
                verb = "could not be reached" if conn.config.url else "could not start"
                ready.set_exception(ToolError(f"MCP server {conn.config.name!r} {verb}: {reason}"))
            if not isinstance(exc, Exception):
                raise
            log.warning("MCP server %s ended: %s", conn.config.name, _reason(exc))
        finally:
            conn.client = None
            _kill_group(conn.process_group)
            conn.process_group = None
            log.info("MCP server %s stopped", conn.config.name)

    async def _transport(self, conn: _Connection, stack: contextlib.AsyncExitStack) -> Any:
        """An opened transport for the server (for stdio: its process is running once this returns)."""
        config = conn.config
        if config.url:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            # The SDK's recommended timeouts: 30 s to connect and write, 5 minutes to read a streamed answer.
            http = httpx2.AsyncClient(headers=dict(config.headers), timeout=httpx2.Timeout(30.0, read=300.0))
            await stack.enter_async_context(http)
            return streamable_http_client(config.url, http_client=http)
        from mcp.client.stdio import StdioServerParameters, stdio_client

        # Only the variables the SDK considers safe (HOME, PATH, USER ...) plus the configured env reach the
        # server: API keys in Hearth's own environment stay out of it.
        params = StdioServerParameters(
            command=config.command, args=list(config.args), env=dict(config.env) or None, cwd=config.cwd
        )
        # The SDK starts each server in a new session (its own process group) and kills that group when it
        # stops the server, but not when the server exited first: a crashed server's children would live on.
        # Learn the group here (spawns are serialised so the new child is this server) and kill it at the end.
        async with self._spawn_lock:
            before = _child_pids()
            streams = await stack.enter_async_context(stdio_client(params, errlog=conn.stderr))
            conn.process_group = next((pid for pid in _child_pids() - before if _leads_session(pid)), None)
        return _Opened(streams)

    async def _close_all(self) -> None:
        tasks = []
        for conn in self._connections.values():
            if conn.stop is not None:
                conn.stop.set()
            if conn.task is not None and not conn.task.done():
                tasks.append(conn.task)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for conn in self._connections.values():
            if conn.stderr is not None:
                with contextlib.suppress(OSError):
                    conn.stderr.close()
                    os.unlink(conn.stderr.name)
                conn.stderr = None


class _Opened(contextlib.AbstractAsyncContextManager):
    """Streams of a transport already entered, as the Transport the SDK's Client expects."""

    def __init__(self, streams: Any) -> None:
        self._streams = streams

    async def __aenter__(self) -> Any:
        return self._streams

    async def __aexit__(self, *_exc: object) -> None:
        return None


def _child_pids() -> set[int]:
    import psutil

    try:
        return {child.pid for child in psutil.Process().children()}
    except psutil.Error:
        return set()


def _leads_session(pid: int) -> bool:
    try:
        return hasattr(os, "getsid") and os.getsid(pid) == pid
    except OSError:
        return False


def _kill_group(group: int | None) -> None:
    """Kill what is left of a stopped stdio server's process group (POSIX; Windows uses a job object)."""
    if group is None or not hasattr(os, "killpg"):
        return
    import signal

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, 0)  # raises when the group is gone: nothing to do
        log.info("killing processes the MCP server left behind (group %d)", group)
        os.killpg(group, signal.SIGKILL)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]


def _reason(exc: BaseException) -> str:
    """One line for an exception, looking inside the exception groups anyio raises."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    message = getattr(exc, "message", None)  # MCPError: str() would be a tuple
    text = str(message if isinstance(message, str) else exc).strip()
    text = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _start_reason(config: McpServerConfig, exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, FileNotFoundError) and config.command:
        return f"the command {config.command!r} was not found (is it installed and on PATH?)"
    if isinstance(exc, asyncio.CancelledError):
        return "it was stopped while starting"
    if getattr(exc, "message", None) == "Connection closed":
        return "it exited before answering"
    return _reason(exc)
