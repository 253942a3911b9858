"""`hearth serve` as a subprocess for tests and benchmarks: started on a free port, its URL read from the one
line it prints, stopped with SIGINT (as Ctrl-C) and checked to exit."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServeProcess:
    """One `hearth serve` process. url: http://127.0.0.1:PORT/v1; base: without /v1."""

    def __init__(self, args: list[str], home: Path, env: dict[str, str] | None = None, timeout: float = 120) -> None:
        environ = {**os.environ, "HEARTH_HOME": str(home), **(env or {})}
        environ["NO_PROXY"] = "127.0.0.1,localhost"
        self.home = home
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", "0", *args],
            cwd=REPO_ROOT,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # A shell that started us in the background may have left SIGINT ignored; the server must get
            # Ctrl-C's default disposition to install its own handler.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.line = self._first_line(timeout)
        self.url = self.line.rsplit(" at ", 1)[1].strip()
        self.base = self.url.removesuffix("/v1")

    def _first_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith("Serving "):
                    return line.strip()
                if not line and self.proc.poll() is not None:
                    break
            elif self.proc.poll() is not None:
                break
        self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        raise RuntimeError(f"hearth serve did not start (exit {self.proc.returncode}): {err[-3000:]}")

    def client(self, api_key: str = "none", **kwargs: object):  # an openai.OpenAI (typed loosely: test-only)
        import openai

        return openai.OpenAI(base_url=self.url, api_key=api_key, max_retries=0, timeout=120, **kwargs)  # type: ignore[arg-type]

    def stop(self, timeout: float = 30) -> tuple[int, str]:
        """Ctrl-C, then wait; (exit status, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"hearth serve did not stop within {timeout} s after Ctrl-C: {err[-3000:]}") from None
        return self.proc.returncode, err
