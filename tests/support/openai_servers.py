"""Real OpenAI-compatible servers on 127.0.0.1 for tests and benchmarks: llama-cpp-python's own server
(`python -m llama_cpp.server`, from its `server` extra) and Hearth's `hearth serve`.

Each runs as a child process with its output in a log file; start_* waits until GET /v1/models answers (or
fails with the log when the process dies or the time is up); stop() ends it, kill() SIGKILLs it mid-reply.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
KINDS = ("llama-cpp-python", "hearth serve")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    kind: str
    url: str  # the base URL, ending in /v1
    model: str  # the model id to ask for
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the server dies mid-reply, its connections break."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(20)


def _models(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
        return [m["id"] for m in json.load(response)["data"]]


def _wait_ready(kind: str, process: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} exited with {process.returncode} before answering:\n{log.read_text()[-3000:]}")
        try:
            models = _models(url)
            if models:
                return models
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{kind} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env=env,
            # A background shell hands children SIGINT ignored; stop() relies on it (reset to the default).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def start_llama_cpp_server(
    model: Path, alias: str, log_dir: Path, *, n_ctx: int = 1024, threads: int = 1, timeout: float = 90.0
) -> RunningServer:
    port = free_port()
    log = log_dir / f"llama-cpp-server-{port}.log"
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        alias,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
    ]
    process = _spawn(command, log)
    url = f"http://127.0.0.1:{port}/v1"
    _wait_ready("llama_cpp.server", process, url, log, timeout)
    return RunningServer("llama-cpp-python", url, alias, process, log)


def start_hearth_serve(model: Path, log_dir: Path, *, n_ctx: int = 1024, timeout: float = 120.0) -> RunningServer:
    port = free_port()
    log = log_dir / f"hearth-serve-{port}.log"
    command = [
        sys.executable,
        "-m",
        "app",
        "serve",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ctx",
        str(n_ctx),
    ]
    process = _spawn(command, log)
    url = f"http://127.0.0.1:{port}/v1"
    models = _wait_ready("hearth serve", process, url, log, timeout)
    return RunningServer("hearth serve", url, models[0], process, log)


def start_server(kind: str, model: Path, alias: str, log_dir: Path, **options: float) -> RunningServer:
    if kind == "hearth serve":
        return start_hearth_serve(model, log_dir, **options)  # type: ignore[arg-type]
    return start_llama_cpp_server(model, alias, log_dir, **options)  # type: ignore[arg-type]
