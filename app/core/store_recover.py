"""A damaged history database: move it aside (never delete it), start fresh, salvage what still reads.

Python's sqlite3 has no `.recover`; the salvage here walks each table in rowid order a few rows at a time
(seeking to the next rowid that exists, so sparse ids cost nothing), and where SQLite reports corruption
it gallops forward and bisects back to the first rowid that reads again. Every row on an intact page is
kept, only rows on broken pages are lost, and the work is bounded by the rows and damaged areas, never by
the span of rowids (ids 1 and 40,000,000 took 52 s and 1.5 GB when every window of 4 ids was probed).
Rows are copied into the fresh database through the normal schema (ids are renumbered; the uuids keep
identity, so salvaging twice adds nothing twice).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import StoreError
from app.core.store import Store

log = logging.getLogger("hearth.store")
WINDOW = 4  # rows read per query during a salvage (a silent stop hides at most 3 good rows)
MAX_ROWID = 2**63 - 1


@dataclass
class OpenResult:
    """The store to use, and when the old file was damaged: where it went and what to tell the user."""

    store: Store
    damaged_copy: Path | None = None
    message: str | None = None


@dataclass
class SalvageReport:
    conversations: int = 0
    messages: int = 0
    unreadable_ranges: int = 0

    def summary(self) -> str:
        lost = f"; {self.unreadable_ranges} damaged areas could not be read" if self.unreadable_ranges else ""
        return f"recovered {self.conversations} conversations and {self.messages} messages{lost}"


def open_store(path: Path) -> OpenResult:
    """Open the history; if it is damaged, keep it aside and continue with a fresh one (never fails)."""
    path = Path(path)
    try:
        store = Store.open(path)
        problem = integrity_problem(store.db)
        if problem is None:
            return OpenResult(store)
        store.close()
    except StoreError as exc:
        if not path.exists() or "newer Hearth" in str(exc):
            raise
        problem = str(exc)
    aside = move_aside(path)
    log.error("history database damaged (%s); moved to %s", problem, aside)
    message = (
        f"Your conversation history could not be read ({problem}). The damaged file was kept as {aside.name}; "
        "Hearth started a new history. Use Recover to copy back everything that can still be read."
    )
    return OpenResult(Store.open(path), aside, message)


def integrity_problem(db: sqlite3.Connection) -> str | None:
    try:
        rows = [r[0] for r in db.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if rows == ["ok"] else "; ".join(rows)


def move_aside(path: Path) -> Path:
    """Rename the database and its -wal/-shm files to <name>.damaged-<time>[-N] (nothing is deleted: a
    second damaged file in the same second gets the next free number instead of replacing the first)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    number = 1
    while any(Path(f"{aside}{suffix}").exists() for suffix in ("", "-wal", "-shm")):
        number += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{number}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{aside}{suffix}"))
    return aside


def salvage(damaged: Path, store: Store) -> SalvageReport:
    """Copy every readable conversation and message from a damaged file into store."""
    report = SalvageReport()
    uri = f"file:{damaged}?mode=ro"
    try:
        source = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {damaged.name} for recovery: {exc}") from exc
    try:
        conversation_meta = "meta_json" if _has_column(source, "conversations", "meta_json") else "'{}'"
        message_meta = "meta_json" if _has_column(source, "messages", "meta_json") else "'{}'"
        conversations = dict(
            _readable(
                source,
                "conversations",
                "id, uuid, title, created_at, updated_at, pinned, "
                f"model_path, template, system_prompt, sampling_json, load_json, {conversation_meta}",
                report,
            )
        )
        messages = list(
            _readable(
                source,
                "messages",
                "id, uuid, conversation_id, parent_id, role, content, "
                "created_at, complete, model, template, prompt_tokens, generated_tokens, "
                f"gen_tps, ttft_ms, finish_reason, {message_meta}",
                report,
            )
        )
    finally:
        source.close()
    _insert(store, conversations, messages, report)
    return report


