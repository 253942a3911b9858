"""The models an API client may name: the loaded one first, then the library (ids are file names)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.core.library import Library

RESCAN_S = 2.0  # a listing is reused this long (each scan stats every file of the library folders)


@dataclass(frozen=True)
class CatalogEntry:
    id: str  # the file name, e.g. "qwen2.5-7b-instruct-q4_k_m.gguf" (a split model: its first part's)
    path: Path
    created: int  # the file's modification time


def model_id(path: Path) -> str:
    return Path(path).name


class ModelCatalog:
    """Lists and resolves model ids. Scans run on the caller's thread (the server calls from a worker
    thread); a lock keeps two scans of the same Library apart."""

    def __init__(self, library: Library | None, loaded: Callable[[], Path | None]) -> None:
        self._library = library
        self._loaded = loaded
        self._lock = threading.Lock()
        self._cache: tuple[float, list[CatalogEntry]] | None = None

    def entries(self) -> list[CatalogEntry]:
        """The loaded model first (even when it lives outside the library), then the library's readable
        models by name."""
        loaded = self._loaded()
        rows = [e for e in self._library_entries() if loaded is None or not _same(e.path, loaded)]
        if loaded is not None:
            rows.insert(0, CatalogEntry(model_id(loaded), loaded, _mtime(loaded)))
        return rows

    def resolve(self, name: str) -> CatalogEntry | None:
        """The entry a request's "model" names: its id, the id without .gguf (any case), or a path."""
        entries = self.entries()
        wanted = name.strip()
        for entry in entries:
            if entry.id == wanted:
                return entry
        folded = wanted.lower().removesuffix(".gguf")
        for entry in entries:
            if entry.id.lower().removesuffix(".gguf") == folded:
                return entry
        if os.sep in wanted or "/" in wanted:
            for entry in entries:
                if _same(entry.path, Path(wanted).expanduser()):
                    return entry
        return None

    def _library_entries(self) -> list[CatalogEntry]:
        if self._library is None:
            return []
        with self._lock:
            if self._cache is not None and time.monotonic() - self._cache[0] < RESCAN_S:
                return self._cache[1]
            rows = [
                CatalogEntry(model_id(e.path), e.path, e.mtime_ns // 1_000_000_000)
                for e in self._library.scan()
                if e.ok
            ]
            self._cache = (time.monotonic(), rows)
            return rows


def _same(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _mtime(path: Path) -> int:
    try:
        return int(path.stat().st_mtime)
    except OSError:
        return 0
