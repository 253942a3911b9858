"""Benchmark: the history store at 10,000 conversations of 20 messages (issue #5 targets).

Targets: listing the 200 most recent <= 50 ms, search <= 100 ms, opening a 1,000-message conversation
<= 50 ms, appending a streamed chunk <= 1 ms. Run: python tests/benchmarks/bench_store.py
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.core.store import Store

WORDS = (
    "river town bread flour oven python sqlite model token chat summer winter garden music quantum "
    "history market coffee mountain bicycle library window paper engine signal harbor lantern"
).split()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def populate(store: Store, conversations: int, per_conversation: int) -> None:
    rng = random.Random(1)
    now = time.time() - conversations * 60
    with store._write() as db:
        for c in range(conversations):
            created = now + c * 60
            cid = db.execute(
                "INSERT INTO conversations (uuid, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (str(uuid.uuid4()), sentence(rng, 5), created, created + 30),
            ).lastrowid
            parent = None
            for m in range(per_conversation):
                role = "user" if m % 2 == 0 else "assistant"
                mid = db.execute(
                    "INSERT INTO messages (uuid, conversation_id, parent_id, role, content, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (str(uuid.uuid4()), cid, parent, role, sentence(rng, 25 if role == "user" else 60), created + m),
                ).lastrowid
                Store._activate(db, cid, parent, mid)
                parent = mid


def timed(fn, repeat: int = 20) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="hearth-bench-store-"))
    store = Store.open(folder / "history.sqlite3")
    started = time.perf_counter()
    populate(store, 10_000, 20)
    long_id = store.create_conversation(title="A very long chat").id
    with store._write() as db:
        parent = None
        for m in range(1000):
            mid = db.execute(
                "INSERT INTO messages (uuid, conversation_id, parent_id, role, content, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    str(uuid.uuid4()),
                    long_id,
                    parent,
                    "user" if m % 2 == 0 else "assistant",
                    f"message {m} " * 30,
                    time.time(),
                ),
            ).lastrowid
            Store._activate(db, long_id, parent, mid)
            parent = mid
    store.db.execute("PRAGMA optimize")
    print(
        f"populated 10,000 x 20 messages in {time.perf_counter() - started:.0f} s "
        f"({(folder / 'history.sqlite3').stat().st_size / 2**20:.0f} MiB)"
    )

    rows = [
        ("list the 200 most recent", timed(lambda: store.list_conversations(200)), 50),
        ("search 'quantum harbor' (FTS5, 50 hits)", timed(lambda: store.search("quantum harbor")), 100),
        ("search a rare prefix 'lanter'", timed(lambda: store.search("lanter")), 100),
        ("open a 1,000-message conversation", timed(lambda: store.messages(long_id)), 50),
    ]
    writer = store.start_reply(long_id)
    chunks = ["token "] * 5000
    start = time.perf_counter()
    for chunk in chunks:  # a generation at ~300 tok/s for ~17 s: the writer flushes every second
        writer.append(chunk)
        time.sleep(0.003)
    elapsed = time.perf_counter() - start - 0.003 * len(chunks)
    rows.append(("append a streamed chunk (mean, flushes included)", elapsed / len(chunks) * 1000, 1))
    single = []
    for _ in range(50):
        t = time.perf_counter()
        writer.flush_seconds = 0
        writer.append("x")
        single.append((time.perf_counter() - t) * 1000)
    rows.append(("one flush to disk (worst case of an append)", statistics.median(single), None))
    print(f"{'operation':<52} {'ms':>8}   target")
    for name, ms, target in rows:
        print(f"{name:<52} {ms:>8.3f}   {'<= ' + str(target) + ' ms' if target else ''}")
    store.close()


if __name__ == "__main__":
    main()