def _has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    """Whether the (possibly damaged) file's table has column: schema 3 added the extras."""
    try:
        return any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})"))
    except sqlite3.DatabaseError:
        return False


def _readable(db: sqlite3.Connection, table: str, columns: str, report: SalvageReport) -> Iterator[tuple]:
    """(rowid, row) for every row that still reads, in rowid order.

    Each query reads the next WINDOW rows from a rowid on. A damaged leaf page does not always raise: a
    scan can silently end at it, so a short answer before the table's last rowid is treated like an
    error. Past an error, the next readable rowid is found by galloping and bisecting (a few dozen
    queries per damaged area, whatever the span of rowids).
    """
    try:
        low, high = db.execute(f"SELECT min(rowid), max(rowid) FROM {table}").fetchone()
    except sqlite3.DatabaseError:
        low, high = 1, MAX_ROWID  # the table's b-tree root is damaged: search blindly (galloping is cheap)
    if low is None:
        return
    select = f"SELECT rowid, {columns} FROM {table} WHERE rowid >= ? ORDER BY rowid LIMIT {WINDOW}"
    position = low
    while position <= high:
        rows = _read_from(db, select, position)
        if rows:
            for row in rows:
                yield row[0], row[1:]
            position = rows[-1][0] + 1
            if len(rows) == WINDOW or position > high:
                continue
            rows = _read_from(db, select, position)  # a short answer: the end, or a silent stop?
            if rows or position > high:
                continue
        report.unreadable_ranges += 1
        position = _next_readable(db, select, position, high)


def _read_from(db: sqlite3.Connection, select: str, position: int) -> list[tuple] | None:
    """Up to WINDOW rows from position on; None when SQLite reports the file damaged there."""
    try:
        return db.execute(select, (position,)).fetchall()
    except sqlite3.DatabaseError:
        return None


def _next_readable(db: sqlite3.Connection, select: str, position: int, high: int) -> int:
    """The first rowid after a damaged area from which rows read again (high + 1 when none do)."""
    good = None
    step = 1
    while position + step <= high:  # gallop: 1, 2, 4 ... rowids ahead
        if _read_from(db, select, position + step):
            good = position + step
            break
        step *= 2
    if good is None:
        return high + 1
    bad = position + step // 2 if step > 1 else position
    while good - bad > 1:  # bisect back to the first rowid that reads
        middle = (bad + good) // 2
        if _read_from(db, select, middle):
            good = middle
        else:
            bad = middle
    return good


def _insert(store: Store, conversations: dict[int, tuple], messages: list[tuple], report: SalvageReport) -> None:
    known_conv = {r[0] for r in store.db.execute("SELECT uuid FROM conversations")}
    known_msg = {r[0] for r in store.db.execute("SELECT uuid FROM messages")}
    new_ids: dict[int, int] = {}
    with store._write() as db:
        for old_id, row in conversations.items():
            if row[1] in known_conv:
                continue
            cursor = db.execute(
                "INSERT INTO conversations (uuid, title, created_at, updated_at, pinned, model_path, template, "
                "system_prompt, sampling_json, load_json, meta_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row[1:],
            )
            new_ids[old_id] = int(cursor.lastrowid or 0)  # an INSERT always sets it
            report.conversations += 1
        message_ids: dict[int, int] = {}
        for old_id, row in sorted(messages, key=lambda item: item[0]):
            conversation = new_ids.get(row[2])
            if conversation is None or row[1] in known_msg:
                continue
            parent = message_ids.get(row[3]) if row[3] is not None else None
            cursor = db.execute(
                "INSERT INTO messages (uuid, conversation_id, parent_id, role, content, created_at, complete, model, "
                "template, prompt_tokens, generated_tokens, gen_tps, ttft_ms, finish_reason, meta_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row[1], conversation, parent, *row[4:]),
            )
            message_ids[old_id] = int(cursor.lastrowid or 0)
            # the newest child becomes the active branch: the active pointers themselves may be lost
            store._activate(db, conversation, parent, message_ids[old_id])
            report.messages += 1
