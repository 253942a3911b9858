"""The history database's schema and its migrations, one function per version step (PRAGMA user_version).

Every historical schema stays reproducible (tests/data/history-schemas/vN.sql) and migrations are tested
from each of them. A migration runs in one transaction: it completes or leaves the old schema untouched.
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 3

V1 = """
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    pinned INTEGER NOT NULL DEFAULT 0,
    model_path TEXT NOT NULL DEFAULT '',
    template TEXT NOT NULL DEFAULT '',
    system_prompt TEXT NOT NULL DEFAULT '',
    sampling_json TEXT NOT NULL DEFAULT '{}',
    load_json TEXT NOT NULL DEFAULT '{}',
    active_root_id INTEGER
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
    active_child_id INTEGER,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    complete INTEGER NOT NULL DEFAULT 1,
    model TEXT NOT NULL DEFAULT '',
    template TEXT NOT NULL DEFAULT '',
    prompt_tokens INTEGER,
    generated_tokens INTEGER,
    gen_tps REAL,
    ttft_ms REAL,
    finish_reason TEXT
);
CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
CREATE INDEX messages_by_parent ON messages(parent_id);
CREATE INDEX conversations_recent ON conversations(pinned DESC, updated_at DESC);
"""

# v2: full-text search over every message, soft delete with an undo window, the prompt each reply was
# generated from ("show prompt"), and the recent-list index now skips deleted conversations.
V2 = """
ALTER TABLE conversations ADD COLUMN deleted_at REAL;
ALTER TABLE messages ADD COLUMN prompt_text TEXT;
DROP INDEX conversations_recent;
CREATE INDEX conversations_recent ON conversations(deleted_at, pinned DESC, updated_at DESC);
CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='id',
                                             tokenize='unicode61 remove_diacritics 2');
CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER messages_au AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
"""

# v3: tool turns (role 'tool': a function's result) and a JSON object of extras per message and per
# conversation. A reply's extras hold the effective sampling and load settings it was written with, its
# tool calls, its sources; a conversation's hold its assistant, reply format, tools and documents. SQLite
# cannot change a CHECK constraint in place, so messages is rebuilt (ids kept: the FTS index stays valid);
# this step runs with foreign keys off (see FOREIGN_KEYS_OFF), else dropping the old table would cascade.
V3 = """
CREATE TABLE messages_new (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
    active_child_id INTEGER,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    complete INTEGER NOT NULL DEFAULT 1,
    model TEXT NOT NULL DEFAULT '',
    template TEXT NOT NULL DEFAULT '',
    prompt_tokens INTEGER,
    generated_tokens INTEGER,
    gen_tps REAL,
    ttft_ms REAL,
    finish_reason TEXT,
    prompt_text TEXT,
    meta_json TEXT NOT NULL DEFAULT '{}'
);
INSERT INTO messages_new (id, uuid, conversation_id, parent_id, active_child_id, role, content, created_at, complete,
    model, template, prompt_tokens, generated_tokens, gen_tps, ttft_ms, finish_reason, prompt_text)
SELECT id, uuid, conversation_id, parent_id, active_child_id, role, content, created_at, complete, model, template,
    prompt_tokens, generated_tokens, gen_tps, ttft_ms, finish_reason, prompt_text FROM messages;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
CREATE INDEX messages_by_parent ON messages(parent_id);
CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER messages_au AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
ALTER TABLE conversations ADD COLUMN meta_json TEXT NOT NULL DEFAULT '{}';
"""

SCRIPTS = {1: V1, 2: V2, 3: V3}
# Steps that rebuild a table: SQLite's documented procedure turns foreign keys off around the transaction
# (the pragma is ignored inside one) and checks them before committing.
FOREIGN_KEYS_OFF = {3}


def current_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection) -> list[int]:
    """Bring the database to SCHEMA_VERSION; returns the versions applied. Refuses a newer database."""
    version = current_version(db)
    if version > SCHEMA_VERSION:
        from app.core.errors import StoreError

        raise StoreError(
            f"the history database is from a newer Hearth (schema {version}, this one knows {SCHEMA_VERSION}); "
            "update Hearth to open it"
        )
    applied = []
    for step in range(version + 1, SCHEMA_VERSION + 1):
        keys_off = step in FOREIGN_KEYS_OFF
        if keys_off:
            db.execute("PRAGMA foreign_keys = OFF")
        # executescript commits first; the explicit transaction makes each step all-or-nothing.
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(step):
                db.execute(statement)
            if keys_off and db.execute("PRAGMA foreign_key_check").fetchone() is not None:
                raise sqlite3.DatabaseError(f"migration {step} would break a foreign key; nothing was changed")
            db.execute(f"PRAGMA user_version = {step}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            if keys_off:
                db.execute("PRAGMA foreign_keys = ON")
        applied.append(step)
    return applied


def _statements(step: int) -> list[str]:
    script = SCRIPTS[step]
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        joined = "\n".join(current)
        if sqlite3.complete_statement(joined):
            statements.append(joined)
            current = []
    return statements
