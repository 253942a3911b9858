"""The conversation history: SQLite (WAL) in Hearth's data folder, branches, streamed replies, search.

Threading: a Store holds one sqlite3 connection and must be used from the thread that opened it (the GUI
opens one on its store worker; the CLI in its main thread). Two processes may write at once: every write
is a short BEGIN IMMEDIATE transaction and waits (busy_timeout) for the other.

Messages form a tree: each message has a parent (None for the first), and each parent remembers which of
its children is active. The visible conversation is the active path; regenerating a reply or editing a
question adds a sibling and makes it active, so nothing is ever overwritten.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.errors import StoreError
from app.core.messages import ROLES, ChatMessage, ToolCall
from app.core.store_schema import migrate

log = logging.getLogger("hearth.store")

UNDO_SECONDS = 30 * 24 * 3600  # a deleted conversation can be restored for 30 days, then it is purged
FLUSH_SECONDS = 1.0  # a streamed reply reaches the disk at least this often
TITLE_CHARS = 60


@dataclass(frozen=True)
class Conversation:
    id: int
    uuid: str
    title: str
    created_at: float
    updated_at: float
    pinned: bool
    model_path: str
    template: str
    system_prompt: str
    sampling: dict[str, Any]
    load_settings: dict[str, Any]
    deleted_at: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # assistant, reply format, tools, documents ...


@dataclass(frozen=True)
class StoredMessage:
    """A message as the history keeps it: ids, its place among its siblings, and a reply's statistics.

    meta holds what else belongs to it: for a reply the effective "sampling" and "load" settings, its
    "tool_calls" and "sources"; for a tool result its "tool_call_id" and "name".
    """

    id: int
    uuid: str
    conversation_id: int
    parent_id: int | None
    role: str
    content: str
    created_at: float
    complete: bool = True
    model: str = ""
    template: str = ""
    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    gen_tps: float | None = None
    ttft_ms: float | None = None
    finish_reason: str | None = None
    sibling_index: int = 1  # this message's place among its siblings ("2 / 3")
    sibling_count: int = 1
    meta: dict[str, Any] = field(default_factory=dict)

    def to_chat(self) -> ChatMessage:
        """The message as a template or backend sees it."""
        calls = tuple(ToolCall.from_openai(c) for c in self.meta.get("tool_calls", ()) if isinstance(c, dict))
        return ChatMessage(self.role, self.content, calls, self.meta.get("tool_call_id"), self.meta.get("name") or None)


@dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    conversation_title: str
    message_id: int
    role: str
    snippet: str  # with the matches wrapped in [ and ]


@dataclass
class ReplyStats:
    """What the engine reports for a finished reply (a subset of GenerationStats, store-owned)."""

    finish_reason: str
    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    gen_tps: float | None = None
    ttft_ms: float | None = None


def make_title(text: str) -> str:
    """A title from the first message: its first line, cut at a word boundary."""
    line = next((part.strip() for part in text.strip().splitlines() if part.strip()), "")
    if len(line) <= TITLE_CHARS:
        return line or "New chat"
    cut = line[:TITLE_CHARS].rsplit(" ", 1)[0] or line[:TITLE_CHARS]
    return cut.rstrip(",.;:-") + "…"


_CONV_COLUMNS = (
    "id, uuid, title, created_at, updated_at, pinned, model_path, template, system_prompt, "
    "sampling_json, load_json, deleted_at, meta_json"
)
_MSG_COLUMNS = (
    "id, uuid, conversation_id, parent_id, role, content, created_at, complete, model, template, "
    "prompt_tokens, generated_tokens, gen_tps, ttft_ms, finish_reason, meta_json"
)
_JSON_FIELDS = {"sampling_json": "sampling", "load_json": "load_settings", "meta_json": "meta"}
_TIME_FIELDS = frozenset(["created_at", "updated_at"])
_COUNT_FIELDS = frozenset(["prompt_tokens", "generated_tokens"])
_TEXT_FIELDS = frozenset(["title", "content", "model", "template", "model_path", "system_prompt"])
_NUMBER_FIELDS = frozenset(["gen_tps", "ttft_ms"])
# Times every calendar on every platform can show (Windows' localtime ends in 3000; before 1970 it fails).
# Imports refuse anything outside; rows already stored outside (an older import, a hand edit) are read as
# the nearest end, so one odd row never stops listing, exporting or the app's start.
MIN_TIME = 86_400.0  # 1970-01-02
MAX_TIME = 32_503_680_000.0  # 3000-01-01


def clean_time(value: Any) -> float:
    """A stored time as a float within MIN_TIME..MAX_TIME (text or NaN in the column: MIN_TIME)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return MIN_TIME
    if seconds != seconds:  # NaN
        return MIN_TIME
    return min(max(seconds, MIN_TIME), MAX_TIME)


