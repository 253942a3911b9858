"""`hearth info` and `hearth models`: what a GGUF file is, and what the library holds."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from app.cli.terminal import safe
from app.core.errors import LibraryError

if TYPE_CHECKING:  # imported where used: every `hearth` command imports this module for its parser
    from app.cli.context import CliContext
    from app.core.gguf_info import ModelInfo
    from app.core.library import LibraryEntry


def register(subparsers: argparse._SubParsersAction) -> None:
    info = subparsers.add_parser("info", help="show what a GGUF file is, without loading it")
    info.add_argument("path", help="a .gguf file (any part of a split model)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--tensors", action="store_true", help="include every tensor (name, type, shape, bytes)")
    info.set_defaults(handler=cmd_info)

    models = subparsers.add_parser("models", help="list the model library (or import/delete models)")
    models.add_argument("--json", action="store_true", help="print a JSON list")
    models.set_defaults(handler=cmd_models_list)
    actions = models.add_subparsers(dest="models_action", metavar="ACTION")
    add = actions.add_parser("import", help="copy (or move or link) a GGUF file into Hearth's models folder")
    add.add_argument("path")
    mode = add.add_mutually_exclusive_group()
    # The values of app.core.library.ImportMode, which cmd_models_import makes of them.
    mode.add_argument("--move", action="store_const", const="move", dest="mode")
    mode.add_argument("--link", action="store_const", const="link", dest="mode")
    add.set_defaults(handler=cmd_models_import, mode="copy")
    delete = actions.add_parser("delete", help="delete a model from Hearth's folders (asks first)")
    delete.add_argument("path")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=cmd_models_delete)


def info_lines(info: ModelInfo) -> list[str]:
    """Human-readable summary of a ModelInfo, shared by `hearth info` and the GUI's details view."""
    from app.core.gguf_info import format_bytes, format_params

    heads = f"{info.head_count} (KV {info.head_count_kv})" if info.head_count else "?"
    template = "embedded" if info.chat_template else "none (Hearth picks a built-in family)"
    if info.chat_templates:
        template += f"; variants: {', '.join(sorted(info.chat_templates))}"
    rows: list[tuple[str, Any]] = [
        ("architecture", info.architecture),
        ("type", info.model_type),
        ("parameters", f"{format_params(info.parameters)} ({info.parameters:,})"),
        ("quantization", info.file_type + (" (guessed)" if info.file_type_guessed else "")),
        (
            "file size",
            format_bytes(info.size_bytes) + (f" in {len(info.parts)} parts" if info.is_split else ""),
        ),
        ("context length", info.context_length),
        ("layers", info.block_count),
        ("embedding", info.embedding_length),
        ("heads", heads),
        ("sliding window", info.sliding_window),
        ("experts", info.expert_count),
        ("vocabulary", f"{info.vocab_size} ({info.tokenizer_model})" if info.vocab_size else None),
        ("BOS / EOS", f"{info.bos_token!r} ({info.bos_token_id}) / {info.eos_token!r} ({info.eos_token_id})"),
        ("EOT", f"{info.eot_token!r} ({info.eot_token_id})" if info.eot_token_id is not None else None),
        ("chat template", template),
        ("GGUF version", info.gguf_version),
    ]
    title = info.display_name + (f"  [{info.size_label}]" if info.size_label else "")
    return [title, f"  {info.path}"] + [f"  {k:<15} {v}" for k, v in rows if v is not None]


