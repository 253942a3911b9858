"""Which tools a conversation has: the app's MCP configuration file, the names a conversation turns on,
and the ToolBox built from them.

The MCP servers are configured once, in `mcp.json` in the data folder (the usual {"mcpServers": {...}}
file, so a Claude Desktop or LM Studio configuration can be pasted in). A conversation (or an assistant:
app/core/assistants.py keeps the same list) turns tools on by name in its meta "tools": an MCP server's
name gives the model every tool of that server, a built-in tool's name that one tool. Nothing is on until
the user turns it on.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.builtin_tools import BUILTIN_TOOLS, builtin_tools
from app.core.errors import ConfigError
from app.core.mcp_client import McpServerConfig, McpTool, parse_mcp_config
from app.core.tools import ToolBox, ToolResult

if TYPE_CHECKING:
    import threading

    from app.core.mcp_client import McpHub
    from app.core.paths import AppPaths

TOOLS_META = "tools"  # conversation (and assistant) meta: the names of the tools and MCP servers turned on
MCP_FILE = "mcp.json"
MAX_CONFIG_BYTES = 1_000_000
EXAMPLE_CONFIG = """{
  "mcpServers": {
  }
}
"""


def mcp_config_path(paths: AppPaths) -> Path:
    return paths.data_dir / MCP_FILE


def check_mcp_text(text: str) -> list[McpServerConfig]:
    """The servers a configuration text defines; ConfigError with the line and column of a JSON mistake."""
    if len(text.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the MCP configuration is larger than {MAX_CONFIG_BYTES:,} bytes")
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    servers = parse_mcp_config(data)
    for server in servers:
        if server.name in BUILTIN_TOOLS:
            raise ConfigError(
                f"the MCP configuration: server {server.name!r} has the name of a built-in tool; rename it"
            )
    return servers


def read_mcp_text(path: Path) -> str:
    """The configuration file's text ('' when there is none yet)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def load_mcp_servers(path: Path) -> list[McpServerConfig]:
    """The servers configured in the file ([] when there is none); ConfigError when it is broken."""
    try:
        return check_mcp_text(read_mcp_text(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def save_mcp_text(path: Path, text: str) -> list[McpServerConfig]:
    """Check, then write the configuration atomically (a refused text changes nothing)."""
    servers = check_mcp_text(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".mcp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text if text.endswith("\n") or not text else text + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigError(f"cannot save {path}: {exc.strerror or exc}") from None
    return servers


def enabled_names(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """The tools and servers a conversation's (or an assistant's) meta turns on, in order, once each."""
    names = meta.get(TOOLS_META)
    if not isinstance(names, list):
        return ()
    return tuple(dict.fromkeys(n.strip() for n in names if isinstance(n, str) and n.strip()))


def toolbox_for(names: Iterable[str], hub: McpHub | None) -> ToolBox:
    """The ToolBox of these names: built-in tools by name, and every tool of each named MCP server. Names
    that are neither (a server removed from the configuration) are ignored."""
    wanted = list(dict.fromkeys(names))
    builtins = [name for name in wanted if name in BUILTIN_TOOLS]
    servers = [name for name in wanted if hub is not None and name in hub.servers]
    view = McpView(hub, servers) if hub is not None and servers else None
    return ToolBox(builtin_tools(builtins), view)  # type: ignore[arg-type]  # McpView is the hub's facade


class McpView:
    """Some servers of a shared McpHub, seen as a hub of their own (a conversation's servers). The hub is
    owned elsewhere: close() here does nothing."""

    def __init__(self, hub: McpHub, servers: Sequence[str]) -> None:
        self.hub = hub
        self.servers = {name: hub.servers[name] for name in servers if name in hub.servers}

    def tools(self) -> list[McpTool]:
        return self.hub.tools(self.servers)

    def errors(self) -> dict[str, str]:
        return {name: error for name, error in self.hub.errors().items() if name in self.servers}

    def call_tool(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout: float = 60.0,
        cancel: threading.Event | None = None,
    ) -> ToolResult:
        return self.hub.call_tool(server, tool, arguments, timeout=timeout, cancel=cancel)

    def close(self) -> None:
        return None
