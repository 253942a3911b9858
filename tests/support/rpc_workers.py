"""Real `hearth rpc-worker` processes on 127.0.0.1 for tests and benchmarks, with the RPC-enabled libraries.

The venv's llama-cpp-python has no RPC backend (its default build leaves GGML_RPC off), so workers and the
engine child that talks to them run with LLAMA_CPP_LIB_PATH pointing at the build of tests/support/llama_tools.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import HearthError
from app.core.rpc import query_worker

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rpc_env(lib_dir: Path, home: Path) -> dict[str, str]:
    """The environment of a process that uses the RPC-enabled libraries, with everything under `home`."""
    env = dict(os.environ, LLAMA_CPP_LIB_PATH=str(lib_dir), HEARTH_HOME=str(home), PYTHONPATH=str(REPO))
    env.pop("PYTHONSTARTUP", None)
    return env


@dataclass
class Worker:
    endpoint: str
    process: subprocess.Popen[str]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def kill(self) -> None:
        """Die at once, as a machine that loses power or network would (no clean goodbye)."""
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 15) -> int:
        """Ctrl-C, as a user stops it; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"rpc-worker {self.endpoint} ignored Ctrl-C for {timeout} s") from None
        return self.process.returncode


def start_worker(
    lib_dir: Path,
    home: Path,
    *,
    threads: int = 1,
    host: str = "127.0.0.1",
    port: int | None = None,
    cache: bool = False,
) -> Worker:
    """Start `hearth rpc-worker` (HEARTH_HOME=home) and wait until it answers the RPC handshake (60 s at most).
    cache: --cache, which keeps received weights in home/cache/rpc."""
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / f"rpc-worker-{port}.log"
    log = log_path.open("w")
    command = [sys.executable, "-m", "app", "rpc-worker", "--host", host, "--port", str(port)]
    command += ["--threads", str(threads), *(["--cache"] if cache else [])]
    process = subprocess.Popen(
        command,
        env=rpc_env(lib_dir, home),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        # A process started in the background from a non-interactive shell inherits SIGINT as ignored.
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if sys.platform != "win32" else None,
    )
    log.close()
    worker = Worker(f"127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"rpc-worker on port {port} exited with {process.returncode}: {worker.output()}")
        try:
            query_worker(worker.endpoint, timeout=2)
            return worker
        except HearthError:
            if time.monotonic() > deadline:
                worker.kill()
                raise RuntimeError(f"rpc-worker on port {port} did not answer within 60 s: {worker.output()}") from None
            time.sleep(0.2)
