"""Conversations that reopen instantly: each conversation's KV cache saved to the cache folder when the user
leaves it or quits, and restored when it is continued, so only the new tokens are evaluated.

A state file is only ever restored into the same model file with the same cache-shaping settings (context
size, KV cache type, flash attention, LoRA adapters): its name carries a hash of them, and its header repeats
them. The engine then keeps just the part of the saved tokens the new prompt starts with, so an edited or
branched history costs a partial (or full) evaluation, never a wrong answer. A damaged file (bad header,
payload checksum, or refused by llama.cpp) is removed and logged. Files are kept in a size-capped LRU.

File layout: b"HEARTHKV", u32 version, u32 header length, header (JSON), then llama.cpp's sequence state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.core.llama_engine import LlamaCppEngine, SequenceState

log = logging.getLogger("hearth.engine")

MAGIC = b"HEARTHKV"
VERSION = 1
DEFAULT_CAP_BYTES = 2 * 1024**3
_PREFIX = struct.Struct("<8sII")
MAX_HEADER = 64 * 1024 * 1024  # the token lists of a 1M-token context, as JSON, with room to spare


def conversation_name(conversation_id: int) -> str:
    """The file name stem of a conversation's saved states."""
    return f"conversation-{conversation_id}"


class StateFileError(Exception):
    """A state file that cannot be trusted (damaged, truncated, another format)."""


@dataclass(frozen=True)
class Restored:
    """What restore() did: how many tokens came back (0: nothing usable) and why not, if not."""

    tokens: int
    note: str = ""


class StateCache:
    """Saved sequence states in one folder, at most cap_bytes together (least recently used go first)."""

    def __init__(self, folder: Path, cap_bytes: int = DEFAULT_CAP_BYTES) -> None:
        self.folder = Path(folder)
        self.cap_bytes = cap_bytes

    @property
    def enabled(self) -> bool:
        return self.cap_bytes > 0

    def path_for(self, name: str, identity: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:16]
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:80]
        return self.folder / f"{safe}-{digest}.kvstate"

    # ---- save ------------------------------------------------------------------------------------------------
    def save(self, engine: LlamaCppEngine, key: Hashable, name: str) -> int:
        """Write key's sequence to the cache; returns the bytes written (0: nothing to save or disabled).
        Runs on the engine's thread (the host's); never raises for a disk problem (logged instead)."""
        if not self.enabled:
            return 0
        state = engine.export_sequence(key)
        if state is None:
            return 0
        identity = engine.cache_identity()
        if len(state.data) > self.cap_bytes:
            log.info("conversation state of %d bytes is over the cache cap; not saved", len(state.data))
            return 0
        try:
            return self._write(self.path_for(name, identity), identity, state)
        except OSError as exc:
            log.warning("could not save the conversation state: %s", exc)
            return 0
        finally:
            self.trim()

    def _write(self, path: Path, identity: dict[str, Any], state: SequenceState) -> int:
        header = json.dumps(
            {
                "identity": identity,
                "saved_at": time.time(),
                "tokens": state.tokens,
                "last_text": state.last_text,
                "prompt_ids": state.prompt_ids,
                "reply_ids": state.reply_ids,
                "reply_pieces": state.reply_pieces,
                "reply_shown": state.reply_shown,
                "data_size": len(state.data),
                "blake2b": hashlib.blake2b(state.data, digest_size=16).hexdigest(),
            },
            ensure_ascii=False,
        ).encode("utf-8")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(_PREFIX.pack(MAGIC, VERSION, len(header)))
                handle.write(header)
                handle.write(state.data)
            os.replace(tmp, path)  # a crash mid-write never leaves half a state under the real name
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path.stat().st_size

    # ---- restore -----------------------------------------------------------------------------------------------
    def restore(self, engine: LlamaCppEngine, key: Hashable, name: str) -> Restored:
        """Put the saved state of `name` back into a free sequence for key, if one was saved for this model
        and these settings. A damaged file is removed. Never raises."""
        if not self.enabled:
            return Restored(0, "the conversation cache is off")
        identity = engine.cache_identity()
        path = self.path_for(name, identity)
        if not path.is_file():
            return Restored(0, "no saved state")
        try:
            state, saved_identity = _read(path)
            if saved_identity != identity:
                raise StateFileError("its header names another model or other settings")
        except (StateFileError, OSError, ValueError) as exc:
            log.warning(
                "conversation state %s is damaged (%s); removed, the conversation is evaluated again", path.name, exc
            )
            path.unlink(missing_ok=True)
            return Restored(0, f"damaged state removed: {exc}")
        if not engine.import_sequence(key, state):
            log.warning("llama.cpp refused the conversation state %s; removed", path.name)
            path.unlink(missing_ok=True)
            return Restored(0, "llama.cpp refused the saved state")
        os.utime(path)  # most recently used
        return Restored(len(state.tokens))

    # ---- the cap ------------------------------------------------------------------------------------------------
    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.kvstate")) if self.folder.is_dir() else []

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def trim(self) -> None:
        """Delete the least recently used states until the folder is within the cap."""
        entries = []
        for path in self.files():
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.cap_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

    def forget(self, name: str) -> None:
        """Remove every state saved for a conversation (it was deleted)."""
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:80]
        for path in self.folder.glob(f"{safe}-*.kvstate") if self.folder.is_dir() else []:
            path.unlink(missing_ok=True)


def _read(path: Path) -> tuple[SequenceState, dict[str, Any]]:
    from app.core.llama_engine import SequenceState

    with path.open("rb") as handle:
        prefix = handle.read(_PREFIX.size)
        if len(prefix) != _PREFIX.size:
            raise StateFileError("shorter than its header")
        magic, version, header_size = _PREFIX.unpack(prefix)
        if magic != MAGIC or version != VERSION:
            raise StateFileError("not a Hearth state file of this version")
        if header_size > MAX_HEADER:
            raise StateFileError("header too large")
        header = json.loads(handle.read(header_size).decode("utf-8"))
        data = handle.read()
    if not isinstance(header, dict) or len(data) != header.get("data_size"):
        raise StateFileError("truncated")
    if hashlib.blake2b(data, digest_size=16).hexdigest() != header.get("blake2b"):
        raise StateFileError("checksum mismatch")
    tokens = header.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        raise StateFileError("bad token list")
    state = SequenceState(
        tokens=tokens,
        data=data,
        last_text=str(header.get("last_text", "")),
        prompt_ids=[int(t) for t in header.get("prompt_ids", [])],
        reply_ids=[int(t) for t in header.get("reply_ids", [])],
        reply_pieces=[p if p is None else str(p) for p in header.get("reply_pieces", [])],
        reply_shown=int(header.get("reply_shown", 0)),
    )
    return state, header.get("identity", {})
