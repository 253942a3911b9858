"""Tools a model may call: their definitions (OpenAI's shape), results, and the set one conversation may use.

A ToolSpec is what the model is shown (name, description, JSON schema of the arguments) and what its calls
are validated against; `source` says who runs it ("builtin", "mcp:<server>", or "client" for tools an API
client defines and runs itself). A ToolBox gathers the built-in tools the user turned on and the tools of
the MCP servers the conversation uses, and runs a call on whichever owns it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.core.errors import ConfigError, ToolError
from app.core.messages import ToolCall

if TYPE_CHECKING:
    from app.core.mcp_client import McpHub

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DEFAULT_CALL_TIMEOUT = 60.0


@dataclass(frozen=True)
class ToolSpec:
    """One tool as the model sees it: OpenAI's {"type": "function", "function": {...}}."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    source: str = "builtin"

    def to_openai(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "description": self.description}
        function["parameters"] = dict(self.parameters)
        return {"type": "function", "function": function}

    @classmethod
    def from_openai(cls, data: Any, *, source: str = "client", where: str = "tool") -> ToolSpec:
        """Read and check one OpenAI tool definition; ConfigError saying what is wrong."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} must be an object like {{'type': 'function', 'function': {{...}}}}")
        if data.get("type", "function") != "function":
            raise ConfigError(f"{where}: only tools of type 'function' are supported")
        function = data.get("function", data)  # also accept the bare function object
        if not isinstance(function, Mapping):
            raise ConfigError(f"{where}.function must be an object with a 'name'")
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{where}: the name must be 1-64 letters, digits, '_', '.' or '-' (got {name!r})")
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise ConfigError(f"{where} ({name}): the description must be text")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        check_schema(parameters, f"{where} ({name})")
        return cls(name, description, parameters, source)


def check_schema(schema: Any, where: str) -> None:
    """A tool's argument schema must be a valid JSON schema for an object (calls are validated against it)."""
    import jsonschema  # lazy: only needed once tools are in play

    if not isinstance(schema, Mapping):
        raise ConfigError(f"{where}: the parameters must be a JSON schema object")
    if schema.get("type", "object") != "object":
        raise ConfigError(f"{where}: the parameters schema must describe an object (type 'object')")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"{where}: invalid parameters schema: {exc.message}") from None


def parse_openai_tools(data: Any, *, source: str = "client") -> list[ToolSpec]:
    """The `tools` of a request or a TOOLS.json file: a list of OpenAI tool definitions, names unique."""
    if not isinstance(data, list):
        raise ConfigError("tools must be a JSON list of {'type': 'function', 'function': {...}} objects")
    specs = [ToolSpec.from_openai(item, source=source, where=f"tools[{i}]") for i, item in enumerate(data)]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"tools: the name {duplicates[0]!r} is used twice")
    return specs


@dataclass(frozen=True)
class ToolChoice:
    """OpenAI's tool_choice: "none" (no tools shown), "auto", "required" (some call), or one named tool."""

    mode: str = "auto"  # "none" | "auto" | "required" | "named"
    name: str | None = None

    @property
    def forces_call(self) -> bool:
        return self.mode in ("required", "named")


def parse_tool_choice(value: Any, specs: Sequence[ToolSpec]) -> ToolChoice:
    """ "auto" / "none" / "required" / {"type": "function", "function": {"name": ...}} (or a bare name)."""
    if value is None:
        return ToolChoice()
    if isinstance(value, str) and value in ("none", "auto", "required"):
        return ToolChoice(value)
    name = value if isinstance(value, str) else None
    if isinstance(value, Mapping):
        function = value.get("function")
        name = function.get("name") if isinstance(function, Mapping) else value.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(
            "tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'function': {'name': ...}}"
        )
    if name not in {s.name for s in specs}:
        raise ConfigError(f"tool_choice names {name!r}, which is not among the tools")
    return ToolChoice("named", name)


@dataclass(frozen=True)
class ToolResult:
    """What a tool gave back, as the text the model reads; is_error when it failed (the model is told so)."""

    text: str
    is_error: bool = False


BuiltinFunction = Callable[[dict[str, Any]], str]


class ToolBox:
    """The tools one conversation may use: built-in ones turned on, plus the tools of its MCP servers.

    Thread-safe: specs() and call() may be called from any thread (the MCP hub owns its own event loop).
    An MCP server that cannot start is left out of specs() and named in problems(); the rest stay usable.
    """

    def __init__(
        self,
        builtins: Iterable[tuple[ToolSpec, BuiltinFunction]] = (),
        mcp: McpHub | None = None,
        *,
        extra: Iterable[ToolSpec] = (),
    ) -> None:
        self._builtins = {spec.name: (spec, function) for spec, function in builtins}
        self._extra = {spec.name: spec for spec in extra}  # defined by an API client, run by it
        self.mcp = mcp
        self._lock = threading.Lock()
        self._mcp_specs: dict[str, tuple[ToolSpec, str, str]] | None = None  # name -> (spec, server, tool name)

    def specs(self) -> list[ToolSpec]:
        """Every tool available now (MCP servers are started on the first call)."""
        return [entry[0] for entry in self._catalogue().values()]

    def spec(self, name: str) -> ToolSpec | None:
        entry = self._catalogue().get(name)
        return entry[0] if entry else None

    def problems(self) -> dict[str, str]:
        """MCP servers that failed, with the reason (empty when all are fine or there are none)."""
        return self.mcp.errors() if self.mcp else {}

    def refresh(self) -> None:
        """Forget the MCP tool list (a server was restarted or changed its tools)."""
        with self._lock:
            self._mcp_specs = None

    def _catalogue(self) -> dict[str, tuple[ToolSpec, str, str]]:
        with self._lock:
            if self._mcp_specs is None:
                self._mcp_specs = {}
                if self.mcp is not None:
                    taken = set(self._builtins) | set(self._extra)
                    for tool in self.mcp.tools():
                        name = tool.name if tool.name not in taken else f"{tool.server}_{tool.name}"[:64]
                        taken.add(name)
                        spec = ToolSpec(name, tool.description, tool.input_schema, f"mcp:{tool.server}")
                        self._mcp_specs[name] = (spec, tool.server, tool.name)
            catalogue = {name: (spec, "builtin", name) for name, (spec, _f) in self._builtins.items()}
            catalogue.update({name: (spec, "client", name) for name, spec in self._extra.items()})
            catalogue.update(self._mcp_specs)
            return catalogue

    def call(
        self, call: ToolCall, *, timeout: float = DEFAULT_CALL_TIMEOUT, cancel: threading.Event | None = None
    ) -> ToolResult:
        """Run one (already validated and approved) call. Never raises for the tool's own failures: a server
        that crashed, timed out or refused gives an error result the model and the user both see."""
        entry = self._catalogue().get(call.name)
        if entry is None:
            return ToolResult(f"Error: there is no tool named {call.name!r}", True)
        _spec, owner, tool_name = entry
        arguments = call.arguments_dict()
        try:
            if owner == "builtin":
                return ToolResult(self._builtins[call.name][1](arguments))
            if owner == "client":
                raise ToolError(f"{call.name} is run by the client that defined it, not by Hearth")
            assert self.mcp is not None
            return self.mcp.call_tool(owner, tool_name, arguments, timeout=timeout, cancel=cancel)
        except ToolError as exc:
            return ToolResult(f"Error: {exc}", True)
