"""The history store on real SQLite files: migrations, branches, streaming saves, crashes, damage, writers."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.cli.terminal import safe
from app.core.errors import StoreError
from app.core.instance import InstanceLock
from app.core.store import ReplyStats, Store, fts_query, make_title
from app.core.store_export import export_json, export_markdown, import_json
from app.core.store_recover import open_store, salvage
from app.core.store_schema import SCHEMA_VERSION, current_version

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "history-schemas"


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "history.sqlite3") as opened:
        yield opened


def chat(store: Store, *turns: str) -> int:
    conv = store.create_conversation(
        model_path="/m/model.gguf",
        template="chatml",
        system_prompt="Be kind.",
        sampling={"temperature": 0.7},
        load_settings={"n_ctx": 4096},
    )
    for index, text in enumerate(turns):
        store.add_message(conv.id, "user" if index % 2 == 0 else "assistant", text)
    return conv.id


# ---- schema -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", range(0, SCHEMA_VERSION))
def test_migrates_from_every_earlier_version(tmp_path: Path, version: int):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    if version:
        db.executescript((SCHEMAS / f"v{version}.sql").read_text())
    db.close()
    with Store.open(path) as store:
        assert current_version(store.db) == SCHEMA_VERSION
        if version:  # the fixture's data survived and is searchable
            assert [c.title for c in store.list_conversations()] == ["Old chat"]
            messages = store.messages(store.list_conversations()[0].id)
            assert [m.content for m in messages] == ["hello from v1", "hi back"]
            assert store.search("hello")[0].snippet == "[hello] from v1"


def test_schema_fixtures_match_the_migrations(tmp_path: Path):
    """tests/data/history-schemas/vN.sql must be what migration N created (the fixtures are the history)."""
    from app.core.store_schema import SCRIPTS

    for version in range(1, SCHEMA_VERSION):
        fixture = (SCHEMAS / f"v{version}.sql").read_text()
        assert SCRIPTS[version].strip() in fixture


def test_a_newer_database_is_refused_not_damaged(tmp_path: Path):
    path = tmp_path / "future.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer Hearth"):
        open_store(path)
    assert path.exists() and not list(tmp_path.glob("*.damaged-*"))


# ---- conversations and branches ---------------------------------------------------------------------------


def test_conversation_fields_title_and_listing(store: Store):
    first = chat(store, "How do I bake bread?\nI have flour.", "Mix, knead, bake.")
    conv = store.conversation(first)
    assert conv.title == "How do I bake bread?"
    assert (conv.model_path, conv.template, conv.system_prompt) == ("/m/model.gguf", "chatml", "Be kind.")
    assert conv.sampling == {"temperature": 0.7} and conv.load_settings == {"n_ctx": 4096}
    second = chat(store, "x" * 200)
    assert store.conversation(second).title.endswith("…") and len(store.conversation(second).title) <= 61
    assert [c.id for c in store.list_conversations()] == [second, first]
    store.pin(first)
    assert [c.id for c in store.list_conversations()] == [first, second]
    store.rename(second, "  Renamed  ")
    assert store.conversation(second).title == "Renamed"
    with pytest.raises(StoreError, match="needs a title"):
        store.rename(second, "   ")


def test_branches_regenerate_edit_and_switch(store: Store):
    cid = chat(store, "Q1", "A1", "Q2")
    q2 = store.messages(cid)[-1]
    reply = store.start_reply(cid, model="m.gguf", template="chatml", prompt_text="<prompt>")
    reply.append("first ")
    reply.append("answer")
    first = reply.finish(ReplyStats("stop", 12, 2, 30.0, 50.0))
    regen = store.start_reply(cid, parent_id=q2.id)
    regen.append("second answer")
    second = regen.finish(ReplyStats("stop"))
    assert (second.sibling_index, second.sibling_count, second.finish_reason) == (2, 2, "stop")
    path = store.messages(cid)
    assert [m.content for m in path] == ["Q1", "A1", "Q2", "second answer"]
    assert (path[-1].sibling_index, path[-1].sibling_count) == (2, 2)
    store.switch_branch(first.id)
    path = store.messages(cid)
    assert path[-1].content == "first answer" and path[-1].sibling_index == 1
    assert (path[-1].gen_tps, path[-1].prompt_tokens) == (30.0, 12)
    assert store.prompt_text(path[-1].id) == "<prompt>"
    edited = store.edit_message(path[0].id, "Q1 again")
    assert [m.content for m in store.messages(cid)] == ["Q1 again"]  # a new branch from the first question
    assert store.messages(cid)[0].sibling_count == 2
    store.switch_branch(path[0].id)  # back to the original: its whole subtree returns with it
    assert [m.content for m in store.messages(cid)] == ["Q1", "A1", "Q2", "first answer"]
    assert store.siblings(edited.id) == [path[0].id, edited.id]


def test_delete_undo_and_purge(store: Store):
    cid = chat(store, "keep me")
    store.delete(cid)
    assert store.list_conversations() == [] and [c.id for c in store.list_conversations(deleted=True)] == [cid]
    assert store.search("keep") == []
    store.restore(cid)
    assert [c.id for c in store.list_conversations()] == [cid]
    store.delete(cid)
    assert store.purge_deleted(older_than=3600) == 0  # still inside the undo window
    assert store.purge_deleted(older_than=0) == 1
    assert store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


def test_search_with_snippets_and_hostile_queries(store: Store):
    chat(store, "The quick brown fox jumps over the lazy dog", "Foxes are quick.")
    chat(store, "Completely different topic: résumé writing")
    hits = store.search("quick fox")
    assert hits[0].snippet.count("[") >= 2
    assert {h.role for h in hits} <= {"user", "assistant"}
    assert store.search("resume")[0].snippet.startswith("Completely different topic: [résumé]")
    for query in ['"', "AND OR NOT", "fox*)", "NEAR(", "a:b", "'; DROP TABLE messages; --"]:
        store.search(query)  # FTS syntax is never interpreted: no error, no injection
    assert store.search("   ") == []
    assert fts_query('say "hi"') == '"say"* """hi"""*'


def test_make_title():
    assert make_title("\n\n  Hello there  \nsecond line") == "Hello there"
    assert make_title("") == "New chat"


# ---- streaming saves and crashes --------------------------------------------------------------------------


def test_streamed_reply_is_saved_at_least_every_second(store: Store):
    cid = chat(store, "tell me")
    writer = store.start_reply(cid)
    writer.flush_seconds = 0.2
    writer.append("part one. ")
    on_disk = store.db.execute("SELECT content, complete FROM messages WHERE id = ?", (writer.message_id,))
    assert on_disk.fetchone() == ("", 0)  # buffered: appends are cheap
    time.sleep(0.25)
    writer.append("part two.")
    assert store.message(writer.message_id).content == "part one. part two."
    assert [m.id for m in store.incomplete_replies()] == [writer.message_id]
    writer.finish(ReplyStats("cancelled", generated_tokens=4))
    message = store.message(writer.message_id)
    assert message.complete and message.finish_reason == "cancelled" and store.incomplete_replies() == []


WRITER = """
import sys, time
from pathlib import Path
from app.core.store import Store
store = Store.open(Path(sys.argv[1]))
cid = store.create_conversation().id
store.add_message(cid, "user", "stream please")
writer = store.start_reply(cid)
writer.flush_seconds = 0.05
n = 0
while True:
    n += 1
    writer.append(f"word{n} ")
    if n == 40:
        print("saved-through", n, flush=True)
    time.sleep(0.005)
