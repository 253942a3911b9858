"""`hearth render-prompt` and `hearth templates`: see exactly what a model will be sent."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.terminal import warn
from app.core.errors import ConfigError, TemplateError

if TYPE_CHECKING:  # the handlers import these: jinja2 and the template sandbox are no part of `hearth --help`
    from app.cli.context import CliContext
    from app.core.messages import ChatMessage


def register(subparsers: argparse._SubParsersAction) -> None:
    render = subparsers.add_parser("render-prompt", help="print the exact prompt text a conversation becomes")
    source = render.add_mutually_exclusive_group(required=True)
    source.add_argument("--template", metavar="NAME", help="a built-in family (see `hearth templates`)")
    source.add_argument("--model", metavar="PATH", type=Path, help="choose as Hearth would for this GGUF")
    source.add_argument("--jinja", metavar="FILE", type=Path, help="a Jinja chat template file")
    render.add_argument(
        "--messages",
        metavar="FILE",
        required=True,
        help='JSON list of messages in OpenAI\'s shapes, tool_calls and tool results included ("-": stdin)',
    )
    render.add_argument("--tools", metavar="FILE", help="JSON list of OpenAI tool definitions shown to the model")
    render.add_argument("--no-generation-prompt", action="store_true", help="leave out the assistant prompt")
    render.add_argument("--bos", default=None, help="BOS text for --template/--jinja (default: the family's)")
    render.add_argument("--eos", default=None, help="EOS text for --template/--jinja")
    render.add_argument("--json", action="store_true", help="print {template, source, reason, prompt, stop}")
    render.set_defaults(handler=cmd_render_prompt)
    listing = subparsers.add_parser("templates", help="list the built-in chat template families")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_templates)


def _read_json(spec: str, what: str) -> Any:
    try:
        raw = sys.stdin.read() if spec == "-" else Path(spec).read_text(encoding="utf-8")
        return json.loads(raw)
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read {what} from {spec}: {exc}") from None
    except ValueError as exc:
        raise TemplateError(f"{spec} is not valid JSON: {exc}") from None


def read_messages(spec: str) -> list[ChatMessage]:
    """Messages in OpenAI's shapes from a file ("-": stdin)."""
    from app.core.messages import messages_from_openai

    try:
        return messages_from_openai(_read_json(spec, "messages"))
    except ConfigError as exc:
        raise TemplateError(f"{spec}: {exc}") from None


def read_tools(spec: str | None) -> list[dict[str, Any]] | None:
    """OpenAI tool definitions from a file, checked (names, JSON schemas); None without --tools."""
    from app.core.tools import parse_openai_tools

    if spec is None:
        return None
    try:
        return [tool.to_openai() for tool in parse_openai_tools(_read_json(spec, "tools"))]
    except ConfigError as exc:
        raise TemplateError(f"{spec}: {exc}") from None


def cmd_render_prompt(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.gguf_info import inspect
    from app.core.templates import render_family, render_prompt, render_with_jinja_file

    if args.tools == "-" and args.messages == "-":
        raise TemplateError("only one of --messages and --tools can read stdin")
    messages = read_messages(args.messages)
    tools = read_tools(args.tools)
    generation = not args.no_generation_prompt
    if args.jinja:
        try:
            source = args.jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"cannot read {args.jinja}: {exc}") from None
        rendered = render_with_jinja_file(
            source,
            messages,
            add_generation_prompt=generation,
            bos_token=args.bos or "",
            eos_token=args.eos or "",
            tools=tools,
        )
    elif args.model:
        rendered = render_prompt(messages, inspect(args.model), add_generation_prompt=generation, tools=tools)
    else:
        rendered = render_family(
            args.template, messages, add_generation_prompt=generation, bos=args.bos, eos=args.eos, tools=tools
        )
    if rendered.choice.warning:
        warn(f"hearth: warning: {rendered.choice.warning}")
    if args.json:
        ctx.print_json(
            {
                "template": rendered.choice.label,
                "source": rendered.choice.source,
                "reason": rendered.choice.reason,
                "prompt": rendered.text,
                "stop": list(rendered.stop),
                "tool_syntax": rendered.tool_syntax,
            }
        )
    else:
        ctx.write_data(rendered.text)  # exactly the prompt: nothing added, no trailing newline
    return 0


def cmd_templates(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.templates import families

    if args.json:
        ctx.print_json(
            [
                {
                    "name": f.name,
                    "title": f.title,
                    "source": f.source,
                    "system": f.system_role,
                    "stop": list(f.stops),
                }
                for f in families()
            ]
        )
        return 0
    for f in families():
        system = "system prompt folded into the first turn" if f.system_role == "folded" else "system role"
        ctx.print(f"{f.name:<17} {f.title}  [{system}]")
        ctx.print(f"{'':<17} from: {f.source}")
    ctx.print("\nembedded          the model's own Jinja template (used when present and valid)")
    return 0
