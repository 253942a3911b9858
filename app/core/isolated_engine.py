"""IsolatedEngine: an Engine whose model lives in a child Hearth process, so a native abort ends only the child.

Why: llama.cpp's RPC client ends the whole process (GGML_ABORT, "Remote RPC server crashed or returned
malformed response") when a worker drops the connection mid-request; nothing in-process can catch that. A
model split over RPC workers is therefore loaded by a LlamaCppEngine in a child (`hearth --engine-child`),
and this class forwards the Engine calls to it over the child's stdin/stdout (length-prefixed pickles: both
ends are this same program). When the child dies, the call in flight ends with a clear error naming the
workers that stopped answering, the model counts as unloaded, and the app goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from app.core import errors
from app.core.engine import Engine, Event, GenerationStats, LoadedModel, ProgressCallback, PromptRequest
from app.core.errors import EngineBusyError, GenerationError, HearthError, ModelLoadError
from app.core.load_config import LoadConfig

log = logging.getLogger("hearth.engine")

CHILD_FLAG = "--engine-child"  # app/main.py runs child_main() for it (not a CLI command: never listed)
_HEADER = struct.Struct("<I")
_STOP_TIMEOUT = 10.0


class _ChildDied(Exception):
    """The child process ended (or closed its pipe) while a call was waiting for it."""


def engine_child_command() -> list[str]:
    """How to start this same Hearth as an engine child: the frozen executable, or this interpreter."""
    if getattr(sys, "frozen", False):
        return [sys.executable, CHILD_FLAG]
    return [sys.executable, "-m", "app", CHILD_FLAG]


def engine_for(config: LoadConfig) -> Engine:
    """The engine a load with this config needs: in this process, or isolated when it uses RPC workers."""
    if getattr(config, "rpc_workers", ()):
        return IsolatedEngine()
    from app.core.llama_engine import LlamaCppEngine

    return LlamaCppEngine()


def _write(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise _ChildDied
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise _ChildDied
    return pickle.loads(data)


def _error_payload(exc: BaseException, fallback: type[HearthError]) -> tuple[str, str, dict[str, Any]]:
    if isinstance(exc, HearthError):
        extra = {k: v for k, v in vars(exc).items() if isinstance(v, (int, str, type(None)))}
        return type(exc).__name__, str(exc), extra
    return fallback.__name__, f"{type(exc).__name__}: {exc}", {}


def _rebuild_error(name: str, message: str, extra: dict[str, Any]) -> HearthError:
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, HearthError)):
        from app.core import rpc

        cls = getattr(rpc, name, None)
    if not (isinstance(cls, type) and issubclass(cls, HearthError)):
        cls = GenerationError
    error = cls.__new__(cls)
    HearthError.__init__(error, message)
    for key, value in extra.items():
        setattr(error, key, value)
    return error


class IsolatedEngine:
    """The Engine protocol over a child process; one child per loaded model (unload ends it)."""

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self._command = list(command) if command else engine_child_command()
        self._proc: subprocess.Popen[bytes] | None = None
        self._busy = threading.Lock()  # load / unload / generate, as LlamaCppEngine
        self._io = threading.Lock()  # one request/answer exchange with the child at a time
        self._write_lock = threading.Lock()  # cancel() writes from any thread
        self._streaming: int | None = None  # the thread reading a generation's events
        self._loaded: LoadedModel | None = None
        self._context_used = 0
        self._stderr: deque[str] = deque(maxlen=40)
        self._stderr_thread: threading.Thread | None = None
        self.placement: list[str] = []  # where the model's layers went (one line per device)

    # ---- state ------------------------------------------------------------------------------------------
    @property
    def model(self) -> LoadedModel | None:
        return self._loaded

    @property
    def busy(self) -> bool:
        return self._busy.locked()

    @property
    def context_used(self) -> int:
        return self._context_used

    def cancel(self) -> None:
        self._send(("cancel",), quiet=True)

    # ---- load / unload ----------------------------------------------------------------------------------
    def load(
        self, path: Path, config: LoadConfig, progress: ProgressCallback | None = None, **options: Any
    ) -> LoadedModel:
        if not self._busy.acquire(blocking=False):
            raise EngineBusyError("cannot load a model while a reply is being generated; stop it first")
        try:
            self._stop_child()
            self._start_child()
            try:
                loaded, placement = self._call("load", (Path(path), config), options, progress=progress)
            except _ChildDied:
                message = self._death_message(config, "while loading")
                self._stop_child()
                raise ModelLoadError(message) from None
            except HearthError:
                self._stop_child()
                raise
            self._loaded, self.placement = loaded, list(placement)
            return loaded
        finally:
            self._busy.release()

    def load_exact(self, path: Path, config: LoadConfig, progress: ProgressCallback | None = None) -> LoadedModel:
        """The load policy has resolved the config already; the child loads it as it is."""
        return self.load(path, config, progress)

    def unload(self) -> None:
        if not self._busy.acquire(blocking=False):
            raise EngineBusyError("cannot unload the model while a reply is being generated; stop it first")
        try:
            self._stop_child()
        finally:
            self._busy.release()

    # ---- tokens -----------------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        return self._query("tokenize", (text,), {"add_bos": add_bos})

    def count_tokens(self, text: str, *, key: Any = None) -> int:
        return self._query("count_tokens", (text,), {"key": key})

    def prompt_tokens(self, text: str, *, key: Any = None) -> list[int]:
        return self._query("prompt_tokens", (text,), {"key": key})

    def _query(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._loaded is None:
            raise GenerationError("no model is loaded")
        if self._streaming == threading.get_ident():
            raise EngineBusyError(f"cannot {name.replace('_', ' ')} in the middle of a reply")
        try:
            return self._call(name, args, kwargs)
        except _ChildDied:
            message = self._death_message(self._loaded.config if self._loaded else None, "")
            self._stop_child()
            raise GenerationError(message) from None

    # ---- generation -------------------------------------------------------------------------------------
    def generate(self, request: PromptRequest, *, key: Any = None) -> Iterator[Event]:
        if not self._busy.acquire(blocking=False):
            raise EngineBusyError("cannot start another reply while one is being generated; stop it first")
        try:
            yield from self._generate(request, key)
        finally:
            self._busy.release()

    def _generate(self, request: PromptRequest, key: Any = None) -> Iterator[Event]:
        if self._loaded is None or self._proc is None:
            raise GenerationError("no model is loaded")
        finished = False
        with self._io:
            self._streaming = threading.get_ident()
            try:
                self._send(("generate", (request,), {"key": key}))
                while True:
                    kind, *payload = self._receive()
                    if kind == "event":
                        yield payload[0]
                    elif kind == "result":
                        self._context_used = payload[1]
                        finished = True
                        return
                    elif kind == "error":
                        finished = True
                        raise _rebuild_error(*payload)
            except _ChildDied:
                finished = True
                message = self._death_message(self._loaded.config, "during the reply")
                self._stop_child()
                yield _failed(message)
            finally:
                if not finished:  # the consumer stopped early: stop the child's generation, read to its end
                    self.cancel()
                    with contextlib.suppress(_ChildDied):
                        while self._receive()[0] not in ("result", "error"):
                            pass
                self._streaming = None

    # ---- the child process -------------------------------------------------------------------------------
    def _start_child(self) -> None:
        options: dict[str, Any] = {}
        if sys.platform == "win32":
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            options["start_new_session"] = True  # the terminal's Ctrl-C is the parent's to handle
        self._stderr.clear()
        self._proc = subprocess.Popen(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options
        )
        self._stderr_thread = threading.Thread(
            target=self._drain_stderr, args=(self._proc,), name="engine-child-stderr", daemon=True
        )
        self._stderr_thread.start()
        log.info("engine child process %d started", self._proc.pid)

    def _drain_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        """The child's log records and anything native code prints: into this process's log."""
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                self._stderr.append(line)
                level = logging.getLevelName(line.split(" ", 1)[0])
                log.log(level if isinstance(level, int) else logging.INFO, "engine child %d: %s", proc.pid, line)

    def _stop_child(self) -> None:
        proc, self._proc = self._proc, None
        self._loaded, self.placement, self._context_used = None, [], 0
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.close()  # the child ends when its stdin closes
        try:
            proc.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()

    def _send(self, message: tuple[Any, ...], *, quiet: bool = False) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            if quiet:
                return
            raise _ChildDied
        with self._write_lock:
            try:
                _write(proc.stdin, message)
            except (OSError, ValueError):
                if not quiet:
                    raise _ChildDied from None

    def _receive(self) -> tuple[Any, ...]:
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise _ChildDied
        try:
            return _read(proc.stdout)
        except (OSError, ValueError, EOFError, pickle.UnpicklingError):
            raise _ChildDied from None

    def _call(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        progress: Callable[[float], None] | None = None,
    ) -> Any:
        with self._io:
            self._send((name, args, kwargs))
            while True:
                kind, *payload = self._receive()
                if kind == "progress":
                    if progress is not None:
                        with contextlib.suppress(Exception):  # a UI callback must not break the exchange
                            progress(payload[0])
                elif kind == "result":
                    self._context_used = payload[1]
                    return payload[0]
                elif kind == "error":
                    raise _rebuild_error(*payload)

    def _death_message(self, config: LoadConfig | None, when: str) -> str:
        """Why the child ended, naming the RPC workers that no longer answer when that is the reason."""
        from app.core.rpc import reachable

        proc = self._proc
        code = None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(timeout=5)
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=2)
        workers = tuple(getattr(config, "rpc_workers", ()) or ()) if config is not None else ()
        down = [worker for worker in workers if not reachable(worker)]
        what = f" {when}" if when else ""
        if down:
            names = ", ".join(down)
            plural = "s" if len(down) > 1 else ""
            return (
                f"RPC worker{plural} {names} stopped answering{what}; the model was unloaded: restart the "
                f"worker{plural} and load the model again, or load it without {'them' if plural else 'it'}"
            )
        lines = list(self._stderr)
        marked = [line for line in lines if "abort" in line.lower() or "error" in line.lower()]
        detail = (marked or lines or [""])[-1]
        status = f"exit status {code}" if code is not None and code >= 0 else f"signal {-code}" if code else "no status"
        return f"the engine process ended{what} ({status}{': ' + detail if detail else ''}); the model was unloaded"

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._stop_child()


def _failed(message: str) -> GenerationStats:
    return GenerationStats(
        finish_reason="error",
        prompt_tokens=0,
        evaluated_tokens=0,
        generated_tokens=0,
        ttft_ms=0.0,
        prompt_tps=0.0,
        gen_tps=0.0,
        total_ms=0.0,
        error=message,
    )


# ---- the child's side ---------------------------------------------------------------------------------------
def child_main() -> int:
    """Serve one LlamaCppEngine over stdin/stdout until stdin closes (run as `hearth --engine-child`)."""
    from app.core import rpc
    from app.core.llama_engine import LlamaCppEngine

    with contextlib.suppress(ValueError, OSError, AttributeError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the parent (it cancels the reply)
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # native prints to stdout must not corrupt the channel
    sys.stdout = sys.stderr
    # Log records go to stderr, which the parent reads into its own log file (one writer per file).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("hearth").addHandler(handler)
    logging.getLogger("hearth").setLevel(logging.INFO)
    inbox = sys.stdin.buffer
    rpc.isolated = True
    engine = LlamaCppEngine()
    requests: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
    write_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with write_lock:
            _write(channel, message)

    def read_requests() -> None:
        while True:
            try:
                message = _read(inbox)
            except (_ChildDied, OSError, ValueError, EOFError, pickle.UnpicklingError):
                engine.cancel()
                requests.put(None)
                return
            if message[0] == "cancel":
                engine.cancel()
            else:
                requests.put(message)

    threading.Thread(target=read_requests, name="engine-child-requests", daemon=True).start()
    while (message := requests.get()) is not None:
        name, args, kwargs = message
        try:
            if name == "load":
                path, config = args  # as load() sends them
                loaded = engine.load(path, config, lambda f: send(("progress", f)), **kwargs)
                placement = rpc.last_placement
                lines: list[str] = []
                if placement is not None:
                    blocks = loaded.info.block_count or len(loaded.info.layer_bytes)
                    lines = placement.describe(blocks + 1)
                    loaded = _with_rpc(loaded, placement.plan.n_gpu_layers)
                send(("result", (loaded, lines), engine.context_used))
            elif name == "generate":
                for event in engine.generate(*args, **kwargs):
                    send(("event", event))
                send(("result", None, engine.context_used))
            elif name in ("tokenize", "count_tokens", "prompt_tokens"):
                send(("result", getattr(engine, name)(*args, **kwargs), engine.context_used))
            else:
                send(("error", "GenerationError", f"unknown engine request {name!r}", {}))
        except Exception as exc:
            log.exception("engine child: %s failed", name)
            send(("error", *_error_payload(exc, ModelLoadError if name == "load" else GenerationError)))
    with contextlib.suppress(Exception):
        channel.close()
    # Freeing a model split over workers talks to them; the OS frees everything at once, and closing the
    # sockets makes the workers free their buffers.
    logging.shutdown()
    os._exit(0)


def _with_rpc(loaded: LoadedModel, offloaded: int) -> LoadedModel:
    from dataclasses import replace

    return replace(loaded, n_gpu_layers=offloaded, backend=f"{loaded.backend} + RPC")