"""


def test_killed_mid_stream_keeps_the_text_up_to_the_last_save(tmp_path: Path):
    path = tmp_path / "history.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert child.stdout.readline().startswith("saved-through")
    time.sleep(0.3)  # several more flushes
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with Store.open(path) as store:
        [reply] = store.incomplete_replies()
        words = reply.content.split()
        assert len(words) >= 40 and words[:3] == ["word1", "word2", "word3"]
        assert words == [f"word{i}" for i in range(1, len(words) + 1)]  # a clean prefix, nothing torn
        assert not reply.complete


TWO_WRITERS = """
import sys
from pathlib import Path
from app.core.store import Store
store = Store.open(Path(sys.argv[1]))
for i in range(60):
    cid = store.create_conversation(title=f"{sys.argv[2]}-{i}").id
    store.add_message(cid, "user", f"message {i} from {sys.argv[2]}")
print("done")
"""


def test_two_processes_writing_at_once(tmp_path: Path):
    path = tmp_path / "history.sqlite3"
    Store.open(path).close()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_WRITERS, str(path), name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for name in ("a", "b")
    ]
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0 and out.strip() == "done", err
    with Store.open(path) as store:
        assert len(store.list_conversations(limit=1000)) == 120
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert len(store.search("message")) == 50


def test_single_instance_lock_between_processes(tmp_path: Path):
    lock_path = tmp_path / "hearth.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from pathlib import Path; from app.core.instance import InstanceLock;"
            "l=InstanceLock(Path(sys.argv[1])); print(l.acquire(), flush=True); time.sleep(60)",
            str(lock_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        second = InstanceLock(lock_path)
        assert not second.acquire()
        assert second.holder_pid() == holder.pid
    finally:
        holder.kill()
        holder.wait()
    with InstanceLock(lock_path) as third:  # the OS dropped the dead holder's lock
        assert third.acquire()


# ---- damaged databases ------------------------------------------------------------------------------------


def _corrupt(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def _filled(path: Path, conversations: int = 40) -> None:
    with Store.open(path) as store:
        for i in range(conversations):
            chat(store, f"question {i} " + "lorem ipsum " * 40, f"answer {i} " + "dolor sit " * 40)
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_damaged_database_is_moved_aside_and_a_fresh_one_starts(tmp_path: Path):
    path = tmp_path / "history.sqlite3"
    _filled(path)
    _corrupt(path, 0, b"this is not sqlite at all")
    result = open_store(path)
    try:
        assert result.damaged_copy is not None and result.damaged_copy.exists()
        assert "could not be read" in result.message and result.damaged_copy.name in result.message
        assert result.store.list_conversations() == []  # a working, empty history
        chat(result.store, "life goes on")
    finally:
        result.store.close()


def _wreck_a_leaf_page(path: Path) -> None:
    """Overwrite the cells of one table leaf page (b-tree page type 0x0D) from the middle of the file:
    what a bad sector or a torn write does. Interior pages are left alone: rows under a broken interior
    page are unreachable through the b-tree, which this salvage (like SQLite's own) depends on."""
    data = path.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    for number in range(len(data) // page_size // 2, len(data) // page_size):
        start = number * page_size
        if data[start] == 0x0D and int.from_bytes(data[start + 3 : start + 5], "big") >= 2:
            _corrupt(
                path, start + 8 + 2 * int.from_bytes(data[start + 3 : start + 5], "big"), os.urandom(page_size // 2)
            )
            return
    raise AssertionError("no table leaf page found")


def test_salvage_recovers_what_still_reads(tmp_path: Path):
    path = tmp_path / "history.sqlite3"
    _filled(path)
    _wreck_a_leaf_page(path)
    result = open_store(path)
    try:
        assert result.damaged_copy is not None, "quick_check should notice the broken page"
        report = salvage(result.damaged_copy, result.store)
        assert report.conversations >= 35 and report.messages >= 65  # of 40 and 80
        conversations = result.store.list_conversations(limit=100)
        assert len(conversations) == report.conversations
        some = next(c for c in conversations if result.store.messages(c.id))
        assert result.store.messages(some.id)[0].content.startswith("question")
        again = salvage(result.damaged_copy, result.store)  # uuids keep identity: nothing twice
        assert (again.conversations, again.messages) == (0, 0)
    finally:
        result.store.close()


# ---- export / import --------------------------------------------------------------------------------------


def test_export_import_round_trip_is_lossless(tmp_path: Path, store: Store):
    cid = chat(store, "Q1 with ünïcode ✓", "A1")
    q = store.add_message(cid, "user", "Q2")
    w = store.start_reply(cid, model="m.gguf", template="chatml", prompt_text="full prompt")
    w.append("reply one")
    w.finish(ReplyStats("stop", 10, 2, 12.5, 80.0))
    w2 = store.start_reply(cid, parent_id=q.id)
    w2.append("unfinished reply")
    w2.flush()
    store.pin(cid)
    exported = export_json(store, [cid])
    target = tmp_path / "export.json"
    target.write_text(exported, encoding="utf-8")
    with Store.open(tmp_path / "other.sqlite3") as other:
        assert import_json(other, target) == (1, 0)
        assert import_json(other, target) == (0, 1)  # again: nothing twice
        assert (
            export_json(other, [other.list_conversations()[0].id]).split('"conversations"')[1]
            == exported.split('"conversations"')[1]
        )
        path = other.messages(other.list_conversations()[0].id)
        assert path[-1].content == "unfinished reply" and not path[-1].complete
    markdown = export_markdown(store, [cid])
    assert "# Q1 with ünïcode ✓" in markdown and "**You:**" in markdown and "(unfinished)" in markdown
    assert "version 2 of 2" in markdown


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda d: d.update(format="other"), "not a Hearth history export"),
        (lambda d: d.update(version=99), "version 99"),
        (lambda d: d["conversations"][0].update(title=5), r"conversations\[0\]\.title: expected str"),
        (lambda d: d["conversations"][0]["messages"][0].update(role="robot"), "role: expected one of"),
        (
            lambda d: d["conversations"][0]["messages"][1].update(parent="00000000-0000-0000-0000-000000000000"),
            "not an earlier message",
        ),
        (lambda d: d["conversations"][0]["messages"][0].update(content="x" * (11 * 1024 * 1024)), "too long"),
        (lambda d: d["conversations"][0].update(pinned="yes"), "pinned: expected bool"),
        (lambda d: d["conversations"][0]["messages"][0].update(prompt_tokens=True), "got a boolean"),
        (lambda d: d["conversations"][0].update(uuid="not-a-uuid"), "not a uuid"),
        (lambda d: d["conversations"][0].update(created_at="yesterday"), "ISO 8601"),
        (lambda d: d["conversations"].append(7), r"conversations\[1\]: expected an object"),
    ],
)
def test_hostile_import_files_change_nothing(tmp_path: Path, store: Store, mutate, pattern):
    cid = chat(store, "Q", "A")
    document = json.loads(export_json(store, [cid]))
    store.delete(cid)
    store.purge_deleted(older_than=0)
    document["conversations"][0]["uuid"] = "11111111-1111-1111-1111-111111111111"
    mutate(document)
    target = tmp_path / "bad.json"
    target.write_text(json.dumps(document))
    with pytest.raises(StoreError, match=pattern):
        import_json(store, target)
    assert store.db.execute("SELECT count(*) FROM conversations").fetchone()[0] == 0


