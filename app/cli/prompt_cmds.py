"""`hearth prompts list|show|import|export`: the prompt library (reusable prompts with {{variables}})."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli.assistant_cmds import parse_value
from app.cli.terminal import warn
from app.core.errors import PromptError

if TYPE_CHECKING:  # imported where used: every `hearth` command imports this module for its parser
    from app.cli.context import CliContext
    from app.core.prompt_library import PromptLibrary


def register(subparsers: argparse._SubParsersAction) -> None:
    prompts = subparsers.add_parser("prompts", help="the prompt library: list, show, import, export")
    actions = prompts.add_subparsers(dest="prompts_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the built-in prompts and yours")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    show = actions.add_parser("show", help="a prompt's text and variables (or the text filled in, with --var)")
    show.add_argument("name", help="its name or id")
    show.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=parse_value,
        help="fill a variable and print the finished prompt (repeat for each)",
    )
    show.set_defaults(handler=cmd_show)
    imp = actions.add_parser("import", help="add prompts from a JSON file (from `export`, or a list of prompts)")
    imp.add_argument("file", type=Path)
    imp.set_defaults(handler=cmd_import)
    export = actions.add_parser("export", help="write prompts as JSON (default: all of yours)")
    export.add_argument("names", nargs="*", metavar="NAME", help="only these prompts (a built-in too)")
    export.add_argument("-o", "--output", type=Path, help="write to this file")
    export.set_defaults(handler=cmd_export)


def _library(ctx: CliContext) -> PromptLibrary:
    from app.core.prompt_library import PromptLibrary

    return PromptLibrary.default(ctx.paths)


def cmd_list(args: argparse.Namespace, ctx: CliContext) -> int:
    library = _library(ctx)
    prompts = library.all()
    for problem in library.problems:
        warn(f"hearth: warning: {problem}")
    if args.json:
        ctx.print_json([{**p.to_dict(), "builtin": p.builtin, "variables": list(p.variables)} for p in prompts])
        return 0
    width = max(len(p.name) for p in prompts)
    for prompt in prompts:
        tag = "built-in" if prompt.builtin else "yours   "
        fields = ", ".join(prompt.variables)
        ctx.print(f"{prompt.name:<{width}}  {tag}  {prompt.description}" + (f"  [{fields}]" if fields else ""))
    return 0


def cmd_show(args: argparse.Namespace, ctx: CliContext) -> int:
    prompt = _library(ctx).get(args.name)
    if args.var:
        ctx.print(prompt.render(dict(args.var)))
        return 0
    ctx.print(f"{prompt.name}{'  (built-in)' if prompt.builtin else ''}")
    if prompt.description:
        ctx.print(f"  {prompt.description}")
    for name in prompt.variables:
        default = prompt.defaults.get(name)
        ctx.print(f"  {{{{{name}}}}}" + (f"  default {default!r}" if default is not None else ""))
    ctx.print("")
    ctx.print(prompt.text)
    return 0


def cmd_import(args: argparse.Namespace, ctx: CliContext) -> int:
    added = _library(ctx).import_file(args.file)
    ctx.print(f"Imported {len(added)} prompt{'s' if len(added) != 1 else ''}: {', '.join(p.name for p in added)}")
    return 0


def cmd_export(args: argparse.Namespace, ctx: CliContext) -> int:
    library = _library(ctx)
    if not args.names and not library.user_prompts():
        raise PromptError("you have no prompts of your own to export; name a built-in to export it")
    text = library.export_text(args.names or None)
    if args.output is None:
        ctx.write_data(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"Exported to {args.output}", file=sys.stderr)
    return 0