def clean_number(value: Any) -> float | None:
    """A stored statistic as a finite float, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def clean_count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _named(row: sqlite3.Row) -> dict[str, Any]:
    """A row as field name -> value: JSON columns decoded and renamed, integer flags as booleans."""
    values: dict[str, Any] = {}
    for key in row.keys():  # noqa: SIM118 (iterating a sqlite3.Row yields values, not names)
        if key in _JSON_FIELDS:
            values[_JSON_FIELDS[key]] = _json(row[key])
        elif key in _TIME_FIELDS or (key == "deleted_at" and row[key] is not None):
            values[key] = clean_time(row[key])
        elif key in _COUNT_FIELDS:
            values[key] = clean_count(row[key])
        elif key in _NUMBER_FIELDS:
            values[key] = clean_number(row[key])
        elif key in _TEXT_FIELDS and not isinstance(row[key], str):
            values[key] = "" if row[key] is None else str(row[key])
        elif key in ("pinned", "complete"):
            values[key] = bool(row[key])
        else:
            values[key] = row[key]
    return values


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(**_named(row))


def _message(row: sqlite3.Row, index: int = 1, count: int = 1) -> StoredMessage:
    values = _named(row)
    values.pop("active_child_id", None)
    return StoredMessage(**values, sibling_index=index, sibling_count=count)


def _rowid(cursor: sqlite3.Cursor) -> int:
    """The id of the row an INSERT just added."""
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class Store:
    """The history database. Open with Store.open(path); close() when done."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating or migrating) the database. Raises StoreError; damaged files: see store_recover."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=True)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the history database {path}: {exc}") from exc
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across app crashes
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA cache_size = -32000")  # 32 MB of page cache: a long history stays in memory
            applied = migrate(db)
            if applied:
                log.info("history database %s migrated to schema %s", path, applied[-1])
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreError(f"the history database {path.name} is damaged or not a database: {exc}") from exc
        return cls(db, path)

    def rows(self, sql: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        """A query's rows, readable by column name (the store never maps a row by position)."""
        cursor = self.db.cursor()
        cursor.row_factory = sqlite3.Row
        return cursor.execute(sql, parameters).fetchall()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; waits for another process's writer instead of failing."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"the history database is busy or read-only: {exc}") from exc
        try:
            yield self.db
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.db.execute("ROLLBACK")
            if "full" in str(exc).lower():
                raise StoreError("the disk is full: the last change to the history was not saved") from exc
            raise StoreError(f"could not save to the history: {exc}") from exc
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # ---- conversations ----------------------------------------------------------------------------------
    def create_conversation(
        self,
        *,
        title: str = "",
        model_path: str = "",
        template: str = "",
        system_prompt: str = "",
        sampling: dict[str, Any] | None = None,
        load_settings: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Conversation:
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO conversations (uuid, title, created_at, updated_at, model_path, template, "
                "system_prompt, sampling_json, load_json, meta_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(uuid.uuid4()),
                    title,
                    now,
                    now,
                    model_path,
                    template,
                    system_prompt,
                    json.dumps(sampling or {}),
                    json.dumps(load_settings or {}),
                    json.dumps(meta or {}),
                ),
            )
        return self.conversation(_rowid(cursor))

    def conversation(self, conversation_id: int) -> Conversation:
        found = self.rows(f"SELECT {_CONV_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,))
        row = found[0] if found else None
        if row is None:
            raise StoreError(f"conversation {conversation_id} does not exist")
        return _conversation(row)

    def list_conversations(self, limit: int = 200, offset: int = 0, *, deleted: bool = False) -> list[Conversation]:
        """Most recent first (pinned ones on top); deleted=True lists the ones that can still be restored."""
        where = "deleted_at IS NOT NULL" if deleted else "deleted_at IS NULL"
        rows = self.rows(
            f"SELECT {_CONV_COLUMNS} FROM conversations WHERE {where} "
            "ORDER BY pinned DESC, updated_at DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [_conversation(r) for r in rows]

    def update_conversation(self, conversation_id: int, **fields: Any) -> Conversation:
        """Change title, pinned, model_path, template, system_prompt, sampling, load_settings or meta."""
        columns = {
            "title": "title",
            "pinned": "pinned",
            "model_path": "model_path",
            "template": "template",
            "system_prompt": "system_prompt",
            "sampling": "sampling_json",
            "load_settings": "load_json",
            "meta": "meta_json",
        }
        unknown = set(fields) - set(columns)
        if unknown:
            raise StoreError(f"unknown conversation fields: {', '.join(sorted(unknown))}")
        values = [
            json.dumps(v) if k in ("sampling", "load_settings", "meta") else (int(v) if k == "pinned" else v)
            for k, v in fields.items()
        ]
        assignments = ", ".join(f"{columns[k]} = ?" for k in fields)
        with self._write() as db:
            db.execute(f"UPDATE conversations SET {assignments} WHERE id = ?", (*values, conversation_id))
        return self.conversation(conversation_id)

    def rename(self, conversation_id: int, title: str) -> Conversation:
        title = title.strip()
        if not title:
            raise StoreError("a conversation needs a title")
        return self.update_conversation(conversation_id, title=title[:500])

    def pin(self, conversation_id: int, pinned: bool = True) -> Conversation:
        return self.update_conversation(conversation_id, pinned=pinned)

    def delete(self, conversation_id: int) -> None:
        """Move to the trash: hidden now, restorable (restore()) until purged after UNDO_SECONDS."""
        with self._write() as db:
            db.execute("UPDATE conversations SET deleted_at = ? WHERE id = ?", (time.time(), conversation_id))

    def restore(self, conversation_id: int) -> Conversation:
        with self._write() as db:
            db.execute("UPDATE conversations SET deleted_at = NULL WHERE id = ?", (conversation_id,))
        return self.conversation(conversation_id)

    def purge_deleted(self, older_than: float = UNDO_SECONDS) -> int:
        """Really remove conversations deleted more than older_than seconds ago; returns how many."""
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM conversations WHERE deleted_at IS NOT NULL AND deleted_at <= ?",
                (time.time() - older_than,),
            )
        return cursor.rowcount

    # ---- messages -----------------------------------------------------------------------------------------
    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        parent_id: int | str | None = "leaf",
        meta: dict[str, Any] | None = None,
        **extra: Any,
    ) -> StoredMessage:
        """Append a message after parent_id (default: the end of the active path) and make it active.

        extra: further columns (complete, model, template, prompt_text ...); meta: the message's extras."""
        if role not in ROLES:
            raise StoreError(f"unknown role {role!r}")
        if meta:
            extra["meta_json"] = json.dumps(meta, ensure_ascii=False)
        if parent_id == "leaf":
            path = self.path_ids(conversation_id)
            parent_id = path[-1] if path else None
        now = time.time()
        with self._write() as db:
            columns = ["uuid", "conversation_id", "parent_id", "role", "content", "created_at", *extra]
            cursor = db.execute(
                f"INSERT INTO messages ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                (str(uuid.uuid4()), conversation_id, parent_id, role, content, now, *extra.values()),
            )
            message_id = _rowid(cursor)
            self._activate(db, conversation_id, parent_id if isinstance(parent_id, int) else None, message_id)
            title = db.execute("SELECT title FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            if title is not None and not title[0] and role == "user":
                db.execute("UPDATE conversations SET title = ? WHERE id = ?", (make_title(content), conversation_id))
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
        return self.message(message_id)

    @staticmethod
    def _activate(db: sqlite3.Connection, conversation_id: int, parent_id: int | None, child_id: int) -> None:
        if parent_id is None:
            db.execute("UPDATE conversations SET active_root_id = ? WHERE id = ?", (child_id, conversation_id))
        else:
            db.execute("UPDATE messages SET active_child_id = ? WHERE id = ?", (child_id, parent_id))

    def message(self, message_id: int) -> StoredMessage:
        found = self.rows(f"SELECT {_MSG_COLUMNS} FROM messages WHERE id = ?", (message_id,))
        row = found[0] if found else None
        if row is None:
            raise StoreError(f"message {message_id} does not exist")
        siblings = self.siblings(message_id)
        return _message(row, siblings.index(message_id) + 1, len(siblings))

    def prompt_text(self, message_id: int) -> str | None:
        """The exact prompt a reply was generated from ("show prompt"); loaded only when asked for."""
        row = self.db.execute("SELECT prompt_text FROM messages WHERE id = ?", (message_id,)).fetchone()
        return row[0] if row else None

    def siblings(self, message_id: int) -> list[int]:
        """Ids of this message and its alternatives (same parent, same conversation), oldest first."""
        row = self.db.execute("SELECT conversation_id, parent_id FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise StoreError(f"message {message_id} does not exist")
        return [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM messages WHERE conversation_id = ? AND parent_id IS ? ORDER BY id", row
            ).fetchall()
        ]

    def path_ids(self, conversation_id: int) -> list[int]:
        """Ids along the active path. A scalar subquery per step, not a join: once ANALYZE has run, SQLite
        builds a Bloom filter over all messages at every step of a joined recursion (45 ms vs 1 ms)."""
        rows = self.db.execute(
            "WITH RECURSIVE path(id, depth) AS ("
            " SELECT active_root_id, 0 FROM conversations WHERE id = ? AND active_root_id IS NOT NULL"
            " UNION ALL SELECT (SELECT m.active_child_id FROM messages m WHERE m.id = p.id), p.depth + 1"
            " FROM path p WHERE p.id IS NOT NULL) SELECT id FROM path WHERE id IS NOT NULL ORDER BY depth",
            (conversation_id,),
        ).fetchall()
        return [r[0] for r in rows]

    def messages(self, conversation_id: int) -> list[StoredMessage]:
        """The active path, each message with its branch position ("2 / 3"); one query, walked in Python."""
        root = self.db.execute("SELECT active_root_id FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        rows: dict[int, sqlite3.Row] = {}
        active: dict[int, int | None] = {}
        children: dict[int | None, list[int]] = {}
        for row in self.rows(
            f"SELECT {_MSG_COLUMNS}, active_child_id FROM messages WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        ):
            rows[row["id"]] = row
            active[row["id"]] = row["active_child_id"]
            children.setdefault(row["parent_id"], []).append(row["id"])
        result: list[StoredMessage] = []
        current = root[0] if root else None
        while current is not None and current in rows and len(result) <= len(rows):
            group = children[rows[current]["parent_id"]]
            result.append(_message(rows[current], group.index(current) + 1, len(group)))
            current = active[current]
        return result

    def switch_branch(self, message_id: int) -> list[StoredMessage]:
        """Make this alternative active (its own active descendants follow); returns the new path."""
        row = self.db.execute("SELECT conversation_id, parent_id FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise StoreError(f"message {message_id} does not exist")
        with self._write() as db:
            self._activate(db, row[0], row[1], message_id)
        return self.messages(row[0])

    def edit_message(self, message_id: int, content: str) -> StoredMessage:
        """Editing creates a sibling with the new text (the original stays as the other branch)."""
        original = self.message(message_id)
        return self.add_message(
            original.conversation_id, original.role, content, parent_id=original.parent_id, meta=original.meta
        )

    def start_reply(
        self,
        conversation_id: int,
        *,
        parent_id: int | str | None = "leaf",
        model: str = "",
        template: str = "",
        prompt_text: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> ReplyWriter:
        """Create an (incomplete) assistant message now and return the writer that streams into it.

        meta: what the reply is written with (the effective "sampling" and "load" settings ...)."""
        message = self.add_message(
            conversation_id,
            "assistant",
            "",
            parent_id=parent_id,
            meta=meta,
            complete=0,
            model=model,
            template=template,
            prompt_text=prompt_text,
        )
        return ReplyWriter(self, message.id)

    def incomplete_replies(self) -> list[StoredMessage]:
        """Replies cut off by a crash or kill (shown with what was saved, marked unfinished)."""
        rows = self.rows(f"SELECT {_MSG_COLUMNS} FROM messages WHERE complete = 0")
        return [_message(r) for r in rows]

    # ---- search -----------------------------------------------------------------------------------------
    def search(self, text: str, limit: int = 50) -> list[SearchHit]:
        """Full-text search over every message, newest first (words may be prefixes); matches in [ ]."""
        query = fts_query(text)
        if not query:
            return []
        try:
            rows = self.db.execute(
                "SELECT m.conversation_id, c.title, m.id, m.role, "
                "snippet(messages_fts, 0, '[', ']', '…', 12) "
                "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
                "JOIN conversations c ON c.id = m.conversation_id "
                "WHERE messages_fts MATCH ? AND c.deleted_at IS NULL "
                # Newest first, as chat apps list results; it also lets FTS5 stop after `limit` hits
                # instead of ranking every match (common words match a large part of a long history).
                "ORDER BY messages_fts.rowid DESC LIMIT ?",
                (query, limit),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot search for {text!r}: {exc}") from exc
        return [SearchHit(*row) for row in rows]


def fts_query(text: str) -> str:
    """User text -> an FTS5 query: every word must appear (as a prefix), no FTS syntax is interpreted."""
    words = [w for w in text.split() if w.strip('"')]
    return " ".join('"' + w.replace('"', '""') + '"*' for w in words)


@dataclass
class ReplyWriter:
    """Streams a reply into its message: chunks are buffered and written at least every FLUSH_SECONDS.

    append() costs microseconds (it only writes to the disk when the last flush is a second old), so a
    generation loop can call it per token. If the process dies, the message keeps what was last flushed
    and stays marked incomplete.
    """

    store: Store
    message_id: int
    flush_seconds: float = FLUSH_SECONDS
    _parts: list[str] = field(default_factory=list)
    _last_flush: float = field(default_factory=time.monotonic)
    _dirty: bool = False

    def append(self, chunk: str) -> None:
        if not chunk:
            return
        self._parts.append(chunk)
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def flush(self) -> None:
        if not self._dirty:
            return
        text = self.text
        self._parts = [text]
        with self.store._write() as db:
            db.execute("UPDATE messages SET content = ? WHERE id = ?", (text, self.message_id))
        self._dirty = False
        self._last_flush = time.monotonic()

    def finish(
        self, stats: ReplyStats, meta: dict[str, Any] | None = None, *, content: str | None = None
    ) -> StoredMessage:
        """Write the whole reply and its statistics and mark it complete (also for stopped replies).

        meta: extras learned while generating (the seed used, tool calls, sources), merged into the stored ones.
        content: the reply's final text when it differs from what was streamed (a tool call taken out of it)."""
        if content is not None:
            self._parts = [content]
        with self.store._write() as db:
            if meta:
                row = db.execute("SELECT meta_json FROM messages WHERE id = ?", (self.message_id,)).fetchone()
                merged = {**_json(row[0] if row else "{}"), **meta}
                db.execute(
                    "UPDATE messages SET meta_json = ? WHERE id = ?",
                    (json.dumps(merged, ensure_ascii=False), self.message_id),
                )
            db.execute(
                "UPDATE messages SET content = ?, complete = 1, prompt_tokens = ?, generated_tokens = ?, "
                "gen_tps = ?, ttft_ms = ?, finish_reason = ? WHERE id = ?",
                (
                    self.text,
                    stats.prompt_tokens,
                    stats.generated_tokens,
                    stats.gen_tps,
                    stats.ttft_ms,
                    stats.finish_reason,
                    self.message_id,
                ),
            )
        self._dirty = False
        return self.store.message(self.message_id)
