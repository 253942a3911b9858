-- Schema version 2 as Hearth created it: version 1's script, then migration 2 (kept verbatim: migrations
-- are tested from here), plus sample data.
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
PRAGMA user_version = 2;
INSERT INTO conversations (id, uuid, title, created_at, updated_at, pinned, model_path, template, system_prompt,
    sampling_json, load_json, active_root_id)
VALUES (1, '2b1f8c8e-7d1a-4c1e-9f43-5c5a0b3f6d11', 'Old chat', 1700000000.0, 1700000100.0, 0, '/m/old.gguf',
    'chatml', '', '{}', '{}', 1);
INSERT INTO messages (id, uuid, conversation_id, parent_id, active_child_id, role, content, created_at)
VALUES (1, '0b6d3f4e-8a2c-4f7e-b1d9-2e3c4a5b6c71', 1, NULL, 2, 'user', 'hello from v1', 1700000000.0),
       (2, '9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c62', 1, 1, NULL, 'assistant', 'hi back', 1700000100.0);
