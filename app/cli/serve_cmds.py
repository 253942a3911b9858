"""`hearth serve`: the local OpenAI-compatible server in the foreground, until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli import EXIT_INTERRUPTED, flags
from app.cli.context import CliContext
from app.core.errors import ConfigError, ModelLoadError
from app.core.server.config import DEFAULT_PORT, DEFAULT_QUEUE, ServerConfig

if TYPE_CHECKING:
    from app.core.load_config import LoadConfig

KEY_ENV = "HEARTH_API_KEY"


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve a model to other apps over an OpenAI-compatible API (http://127.0.0.1:8080/v1)",
        description="Serve your models over an OpenAI-compatible HTTP API until Ctrl-C. Without MODEL: the "
        "model loaded last time, or none until a request names one (GET /v1/models lists them).",
    )
    serve.add_argument("model", nargs="?", help="a GGUF file or the name of a library model")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: your network too)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    serve.add_argument("--api-key", help=f"require this key (Authorization: Bearer KEY); or set {KEY_ENV}")
    serve.add_argument(
        "--cors", action="append", default=[], metavar="ORIGIN", help="allow browser pages from ORIGIN (repeatable)"
    )
    serve.add_argument(
        "--queue",
        type=int,
        default=DEFAULT_QUEUE,
        help=f"requests that may wait beyond the parallel sequences; more get 429 (default {DEFAULT_QUEUE})",
    )
    serve.add_argument("--save-history", action="store_true", help="save API conversations to Hearth's history")
    flags.add_load_flags(serve)
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.host import EngineHost, LoadDone
    from app.core.server.service import LocalServer

    config = ServerConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key if args.api_key is not None else os.environ.get(KEY_ENV, ""),
        cors_origins=tuple(args.cors),
        max_queue=args.queue,
        save_history=args.save_history,
    ).validate()
    flags.load_values(args)  # checked now: a bad flag fails before anything loads
    model = _model_path(args.model, ctx)

    def load_config(path: Path) -> LoadConfig:
        """Every model (the first and those requests name) loads with your settings for it and the flags."""
        return flags.load_config(args, ctx, path)

    stop = threading.Event()
    host = EngineHost(store_path=ctx.paths.history_db)
    server: LocalServer | None = None
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = LocalServer(
            host,
            config,
            library=ctx.library,
            load_config=load_config,
            template_for=lambda name: ctx.settings.model_override(name).get("template"),
            store_path=ctx.paths.history_db,
        )
        server.bind()  # a port in use fails now, not after a model of several GB has loaded
        if model is not None:
            job = host.client("serve").load(model, load_config(model))
            while not job.done.wait(0.2):
                if stop.is_set():  # Ctrl-C while loading: stop the load (llama.cpp checks between tensors)
                    job.cancel()
            if stop.is_set():
                print("hearth: interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED
            done = job.result
            assert isinstance(done, LoadDone)
            if done.error or done.model is None:
                raise ModelLoadError(done.error or f"{model.name} could not be loaded")
            for note in done.notes:
                print(note, file=sys.stderr)
        url = server.start()
        what = model.name if model is not None else "your library (no model loaded until a request names one)"
        print(f"Serving {what} at {url}", flush=True)
        while not stop.wait(0.5):
            pass
        print("Stopping…", file=sys.stderr)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.stop()
        host.shutdown()


def _model_path(name: str | None, ctx: CliContext) -> Path | None:
    """MODEL as a file, else a library model's name; none given: the model loaded last (if it still exists)."""
    if name is None:
        last = str(ctx.settings.get("last_model"))
        return Path(last) if last and Path(last).is_file() else None
    path = Path(name).expanduser()
    if path.is_file():
        return path
    from app.core.server.catalog import ModelCatalog

    entry = ModelCatalog(ctx.library, lambda: None).resolve(name)
    if entry is None:
        raise ConfigError(f"{name}: no such file or library model (`hearth models` lists them)")
    return entry.path
