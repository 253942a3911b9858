"""`hearth rpc-worker` (lend this machine's GPU or CPU to another Hearth) and the `--rpc` load option's helpers."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from app.cli.context import CliContext
from app.core.errors import ConfigError, HearthError
from app.core.load_config import physical_cores

log = logging.getLogger("hearth.rpc")


def register(subparsers: argparse._SubParsersAction) -> None:
    worker = subparsers.add_parser(
        "rpc-worker",
        help="lend this machine's GPU or CPU to a Hearth elsewhere (llama.cpp RPC; trusted networks only)",
        description=(
            "Run llama.cpp's RPC server so another machine can put part of a model here "
            "(`hearth chat MODEL --rpc HOST:PORT`). The protocol has no authentication: anyone who reaches the "
            "port can use this machine's memory and compute. Ctrl-C stops it."
        ),
    )
    worker.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    worker.add_argument("--port", type=int, default=50052, help="port (default 50052)")
    worker.add_argument("--threads", type=int, default=0, help="CPU threads when serving the CPU (0 = physical cores)")
    worker.add_argument(
        "--cache",
        action="store_true",
        help="keep received weights in Hearth's cache folder, so loading the same model again sends less",
    )
    worker.set_defaults(handler=cmd_rpc_worker)


# ---- the --rpc load option (for chat, bench and any command that loads a model) ----------------------------
def add_rpc_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--rpc HOST:PORT,...` to a command that loads a model."""
    parser.add_argument(
        "--rpc",
        default="",
        metavar="HOST:PORT,...",
        help="split the model over these `hearth rpc-worker` machines too (in proportion to free memory)",
    )


def rpc_workers_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The normalised workers of `--rpc` (an empty tuple without it); ConfigError for a malformed one."""
    from app.core.rpc import parse_workers

    return parse_workers(getattr(args, "rpc", "") or "")


# ---- hearth rpc-worker ------------------------------------------------------------------------------------
def cmd_rpc_worker(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core import rpc
    from app.core.gguf_info import format_bytes

    if not 1 <= args.port <= 65535:
        raise ConfigError("--port must be 1 to 65535")
    if args.threads < 0:
        raise ConfigError("--threads must be 0 (physical cores) or more")
    host = args.host.strip()
    endpoint = rpc.parse_endpoint(f"{host}:{args.port}")
    _ = ctx.log_file  # llama.cpp's log goes to Hearth's log file from here on
    devices = rpc.worker_devices()  # raises with the rebuild command when this build has no RPC
    rpc.check_port_free(host, args.port)
    cache_dir: Path | None = None
    if args.cache:
        cache_dir = ctx.paths.cache_dir / "rpc"
        cache_dir.mkdir(parents=True, exist_ok=True)
    err = sys.stderr
    if not rpc.is_loopback(host):
        print(
            f"warning: listening on {endpoint}, reachable from other machines. The RPC protocol has no "
            "authentication: anyone who can reach this port can use this machine's memory and compute. "
            "Use it on a trusted network only.",
            file=err,
        )
    for device in devices:
        print(
            f"serving {device.name} ({device.description}): {format_bytes(device.free_bytes)} free "
            f"of {format_bytes(device.total_bytes)}",
            file=err,
        )
    threads = args.threads or physical_cores()
    stop = threading.Event()
    failure: list[BaseException] = []

    def run_server() -> None:
        try:
            rpc.serve(host, args.port, threads, cache_dir)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)
        stop.set()  # the server only returns when it could not start

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server = threading.Thread(target=run_server, name="rpc-server", daemon=True)
    server.start()
    print(f"RPC worker listening on {endpoint}; Ctrl-C stops it", file=err, flush=True)
    log.info("rpc-worker on %s (%s)", endpoint, ", ".join(d.name for d in devices))
    while not stop.wait(0.5):
        pass
    if server.is_alive():  # stopped by a signal: the server thread blocks in native code for good
        print("RPC worker stopped", file=err, flush=True)
        _exit_now(0)
    reason = f"{type(failure[0]).__name__}: {failure[0]}" if failure else "see the log"
    if failure and isinstance(failure[0], HearthError):
        raise failure[0]
    raise HearthError(f"the RPC worker could not listen on {endpoint} ({reason})")


def _exit_now(status: int) -> None:
    """End the process although a thread is inside llama.cpp's accept loop (it cannot be interrupted)."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(status)
