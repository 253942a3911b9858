"""`hearth assistants list|show|import|export`: saved chat setups (built-in and your own)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli.terminal import warn
from app.core.errors import AssistantError

if TYPE_CHECKING:  # imported where used: assistants bring the template machinery (jinja2)
    from app.cli.context import CliContext
    from app.core.assistants import Assistant, AssistantLibrary


def register(subparsers: argparse._SubParsersAction) -> None:
    assistants = subparsers.add_parser("assistants", help="saved chat setups: list, show, import, export")
    actions = assistants.add_subparsers(dest="assistants_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the built-in assistants and yours")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    show = actions.add_parser("show", help="everything an assistant sets")
    show.add_argument("name", help="its name or id")
    show.add_argument("--json", action="store_true", help="the assistant as an export (importable)")
    show.set_defaults(handler=cmd_show)
    imp = actions.add_parser("import", help="add an assistant from a JSON file (from `export`)")
    imp.add_argument("file", type=Path)
    imp.set_defaults(handler=cmd_import)
    export = actions.add_parser("export", help="write an assistant as JSON (stdout, or a file with -o)")
    export.add_argument("name")
    export.add_argument("-o", "--output", type=Path, help="write to this file")
    export.set_defaults(handler=cmd_export)


def parse_value(text: str) -> tuple[str, str]:
    """argparse type for `--var NAME=VALUE`: a {{variable}} of an assistant's system prompt or of a saved prompt."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, e.g. 'target language=French'; got {text!r}")
    return name.strip(), value


def library(ctx: CliContext) -> AssistantLibrary:
    from app.core.assistants import AssistantLibrary

    return AssistantLibrary.default(ctx.paths)


def _warn_problems(assistants: AssistantLibrary) -> None:
    for problem in assistants.problems:
        warn(f"hearth: warning: {problem}")


def cmd_list(args: argparse.Namespace, ctx: CliContext) -> int:
    assistants = library(ctx)
    everyone = assistants.all()
    _warn_problems(assistants)
    if args.json:
        ctx.print_json([{**a.to_dict(), "builtin": a.builtin} for a in everyone])
        return 0
    width = max(len(a.name) for a in everyone)
    for assistant in everyone:
        tag = "built-in" if assistant.builtin else "yours   "
        ctx.print(f"{assistant.name:<{width}}  {tag}  {assistant.description}")
    ctx.print("\n`hearth assistants show NAME` shows one; `hearth chat MODEL --assistant NAME` chats with it.")
    return 0


def cmd_show(args: argparse.Namespace, ctx: CliContext) -> int:
    assistants = library(ctx)
    assistant = assistants.get(args.name)
    if args.json:
        ctx.write_data(assistants.export_text(assistant.id))
        return 0
    for line in describe(assistant):
        ctx.print(line)
    return 0


def describe(assistant: Assistant) -> list[str]:
    """The assistant as lines of text for a terminal."""
    from app.core.sampling import preset_label
    from app.core.structured import JSON_SCHEMA

    s = assistant.sampling
    lines = [
        f"{assistant.name}{'  (built-in: duplicate it in the app to change it)' if assistant.builtin else ''}",
        f"  id              {assistant.id}",
    ]
    if assistant.description:
        lines.append(f"  description     {assistant.description}")
    lines.append("  system prompt   " + (assistant.system_prompt.replace("\n", "\n                  ") or "(none)"))
    for name in assistant.variables:
        default = assistant.defaults.get(name)
        value = f"default {default!r}" if default is not None else "no default: give it with --var"
        lines.append(f"  variable        {{{{{name}}}}}  ({value})")
    lines += [
        f"  template        {assistant.template or 'automatic'}",
        f"  sampling        {preset_label(assistant.preset) if assistant.preset != 'custom' else 'custom'}: "
        f"temperature {s.temperature:g}, top-k {s.top_k}, top-p {s.top_p:g}, min-p {s.min_p:g}, "
        f"repeat penalty {s.repeat_penalty:g}, max tokens {s.max_tokens}"
        + (f", seed {s.seed}" if s.seed is not None else ""),
        f"  reply format    {assistant.reply_format.label}",
    ]
    if assistant.reply_format.kind == JSON_SCHEMA:
        schema = json.dumps(assistant.reply_format.schema, indent=2, ensure_ascii=False)
        lines.append("  schema          " + schema.replace("\n", "\n                  "))
    load = assistant.load
    if load.n_ctx is not None:
        context = load.n_ctx or "the model's own"
        lines.append(f"  context         {context}")
    if load.n_gpu_layers is not None:
        lines.append(f"  GPU layers      {_layers(load.n_gpu_layers)}")
    for adapter in load.loras:
        lines.append(f"  LoRA adapter    {adapter.path} (scale {adapter.scale:g})")
    if assistant.tools:
        lines.append(f"  tools           {', '.join(assistant.tools)}")
    if assistant.documents:
        lines.append(f"  documents       {', '.join(assistant.documents)}")
    return lines


def _layers(value: int) -> str:
    return {-2: "auto", -1: "all"}.get(value, str(value))


def cmd_import(args: argparse.Namespace, ctx: CliContext) -> int:
    assistant = library(ctx).import_file(args.file)
    ctx.print(f"Imported {assistant.name!r}.")
    return 0


def cmd_export(args: argparse.Namespace, ctx: CliContext) -> int:
    text = library(ctx).export_text(args.name)
    if args.output is None:
        ctx.write_data(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise AssistantError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"Exported to {args.output}", file=sys.stderr)
    return 0
