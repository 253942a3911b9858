"""`hearth tools`: list and try tools (MCP servers, built-ins); the terminal side of tools in `hearth chat`.

For `hearth chat MODEL --mcp CONFIG.json [--allow-tools NAME,...]`: add_tool_args(parser) adds the options,
ChatTools.from_args(args) opens what they name, ChatTools.host_reply(client, ...) makes one reply through the
engine host and ChatTools.run(reply, history) runs it in the terminal, asking for approval there
(terminal_approval) unless --allow-tools already allows the tool.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from app.cli.terminal import for_stream, safe, warn
from app.core.builtin_tools import BUILTIN_TOOLS
from app.core.errors import ConfigError, HearthError

if TYPE_CHECKING:  # imported where used: the tool loop and MCP client are no part of `hearth --help`
    from app.cli.context import CliContext
    from app.core.host import HostClient
    from app.core.messages import ChatMessage, ToolCall
    from app.core.tool_loop import Approval, ApproveFn, LoopEvent, LoopSettings
    from app.core.tool_reply import HostToolReply
    from app.core.tools import ToolBox, ToolSpec


def register(subparsers: argparse._SubParsersAction) -> None:
    tools = subparsers.add_parser("tools", help="list and try the tools a model can be given (MCP servers, built-ins)")
    actions = tools.add_subparsers(dest="tools_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="start the configured MCP servers and list their tools")
    _source_args(listing)
    listing.add_argument("--json", action="store_true", help="print the tools in OpenAI's shape, with errors")
    listing.set_defaults(handler=cmd_list)
    call = actions.add_parser("call", help="run one tool yourself (no model involved)")
    call.add_argument("name", help="the tool's name as `hearth tools list` shows it")
    call.add_argument("--args", default="{}", metavar="JSON", help="the arguments as a JSON object")
    call.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the result")
    _source_args(call)
    call.set_defaults(handler=cmd_call)


def _source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mcp", type=Path, metavar="CONFIG.json", help='MCP servers: {"mcpServers": {...}}')
    parser.add_argument(
        "--builtin",
        default="",
        metavar="NAMES",
        help=f"built-in tools to turn on, comma-separated ({', '.join(BUILTIN_TOOLS)}; 'all')",
    )


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def open_toolbox(mcp: Path | None, builtin: str) -> ToolBox:
    """The tools the options name (MCP servers are started only when their tools are first needed)."""
    from app.core.builtin_tools import builtin_tools
    from app.core.mcp_client import McpHub, read_mcp_config
    from app.core.tools import ToolBox

    names = list(BUILTIN_TOOLS) if builtin.strip() == "all" else _names(builtin)
    hub = McpHub(read_mcp_config(mcp)) if mcp else None
    return ToolBox(builtin_tools(names), hub)


def cmd_list(args: argparse.Namespace, ctx: CliContext) -> int:
    if not args.mcp and not args.builtin:
        raise ConfigError("name the tools to list: --mcp CONFIG.json and/or --builtin NAMES")
    box = open_toolbox(args.mcp, args.builtin)
    try:
        specs = box.specs()
        problems = box.problems()
    finally:
        if box.mcp:
            box.mcp.close()
    if args.json:
        ctx.print_json({"tools": [_listing(s) for s in specs], "errors": problems})
    else:
        for source in dict.fromkeys(s.source for s in specs):
            ctx.print(_source_title(source))
            for spec in (s for s in specs if s.source == source):
                ctx.print(f"  {spec.name}{_signature(spec)}")
                if spec.description:
                    ctx.print(f"      {_first_line(spec.description)}")
        if not specs:
            ctx.print("No tools.")
    for problem in problems.values():
        warn(f"hearth: {problem}")
    return 2 if problems else 0


def _listing(spec: ToolSpec) -> dict[str, Any]:
    return {**spec.to_openai(), "source": spec.source}


def _source_title(source: str) -> str:
    return "Built-in tools:" if source == "builtin" else f"MCP server {source.removeprefix('mcp:')!r}:"


def _signature(spec: ToolSpec) -> str:
    properties = spec.parameters.get("properties") or {}
    required = set(spec.parameters.get("required") or ())
    parts = [f"{name}{'' if name in required else '?'}: {_type(schema)}" for name, schema in properties.items()]
    return f"({', '.join(parts)})"


def _type(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "any"
    if "enum" in schema:
        return "|".join(json.dumps(v) for v in schema["enum"][:5])
    kind = schema.get("type", "any")
    return "|".join(kind) if isinstance(kind, list) else str(kind)


def _first_line(text: str, limit: int = 110) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def cmd_call(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.messages import ToolCall

    try:
        arguments = json.loads(args.args)
    except ValueError as exc:
        raise ConfigError(f"--args is not valid JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise ConfigError('--args must be a JSON object, e.g. \'{"timezone": "Europe/Paris"}\'')
    box = open_toolbox(args.mcp, args.builtin)
    try:
        if box.spec(args.name) is None:
            problems = "; ".join(box.problems().values())
            raise ConfigError(f"no tool named {args.name!r}" + (f" ({problems})" if problems else ""))
        result = box.call(ToolCall("cli", args.name, json.dumps(arguments)), timeout=args.timeout)
    finally:
        if box.mcp:
            box.mcp.close()
    ctx.print(result.text)
    return 1 if result.is_error else 0


# ---- tools in `hearth chat` ---------------------------------------------------------------------------------


def add_tool_args(parser: argparse.ArgumentParser) -> None:
    """The tool options of `hearth chat`."""
    group = parser.add_argument_group("tools")
    group.add_argument("--mcp", type=Path, metavar="CONFIG.json", help="give the model the tools of these MCP servers")
    group.add_argument("--tools-builtin", default="", metavar="NAMES", help="built-in tools: current_time, calculator")
    group.add_argument(
        "--allow-tools", default="", metavar="NAME,...", help="run these tools without asking ('all': every tool)"
    )
    group.add_argument(
        "--tool-choice", default="auto", help="auto (default), required (the first reply must call a tool), or a name"
    )
    group.add_argument("--max-tool-rounds", type=int, default=5, help="model turns per reply (default 5)")


def terminal_approval(stdin: TextIO | None = None, out: TextIO | None = None) -> ApproveFn:
    """Ask on the terminal before a tool runs: y = once, a = always (this tool, this chat), anything else = no.
    End of input (a script, a closed pipe) means no."""
    from app.core.tool_loop import Approval

    def approve(call: ToolCall, spec: ToolSpec) -> Approval:
        source = "built-in" if spec.source == "builtin" else f"MCP server {spec.source.removeprefix('mcp:')!r}"
        arguments = json.dumps(call.arguments_dict(), ensure_ascii=False)
        stream_out = out or sys.stderr
        # The call is the model's text and the source an MCP server's name: shown safe on a terminal.
        stream_out.write(safe(f"\nThe model wants to run {call.name} ({source}) with {arguments}\n"))
        stream_out.write("Allow? [y] once, [a] always in this chat, [N] no: ")
        stream_out.flush()
        try:
            line = (stdin or sys.stdin).readline()
        except KeyboardInterrupt:  # Ctrl-C at the question: no (and the reply stops)
            stream_out.write("\n")
            return Approval.DENY
        answer = line.strip().lower()
        if not line:
            stream_out.write("\n")
        if answer in ("y", "yes"):
            return Approval.ONCE
        if answer in ("a", "always"):
            return Approval.ALWAYS
        return Approval.DENY

    return approve


class ChatTools:
    """The tools of one terminal chat: the toolbox, what is allowed, the loop settings. close() when done."""

    def __init__(
        self,
        toolbox: ToolBox,
        *,
        allowed: Sequence[str] = (),
        settings: LoopSettings | None = None,
        approve: ApproveFn | None = None,
    ) -> None:
        from app.core.tool_loop import ApprovalPolicy, LoopSettings

        self.toolbox = toolbox
        self.settings = settings or LoopSettings()
        self.approve = approve or terminal_approval()
        names = {s.name for s in toolbox.specs()} if "all" in allowed else set(allowed)
        self.policy = ApprovalPolicy(names)
        self.asking = False  # an approval question is waiting for the terminal

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ChatTools | None:
        """None when the chat was started without tools."""
        from app.core.tool_loop import LoopSettings
        from app.core.tools import ToolChoice, parse_tool_choice

        if not args.mcp and not args.tools_builtin:
            if args.allow_tools or args.tool_choice != "auto":
                raise ConfigError("--allow-tools and --tool-choice need tools: add --mcp or --tools-builtin")
            return None
        if args.max_tool_rounds < 1:
            raise ConfigError("--max-tool-rounds must be at least 1")
        toolbox = open_toolbox(args.mcp, args.tools_builtin)
        try:
            specs = toolbox.specs()
            for problem in toolbox.problems().values():
                warn(f"hearth: {problem}")  # the chat goes on without that server
            choice = parse_tool_choice(args.tool_choice, specs) if args.tool_choice else ToolChoice()
            warn(f"Tools: {', '.join(s.name for s in specs) or 'none available'}")
            settings = LoopSettings(max_rounds=args.max_tool_rounds, tool_choice=choice)
            return cls(toolbox, allowed=_names(args.allow_tools), settings=settings)
        except HearthError:
            if toolbox.mcp:
                toolbox.mcp.close()
            raise

    def close(self) -> None:
        if self.toolbox.mcp:
            self.toolbox.mcp.close()

    def names(self) -> list[str]:
        """What the conversation has turned on, as its meta "tools" keeps it: built-in tools and MCP servers."""
        builtins = [s.name for s in self.toolbox.specs() if s.source == "builtin"]
        servers = list(self.toolbox.mcp.servers) if self.toolbox.mcp else []
        return [*builtins, *servers]

    def host_reply(self, client: HostClient, **options: Any) -> HostToolReply:
        """One reply with these tools through the engine host (options: see HostToolReply)."""
        from app.core.tool_reply import HostToolReply

        return HostToolReply(client, self.toolbox, self._ask, policy=self.policy, settings=self.settings, **options)

    def _ask(self, call: ToolCall, spec: ToolSpec) -> Approval:
        self.asking = True
        try:
            return self.approve(call, spec)
        finally:
            self.asking = False

    def run(
        self, reply: HostToolReply, history: list[ChatMessage], *, out: TextIO | None = None, err: TextIO | None = None
    ) -> list[ChatMessage]:
        """Run the reply in the terminal: prose to out, tool activity to err, Ctrl-C stops (and, at an approval
        question, answers no). Returns the messages the reply added (assistant turns and tool results)."""
        from app.core.tool_loop import LoopFinished

        out, err = out or sys.stdout, err or sys.stderr

        def on_ctrl_c(*_args: object) -> None:
            reply.stop()
            if self.asking:
                raise KeyboardInterrupt  # out of the approval question's readline

        previous = signal.signal(signal.SIGINT, on_ctrl_c) if _main_thread() else None
        added: list[ChatMessage] = []
        try:
            for event in reply.run(history):
                print_event(event, out, err)
                if isinstance(event, LoopFinished):
                    added = list(event.messages)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        return added


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def print_event(event: LoopEvent, out: TextIO, err: TextIO) -> None:
    """How the terminal shows the loop: the reply's prose on out, tool activity on err."""
    from app.core.tool_loop import AssistantTurn, CallStarting, LoopFinished, ReplyText, ToolRunning, ToolTurn

    if isinstance(event, ReplyText):
        out.write(for_stream(event.text, out))  # a reply may hold escape sequences
        out.flush()
    elif isinstance(event, CallStarting):
        err.write("\n[calling a tool…]\n")
    elif isinstance(event, AssistantTurn):
        out.write("\n")
        for note in event.notes:
            err.write(safe(f"({note})\n"))
    elif isinstance(event, ToolRunning):
        err.write(f"[running {event.call.name} {json.dumps(event.call.arguments_dict(), ensure_ascii=False)}]\n")
    elif isinstance(event, ToolTurn):
        label = {"ran": "result", "failed": "error", "denied": "denied", "stopped": "not run"}[event.outcome]
        text = event.message.content
        err.write(f"[{event.call.name} {label}: {text if len(text) <= 300 else text[:300] + '…'}]\n")
    elif isinstance(event, LoopFinished) and event.reason != "answered":
        err.write({"stopped": "(stopped)\n", "round_limit": "(tool round limit reached)\n"}[event.reason])
    err.flush()
