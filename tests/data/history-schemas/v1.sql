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

-- Schema version 1 as Hearth created it (kept verbatim: migrations are tested from here), plus sample data.
PRAGMA user_version = 1;
INSERT INTO conversations (id, uuid, title, created_at, updated_at, pinned, model_path, template, system_prompt,
    sampling_json, load_json, active_root_id)
VALUES (1, '2b1f8c8e-7d1a-4c1e-9f43-5c5a0b3f6d11', 'Old chat', 1700000000.0, 1700000100.0, 0, '/m/old.gguf',
    'chatml', '', '{}', '{}', 1);
INSERT INTO messages (id, uuid, conversation_id, parent_id, active_child_id, role, content, created_at)
VALUES (1, '0b6d3f4e-8a2c-4f7e-b1d9-2e3c4a5b6c71', 1, NULL, 2, 'user', 'hello from v1', 1700000000.0),
       (2, '9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c62', 1, 1, NULL, 'assistant', 'hi back', 1700000100.0);
