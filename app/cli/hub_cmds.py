"""`hearth search`, `files`, `download`, `downloads`, `token`: the Hugging Face Hub from the command line.

The Hub client (huggingface_hub, httpx2), the download manager and the keyring are imported by the handlers
that use them, never at the top: every `hearth` command imports this module to build its parser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from app.cli.terminal import safe, warn
from app.core.errors import DownloadError, HubAuthError, HubError
from app.core.hub_files import SORTS, Fit, QuantOption, recommend, select_option

if TYPE_CHECKING:
    from app.cli.context import CliContext
    from app.core.downloads import DownloadEvent, DownloadStatus
    from app.core.hub import HubClient, RepoDetails

EXIT_INTERRUPTED = 130
FIT_LABELS = {Fit.FITS: "fits", Fit.TIGHT: "tight", Fit.TOO_BIG: "too big"}


def register(subparsers: argparse._SubParsersAction) -> None:
    search = subparsers.add_parser("search", help="search the Hugging Face Hub for GGUF models")
    search.add_argument("query")
    search.add_argument("--sort", choices=tuple(SORTS), default="downloads")
    search.add_argument("--limit", type=int, default=20)
    search.add_argument("--json", action="store_true", help="print a JSON list")
    search.set_defaults(handler=cmd_search)

    files = subparsers.add_parser("files", help="a Hub repository's GGUF files, by quantization")
    files.add_argument("repo", help="owner/name")
    files.add_argument("--revision", default="main")
    files.add_argument("--json", action="store_true", help="print one JSON object")
    files.set_defaults(handler=cmd_files)

    download = subparsers.add_parser(
        "download", help="download a GGUF model (resumable: run it again after Ctrl-C to continue)"
    )
    download.add_argument("repo", help="owner/name")
    download.add_argument("file", nargs="?", help="a GGUF file in the repo (any part of a split model)")
    download.add_argument("--quant", help="pick by quantization instead, e.g. Q4_K_M")
    download.add_argument("--dest", type=Path, help="folder to put the model in (default: Hearth's models)")
    download.set_defaults(handler=cmd_download)

    downloads = subparsers.add_parser("downloads", help="list the download queue (paused, failed, done)")
    downloads.add_argument("--json", action="store_true")
    downloads.set_defaults(handler=cmd_downloads)
    actions = downloads.add_subparsers(dest="downloads_action", metavar="ACTION")
    for name, help_text in (
        ("resume", "continue a paused or failed download"),
        ("cancel", "stop a download and delete its partial files"),
        ("remove", "forget a finished or stopped download (its partial files are deleted)"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("id")
        action.set_defaults(handler=cmd_downloads_action, action=name)

    token = subparsers.add_parser("token", help="the Hub token for gated or private models")
    token.add_argument("action", nargs="?", choices=("status", "set", "clear"), default="status")
    token.set_defaults(handler=cmd_token)


def make_hub(ctx: CliContext) -> HubClient:
    from app.core.hub import HubClient, resolve_endpoint
    from app.core.hub_token import load_token

    endpoint = resolve_endpoint(ctx.settings.get("hub_endpoint"))
    return HubClient(endpoint, load_token().value)


def _age(iso: str | None) -> str:
    return iso[:10] if iso else "?"


def cmd_search(args: argparse.Namespace, ctx: CliContext) -> int:
    results = make_hub(ctx).search(args.query, sort=args.sort, limit=args.limit)
    if args.json:
        ctx.print_json([r.to_dict() for r in results])
        return 0
    if not results:
        ctx.print(f"No GGUF models match {args.query!r}.")
        return 0
    ctx.print(f"{'DOWNLOADS':>10} {'LIKES':>6} {'UPDATED':<10}  REPOSITORY")
    for r in results:
        gated = "  (gated)" if r.gated else ""
        ctx.print(f"{r.downloads:>10,} {r.likes:>6,} {_age(r.last_modified):<10}  {r.repo_id}{gated}")
    return 0


def option_row(option: QuantOption) -> str:
    from app.core.gguf_info import format_bytes

    parts = f" ({len(option.files)} parts)" if option.is_split else ""
    if not option.complete:
        parts += " INCOMPLETE"
    kind = "  [vision projector]" if option.projector else ""
    sha = option.files[0].sha256 or option.files[0].git_oid or "?"
    return (
        f"{option.quant:<10} {format_bytes(option.size):>10} {FIT_LABELS[option.fit]:<8} "
        f"{sha[:12]}  {option.name}{parts}{kind}"
    )


def details_lines(details: RepoDetails) -> list[str]:
    gated = {False: "no", "auto": "yes (automatic approval)", "manual": "yes (manual approval)"}
    lines = [
        details.repo_id,
        f"  license  {details.license or 'not stated'}",
        f"  gated    {gated.get(details.gated, str(details.gated))}",
        f"  page     {details.url}",
        "",
    ]
    if not details.options:
        return [*lines, "No GGUF files in this repository."]
    lines.append(f"{'QUANT':<10} {'SIZE':>10} {'FIT':<8} {'SHA256':<12}  FILE")
    lines += [option_row(o) for o in details.options]
    if (best := recommend(details.options)) is not None:
        lines += ["", f"Suggested for this machine: {_label(best)}"]
    return lines


def cmd_files(args: argparse.Namespace, ctx: CliContext) -> int:
    details = make_hub(ctx).details(args.repo, args.revision)
    if args.json:
        ctx.print_json(details.to_dict())
    else:
        for line in details_lines(details):
            ctx.print(line)
    return 0


class ProgressBar:
    """Download progress on stderr: a redrawn bar on a terminal, a line per 10 % otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last_decile = -1
        self._message = ""

    def on_event(self, event: DownloadEvent) -> None:
        """Called on the download thread; writing to stderr from there is fine for a CLI."""
        status = event.status
        if event.kind == "message" and status.message != self._message:
            self._message = status.message
            self._line(status.message)
        elif event.kind == "progress":
            self._progress(status)

    def _line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(safe(text) + "\n")  # the Hub's messages and file names
        self.stream.flush()

    def _progress(self, status: DownloadStatus) -> None:
        from app.core.gguf_info import format_bytes

        if self.tty:
            width = 30
            filled = int(status.fraction * width)
            eta = (
                f" ETA {int(status.eta_seconds) // 60}:{int(status.eta_seconds) % 60:02d}" if status.eta_seconds else ""
            )
            speed = f" {format_bytes(status.speed_bps)}/s" if status.speed_bps else ""
            self.stream.write(
                f"\r\033[K[{'#' * filled}{'-' * (width - filled)}] {status.fraction:4.0%} "
                f"{format_bytes(status.done_bytes)}/{format_bytes(status.total_bytes)}{speed}{eta}"
            )
            self.stream.flush()
            return
        decile = int(status.fraction * 10)
        if decile != self._last_decile:
            self._last_decile = decile
            self._line(f"{decile * 10:3d}% {format_bytes(status.done_bytes)} of {format_bytes(status.total_bytes)}")

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _pick(details: RepoDetails, file: str | None, quant: str | None) -> QuantOption:
    if file or quant:
        try:
            return select_option(details.options, file=file, quant=quant)
        except LookupError as exc:
            raise HubError(f"{details.repo_id}: {exc}") from None
    best = recommend(details.options)
    if best is None:
        raise HubError(f"{details.repo_id}: no GGUF file fits this machine; name a FILE or --quant to insist")
    how = "fits this machine" if best.fit is Fit.FITS else "fits once other programs free memory"
    warn(f"Picked {_label(best)}: it {how}.")
    return best


