"""A folder of small JSON documents, one per item: atomic writes, unreadable files moved aside, never lost."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from app.core.errors import HearthError

log = logging.getLogger("hearth.data")

T = TypeVar("T")
SUFFIX = ".json"
MAX_BYTES = 4 * 1024 * 1024  # an assistant or a prompt is a few KB; a huge file is not one of ours


class NewerFormatError(HearthError):
    """A file was written by a newer Hearth: left where it is, untouched, and skipped."""


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """An item read from its file."""

    item: T
    path: Path


def read_json_object(path: Path, limit: int = MAX_BYTES) -> dict[str, Any]:
    """A JSON object from a file; ValueError/OSError with the reason (JSON errors with line and column)."""
    if path.stat().st_size > limit:
        raise ValueError(f"larger than {limit // (1024 * 1024)} MiB")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def write_json_atomic(path: Path, data: Any) -> None:
    """Write data as JSON to path through a temporary file and a rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def move_aside(path: Path) -> Path | None:
    """Rename an unreadable file to NAME.broken-TIMESTAMP next to it (kept for the user); None if that failed."""
    stamp = int(time.time())
    for attempt in range(100):
        aside = path.with_name(f"{path.name}.broken-{stamp}" + (f"-{attempt}" if attempt else ""))
        if aside.exists():
            continue
        try:
            os.replace(path, aside)
            return aside
        except OSError as exc:
            log.warning("cannot move %s aside: %s", path, exc)
            return None
    return None


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe, lower-case form of a name ("Text → JSON" -> "text-json")."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return cleaned[:limit].strip("-") or "item"


class JsonFolder(Generic[T]):
    """Reads and writes the items of one kind (assistants, prompts) as FOLDER/ID.json.

    `parse` turns a file's object into an item or raises HearthError/ValueError/KeyError/TypeError; a file it
    refuses, or that is not JSON, is moved aside and reported in `problems` (for the UI and the CLI to show).
    """

    def __init__(
        self,
        folder: Path,
        kind: str,
        parse: Callable[[dict[str, Any]], T],
        error: type[HearthError] = HearthError,
    ) -> None:
        self.folder = Path(folder)
        self.kind = kind
        self._parse = parse
        self._error = error
        self.problems: list[str] = []

    def path_for(self, item_id: str) -> Path:
        return self.folder / f"{item_id}{SUFFIX}"

    def read_all(self) -> Iterator[Loaded[T]]:
        """Every readable item, in file-name order. Fills `problems` afresh."""
        self.problems = []
        try:
            files = sorted(p for p in self.folder.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))
        except FileNotFoundError:
            return
        except OSError as exc:
            self.problems.append(f"cannot read the {self.kind} folder {self.folder}: {exc.strerror or exc}")
            return
        for path in files:
            item = self._read(path)
            if item is not None:
                yield Loaded(item, path)

    def _read(self, path: Path) -> T | None:
        try:
            return self._parse(read_json_object(path))
        except NewerFormatError as exc:
            self.problems.append(f"{path.name}: {exc}; skipped (update Hearth to use it)")
            return None
        except OSError as exc:
            self.problems.append(f"cannot read {path}: {exc.strerror or exc}")
            return None
        except (HearthError, ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = move_aside(path)
            where = f"moved to {aside.name}" if aside else "left in place"
            reason = str(exc) or type(exc).__name__
            message = f"{self.kind} file {path.name} is unusable ({reason}); {where}"
            log.warning("%s", message)
            self.problems.append(message)
            return None

    def write(self, item_id: str, data: dict[str, Any]) -> Path:
        path = self.path_for(item_id)
        try:
            write_json_atomic(path, data)
        except OSError as exc:
            raise self._error(f"cannot save the {self.kind} to {path}: {exc.strerror or exc}") from exc
        return path

    def remove(self, item_id: str) -> None:
        try:
            self.path_for(item_id).unlink(missing_ok=True)
        except OSError as exc:
            raise self._error(f"cannot delete {self.path_for(item_id)}: {exc.strerror or exc}") from exc
