"""`hearth history recover` does bounded work on any file, keeps every damaged file, carries extras."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from app.core.store import Store
from app.core.store_recover import move_aside, open_store, salvage
from tests.core.test_store import _filled, _wreck_a_leaf_page, chat
from tests.support.memory import PEAK_MB

REPO = Path(__file__).resolve().parents[2]


def sparse_history(path: Path) -> None:
    """Rows 1..n and then one conversation and message with row id 40,000,000, damaged in the middle."""
    _filled(path, conversations=30)
    with Store.open(path) as store:
        cid = chat(store, "far question", "far answer")
        store.db.execute("PRAGMA foreign_keys = OFF")
        store.db.execute("UPDATE conversations SET id = 40000000 WHERE id = ?", (cid,))
        store.db.execute("UPDATE messages SET conversation_id = 40000000 WHERE conversation_id = ?", (cid,))
        last = store.db.execute("SELECT max(id) FROM messages").fetchone()[0]
        store.db.execute("UPDATE messages SET id = 40000000 WHERE id = ?", (last,))
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _wreck_a_leaf_page(path)


def test_recovering_sparse_row_ids_is_bounded(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.sqlite3"
    sparse_history(damaged)
    script = PEAK_MB + textwrap.dedent(
        f"""
        import json, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from app.core.store import Store
        from app.core.store_recover import salvage
        started = time.perf_counter()
        with Store.open(Path({str(tmp_path / "fresh.sqlite3")!r})) as store:
            report = salvage(Path({str(damaged)!r}), store)
            far = [c.title for c in store.list_conversations(limit=100) if c.title.startswith("far")]
        print(json.dumps({{"elapsed": time.perf_counter() - started,
                           "peak_mb": peak_mb(),
                           "conversations": report.conversations, "messages": report.messages, "far": far}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["elapsed"] < 5 and result["peak_mb"] < 150, result
    assert result["conversations"] >= 25 and result["far"] == ["far question"], result


def test_two_damaged_files_set_aside_in_the_same_second_are_both_kept(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    kept = []
    for text in ("first", "second", "third"):
        path.write_text(text)
        Path(f"{path}-wal").write_text(text + " wal")
        kept.append(move_aside(path))
    assert len(set(kept)) == 3
    assert [p.read_text() for p in kept] == ["first", "second", "third"]
    assert [Path(f"{p}-wal").read_text() for p in kept] == ["first wal", "second wal", "third wal"]


def test_salvage_carries_the_extras_of_schema_3(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    _filled(path, conversations=30)
    with Store.open(path) as store:
        conv = store.create_conversation(title="with extras", meta={"assistant": "coder"})
        store.add_message(conv.id, "user", "hi")
        store.add_message(conv.id, "assistant", "hello", meta={"sampling": {"temperature": 0.5}})
        store.add_message(conv.id, "tool", "42", meta={"tool_call_id": "call_1", "name": "add"})
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _wreck_a_leaf_page(path)
    result = open_store(path)
    try:
        assert result.damaged_copy is not None
        salvage(result.damaged_copy, result.store)
        [recovered] = [c for c in result.store.list_conversations(limit=100) if c.title == "with extras"]
        assert recovered.meta == {"assistant": "coder"}
        metas = [m.meta for m in result.store.messages(recovered.id)]
        assert metas == [{}, {"sampling": {"temperature": 0.5}}, {"tool_call_id": "call_1", "name": "add"}]
    finally:
        result.store.close()


def test_salvage_of_a_file_without_extras_still_works(tmp_path: Path) -> None:
    """A damaged file from schema 1 or 2 (no meta_json column) salvages as before."""
    import sqlite3

    path = tmp_path / "v2.sqlite3"
    db = sqlite3.connect(path)
    db.executescript((REPO / "tests" / "data" / "history-schemas" / "v2.sql").read_text())
    db.close()
    with Store.open(tmp_path / "fresh.sqlite3") as store:
        report = salvage(path, store)
        assert report.conversations == 1 and report.messages == 2
    started = time.perf_counter()
    assert time.perf_counter() - started < 1
    assert os.path.exists(path)
