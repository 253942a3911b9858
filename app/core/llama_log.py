"""Route llama.cpp's own log into Hearth's log file (logger hearth.llama) instead of the terminal.

llama.cpp logs through one process-wide callback and writes partial lines (progress dots, "CONT" pieces);
lines are assembled before they reach the logger. The last warning/error lines are kept so a failed load
can be explained (llama.cpp reports the reason only in its log; the API just returns NULL).
"""

from __future__ import annotations

import logging
import threading
from collections import deque

log = logging.getLogger("hearth.llama")

# ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the previous line)
_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_CONT = 5

_lock = threading.Lock()
_partial: list[str] = []
_partial_level = logging.DEBUG
_recent: deque[str] = deque(maxlen=40)
_callback: object = None  # the ctypes callback must stay referenced for as long as llama.cpp may call it


def _emit(level: int, line: str) -> None:
    if not line.strip():
        return
    if level >= logging.WARNING or "error" in line.lower() or "failed" in line.lower():
        _recent.append(line.strip())
    log.log(level, "%s", line.rstrip())


def _on_log(level: int, text: bytes | None, _user_data: object) -> None:
    global _partial_level
    message = (text or b"").decode("utf-8", errors="replace")
    with _lock:
        if level != _CONT:
            if _partial:  # a new record starts: flush what the previous one left without a newline
                _emit(_partial_level, "".join(_partial))
                _partial.clear()
            _partial_level = _LEVELS.get(level, logging.DEBUG)
        _partial.append(message)
        if message.endswith("\n"):
            _emit(_partial_level, "".join(_partial))
            _partial.clear()


def install() -> None:
    """Install the callback once per process (idempotent). Call before loading anything."""
    global _callback
    if _callback is not None:
        return
    import llama_cpp

    _callback = llama_cpp.llama_log_callback(_on_log)
    llama_cpp.llama_log_set(_callback, None)


def recent_problems(clear: bool = False) -> list[str]:
    """The last warning/error lines llama.cpp logged (oldest first)."""
    with _lock:
        lines = list(_recent)
        if clear:
            _recent.clear()
    return lines