def _label(option: QuantOption) -> str:
    return option.name if option.quant == "?" else f"{option.quant} ({option.name})"


def cmd_download(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.downloads import ACTIVE, DownloadManager, DownloadState
    from app.core.gguf_info import format_bytes

    hub = make_hub(ctx)
    details = hub.details(args.repo)
    if details.gated and not hub.has_token:
        raise HubAuthError(
            f"{details.repo_id} is gated: accept its terms at {details.url} while logged in, "
            "then give Hearth a token (`hearth token set`)"
        )
    option = _pick(details, args.file, args.quant)
    if option.fit is Fit.TOO_BIG:
        warn(f"warning: {option.name} needs more memory than this machine has")
    manager = DownloadManager(ctx.paths, hub)
    bar = ProgressBar(sys.stderr)
    manager.subscribe(bar.on_event)
    try:
        status = manager.add(details.repo_id, option, revision=details.sha or "main", dest_dir=args.dest)
        if status.state in ACTIVE:
            warn(f"Downloading {option.name} ({format_bytes(option.size)}) into {status.paths[0].parent}")
        try:
            while status.state in ACTIVE:
                status = manager.wait(status.id, timeout=0.5)
        except KeyboardInterrupt:
            manager.pause(status.id)
            status = manager.wait(status.id, timeout=10)
            bar.finish()
            print(
                f"hearth: paused at {format_bytes(status.done_bytes)} of {format_bytes(status.total_bytes)}; "
                "run the same command again to resume",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
    finally:
        manager.close(timeout=10)
    bar.finish()
    if status.state is not DownloadState.DONE:
        raise DownloadError(status.error or f"download {status.state}")
    if status.message == "already downloaded":
        ctx.print(f"Already downloaded: {status.paths[0]}")
    else:
        ctx.print(f"Downloaded and verified (sha256): {status.paths[0]}")
        for extra in status.paths[1:]:
            ctx.print(f"  + {extra.name}")
    return 0


def cmd_downloads(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.downloads import DownloadManager, describe

    manager = DownloadManager(ctx.paths, lambda: make_hub(ctx))
    statuses = manager.statuses()
    if args.json:
        ctx.print_json([s.to_dict() for s in statuses])
        return 0
    if not statuses:
        ctx.print("No downloads.")
    for status in statuses:
        ctx.print(f"{status.id}  {describe(status)}")
    return 0


def cmd_downloads_action(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.downloads import ACTIVE, DownloadManager, DownloadState, describe

    manager = DownloadManager(ctx.paths, lambda: make_hub(ctx))
    try:
        if args.action == "cancel":
            manager.cancel(args.id)
        elif args.action == "remove":
            manager.remove(args.id)
        else:
            bar = ProgressBar(sys.stderr)
            manager.subscribe(bar.on_event)
            status = manager.resume(args.id)
            try:
                while status.state in ACTIVE:
                    status = manager.wait(args.id, timeout=0.5)
            except KeyboardInterrupt:
                manager.pause(args.id)
                manager.wait(args.id, timeout=10)
                print("hearth: paused; `hearth downloads resume ID` continues", file=sys.stderr)
                return EXIT_INTERRUPTED
            bar.finish()
            if status.state is not DownloadState.DONE:
                raise DownloadError(status.error or f"download {status.state}")
    finally:
        manager.close(timeout=10)
    ctx.print(describe(manager.status(args.id)) if args.action != "remove" else f"Removed {args.id}")
    return 0


def cmd_token(args: argparse.Namespace, ctx: CliContext) -> int:
    import getpass

    from app.core.hub_token import clear_token, load_token, save_token

    if args.action == "set":
        # Never from argv: it would show in `ps` and in the shell history.
        interactive = sys.stdin.isatty()
        value = getpass.getpass("Hugging Face token (input hidden): ") if interactive else sys.stdin.readline()
        token = save_token(value)
        ctx.print(f"Saved {token.masked} in the OS keyring.")
        return 0
    if args.action == "clear":
        ctx.print("Removed the token saved in Hearth." if clear_token() else "No token was saved in Hearth.")
        return 0
    token = load_token()
    ctx.print(f"Token: {token.masked} (source: {token.source.value})")
    if token.note:
        ctx.print(f"Note: {token.note}")
    return 0