def test_import_refuses_non_utf8_and_non_json(tmp_path: Path, store: Store):
    bad = tmp_path / "latin1.json"
    bad.write_bytes('{"title": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(StoreError, match="not UTF-8"):
        import_json(store, bad)
    bad.write_text("[1, 2,")
    with pytest.raises(StoreError, match="not valid JSON"):
        import_json(store, bad)
    with pytest.raises(StoreError, match="cannot read"):
        import_json(store, tmp_path / "missing.json")


# ---- CLI --------------------------------------------------------------------------------------------------


def hearth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )


def test_history_cli_and_chat_saves_to_history(tiny_model: Path, tmp_path: Path):
    assert "No conversations yet" in hearth("history", "list").stdout
    result = hearth("chat", str(tiny_model), "-m", "the quick fox", "--max-tokens", "6", "--ctx", "512", "--seed", "2")
    assert result.returncode == 0, result.stderr
    listing = json.loads(hearth("history", "list", "--json").stdout)
    assert len(listing) == 1 and listing[0]["title"] == "the quick fox"
    cid = str(listing[0]["id"])
    shown = hearth("history", "show", cid).stdout
    # `history show` is for people: control characters a tiny random model may write are shown escaped.
    assert "the quick fox" in shown and safe(result.stdout.strip()) in shown
    assert "[quick]" in hearth("history", "search", "quick").stdout
    exported = tmp_path / "all.json"
    assert hearth("history", "export", "--format", "json", "-o", str(exported)).returncode == 0
    assert hearth("history", "delete", cid).returncode == 0
    assert json.loads(hearth("history", "list", "--json").stdout) == []
    assert hearth("history", "restore", cid).returncode == 0
    markdown = hearth("history", "export", cid, "--format", "md").stdout
    assert markdown.startswith("# the quick fox")
    bad = hearth("history", "import", str(tmp_path / "missing.json"))
    assert bad.returncode == 2 and "cannot read" in bad.stderr
    assert hearth("history", "show", "999").returncode == 2
    none = hearth("chat", str(tiny_model), "-m", "private", "--max-tokens", "2", "--ctx", "512", "--no-history")
    assert none.returncode == 0 and len(json.loads(hearth("history", "list", "--json").stdout)) == 1
