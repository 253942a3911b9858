"""The `hearth` command line: subcommands over the core only (no subcommand ever opens the GUI).

Each command group lives in its own module with a `register(subparsers)` function; add new groups to
COMMAND_MODULES. Handlers take (args, ctx) and return an exit status. A HearthError becomes one line on
stderr and exit status 2; an unexpected exception is logged with its traceback and exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from app import __version__
from app.cli.context import CliContext
from app.cli.terminal import warn
from app.core.errors import HearthError

log = logging.getLogger("hearth.cli")

COMMAND_MODULES = (
    "app.cli.library_cmds",
    "app.cli.hub_cmds",
    "app.cli.template_cmds",
    "app.cli.chat_cmds",
    "app.cli.bench_cmds",
    "app.cli.compare_cmds",
    "app.cli.history_cmds",
    "app.cli.hw_cmds",
    "app.cli.docs_cmds",
    "app.cli.tools_cmds",
    "app.cli.remote_cmds",
    "app.cli.assistant_cmds",
    "app.cli.prompt_cmds",
    "app.cli.rpc_cmds",
    "app.cli.serve_cmds",
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hearth",
        description="Hearth: chat with GGUF language models, offline. Without a command, opens the app.",
    )
    parser.add_argument("--version", action="version", version=f"Hearth {__version__}")
    parser.add_argument("--debug", action="store_true", help="log debug detail to the log file")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def run(argv: Sequence[str]) -> int:
    """Parse argv and run one subcommand; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    ctx = CliContext(debug=args.debug)
    try:
        return int(args.handler(args, ctx) or EXIT_OK)
    except HearthError as exc:
        warn(f"hearth: {exc}")  # errors quote file names, model names and the Hub's own messages
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("hearth: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `hearth models | head`
        return EXIT_OK
    except Exception as exc:
        log.exception("unexpected error in `hearth %s`", args.command)
        warn(f"hearth: unexpected error: {type(exc).__name__}: {exc} (details in {ctx.log_file})")
        return EXIT_FAILURE