def cmd_info(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.gguf_info import format_bytes, inspect

    info = inspect(args.path)
    if args.json:
        data = info.to_dict(with_tensors=args.tensors)
        data["tensor_count"] = len(info.tensors)
        ctx.print_json(data)
    else:
        for line in info_lines(info):
            ctx.print(line)
        if args.tensors:
            for t in info.tensors:
                ctx.print(f"  {t.name:<40} {t.ggml_type:<7} {list(t.shape)!s:<24} {format_bytes(t.n_bytes)}")
    return 0


def entry_row(entry: LibraryEntry) -> str:
    from app.core.gguf_info import format_bytes, format_params

    if entry.info is None:
        return f"{'BROKEN':<8} {entry.path.name}  -- {entry.error}"
    info = entry.info
    ctx_len = f"{info.context_length // 1024}k" if info.context_length and info.context_length >= 1024 else "?"
    return (
        f"{info.file_type:<8} {format_params(info.parameters):>6} {format_bytes(entry.size_bytes):>10} "
        f"{ctx_len:>5}  {info.display_name}  ({entry.source.value}: {entry.path})"
    )


def cmd_models_list(args: argparse.Namespace, ctx: CliContext) -> int:
    entries = ctx.library.scan()
    remote = remote_models(ctx)
    if args.json:
        ctx.print_json([entry.to_dict() for entry in entries] + remote)
        return 0
    if not entries and not remote:
        ctx.print(f"No models yet. Put .gguf files in {ctx.paths.models_dir} or run `hearth models import FILE`.")
        return 0
    if entries:
        ctx.print(f"{'QUANT':<8} {'PARAMS':>6} {'SIZE':>10} {'CTX':>5}  NAME")
    for entry in entries:
        ctx.print(entry_row(entry))
    broken = sum(1 for e in entries if not e.ok)
    ctx.print(f"\n{len(entries)} models" + (f", {broken} broken" if broken else ""))
    if remote:
        ctx.print("\nOn servers (hearth chat --server NAME MODEL):")
    for row in remote:
        shown = row["model"] if row["error"] is None else f"unavailable: {row['error']}"
        ctx.print(f"  {row['server']}: {shown}")
    return 0


def remote_models(ctx: CliContext) -> list[dict[str, Any]]:
    """Every configured server's models as {"source": "remote", "server", "url", "model", "error"}; a server
    that cannot be asked gives one row with the error (and model None)."""
    from app.core.remote_servers import ServerRegistry, Timeouts

    servers = ServerRegistry(ctx.settings).all()
    if not servers:
        return []
    from app.core.errors import RemoteError
    from app.core.remote_catalog import RemoteCatalog  # the HTTP client: only when there is a server to ask

    catalog = RemoteCatalog(timeouts=Timeouts(connect=3.0, list_models=8.0))  # a listing must not hang
    catalog.sync(servers)
    rows: list[dict[str, Any]] = []
    try:
        for server in servers:
            base = {"source": "remote", "server": server.name, "url": server.url}
            try:
                rows += [{**base, "model": m.id, "error": None} for m in catalog.models(server.name)]
            except RemoteError as exc:
                rows.append({**base, "model": None, "error": str(exc)})
    finally:
        catalog.close()
    return rows


def cmd_models_import(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.gguf_info import format_bytes
    from app.core.library import ImportMode

    mode = ImportMode(args.mode)

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{done * 100 // max(total, 1):3d}% {format_bytes(done)}", end="", file=sys.stderr)

    entry = ctx.library.import_model(args.path, mode, progress=progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    ctx.print(f"Imported ({mode.value}): {entry.path}")
    return 0


def cmd_models_delete(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.gguf_info import format_bytes

    entry = ctx.library.find(args.path)
    if entry is None:
        raise LibraryError(f"{args.path} is not in the library")
    reason = ctx.library.can_delete(entry)
    if reason:
        raise LibraryError(reason)
    names = ", ".join(p.name for p in entry.parts)
    if not args.yes:
        if not sys.stdin.isatty():
            raise LibraryError("refusing to delete without confirmation; pass --yes")
        answer = input(safe(f"Delete {names} ({format_bytes(entry.size_bytes)})? [y/N] "))
        if answer.strip().lower() not in ("y", "yes"):
            ctx.print("Nothing deleted.")
            return 0
    ctx.library.delete(entry)
    ctx.print(f"Deleted {names}")
    return 0
