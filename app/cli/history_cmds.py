"""`hearth history`: list, show, search, export, import (and delete/restore/recover) saved conversations."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.errors import StoreError

if TYPE_CHECKING:  # imported where used: every `hearth` command imports this module for its parser
    from app.cli.context import CliContext
    from app.core.store import Store


def register(subparsers: argparse._SubParsersAction) -> None:
    history = subparsers.add_parser("history", help="your saved conversations")
    actions = history.add_subparsers(dest="history_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the most recent conversations")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--deleted", action="store_true", help="list the trash (restorable for 30 days)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    show = actions.add_parser("show", help="print one conversation")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="everything, branches included")
    show.set_defaults(handler=cmd_show)
    search = actions.add_parser("search", help="full-text search over every message")
    search.add_argument("text")
    search.add_argument("--json", action="store_true")
    search.set_defaults(handler=cmd_search)
    export = actions.add_parser("export", help="export one conversation (or all) as Markdown or JSON")
    export.add_argument("id", type=int, nargs="?")
    export.add_argument("--format", choices=["md", "json"], required=True)
    export.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    export.set_defaults(handler=cmd_export)
    imp = actions.add_parser("import", help="import a Hearth JSON export")
    imp.add_argument("file", type=Path)
    imp.set_defaults(handler=cmd_import)
    delete = actions.add_parser("delete", help="move a conversation to the trash")
    delete.add_argument("id", type=int)
    delete.set_defaults(handler=cmd_delete)
    restore = actions.add_parser("restore", help="bring a conversation back from the trash")
    restore.add_argument("id", type=int)
    restore.set_defaults(handler=cmd_restore)
    recover = actions.add_parser("recover", help="copy what still reads from a damaged history file")
    recover.add_argument("file", type=Path)
    recover.set_defaults(handler=cmd_recover)


def open_history(ctx: CliContext) -> Store:
    from app.core.store_recover import open_store

    result = open_store(ctx.paths.history_db)
    if result.message:
        print(f"hearth: {result.message}", file=sys.stderr)
    return result.store


def _when(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):  # no calendar here can show it: never stop the listing
        return "????-??-?? ??:??"


def cmd_list(args: argparse.Namespace, ctx: CliContext) -> int:
    with open_history(ctx) as store:
        conversations = store.list_conversations(args.limit, deleted=args.deleted)
        if args.json:
            ctx.print_json(
                [
                    {
                        "id": c.id,
                        "title": c.title,
                        "updated_at": c.updated_at,
                        "pinned": c.pinned,
                        "model_path": c.model_path,
                    }
                    for c in conversations
                ]
            )
            return 0
        if not conversations:
            ctx.print("No conversations yet." if not args.deleted else "The trash is empty.")
        for c in conversations:
            pin = "*" if c.pinned else " "
            ctx.print(f"{c.id:>6} {pin} {_when(c.updated_at)}  {c.title}")
    return 0


def cmd_show(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.store_export import conversation_dict, export_markdown

    with open_history(ctx) as store:
        if args.json:
            ctx.print_json(conversation_dict(store, args.id))
        else:
            ctx.write(export_markdown(store, [args.id]))
    return 0


def cmd_search(args: argparse.Namespace, ctx: CliContext) -> int:
    with open_history(ctx) as store:
        hits = store.search(args.text)
        if args.json:
            ctx.print_json([hit.__dict__ for hit in hits])
            return 0
        if not hits:
            ctx.print(f"Nothing found for {args.text!r}.")
        for hit in hits:
            ctx.print(f"{hit.conversation_id:>6}  {hit.conversation_title}\n        {hit.role}: {hit.snippet}")
    return 0


def cmd_export(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.store_export import export_json, export_markdown

    with open_history(ctx) as store:
        if args.id is not None:
            store.conversation(args.id)  # a clear error for an unknown id
            ids = [args.id]
        else:
            ids = [c.id for c in store.list_conversations(limit=-1)]
        text = export_json(store, ids) if args.format == "json" else export_markdown(store, ids)
    if args.output:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise StoreError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        print(f"Exported {len(ids)} conversation(s) to {args.output}", file=sys.stderr)
    else:
        ctx.write_data(text)
    return 0


def cmd_import(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.store_export import import_json

    with open_history(ctx) as store:
        added, skipped = import_json(store, args.file)
    ctx.print(f"Imported {added} conversation(s)" + (f"; {skipped} already present" if skipped else ""))
    return 0


def cmd_delete(args: argparse.Namespace, ctx: CliContext) -> int:
    with open_history(ctx) as store:
        title = store.conversation(args.id).title
        store.delete(args.id)
    ctx.print(f"Moved {title!r} to the trash (`hearth history restore {args.id}` brings it back).")
    return 0


def cmd_restore(args: argparse.Namespace, ctx: CliContext) -> int:
    with open_history(ctx) as store:
        ctx.print(f"Restored {store.restore(args.id).title!r}.")
    return 0


def cmd_recover(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.store_recover import salvage

    if not args.file.is_file():
        raise StoreError(f"{args.file}: no such file")
    with open_history(ctx) as store:
        report = salvage(args.file, store)
    ctx.print(report.summary().capitalize() + ".")
    return 0
