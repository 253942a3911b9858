"""DocumentIndex: collections, files, chunks, full-text (FTS5, BM25) and vectors (sqlite-vec) in one SQLite
file, and the hybrid search over them (reciprocal rank fusion).

Threads: one connection per thread (opened on first use in that thread), WAL journal, so an indexing worker
writes while another thread searches. Each file's chunks and vectors are replaced in one transaction: a
kill during indexing leaves every file either as it was or fully re-indexed, never half.

sqlite-vec is a loadable extension; CPython is often built without extension loading (pyenv's default),
so the connection comes from sqlean.py (the sqlite3 module with a current SQLite that can load them).
Vectors from one embedding model only: switching models drops the vectors (chunks stay) and they are
computed again on the next index run.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlean as sqlite3
import sqlite_vec

from app.core.documents.chunking import Chunk
from app.core.errors import DocumentsError

log = logging.getLogger("hearth.documents")

SCHEMA_VERSION = 1
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009): 1 / (60 + rank)
CHARS_PER_PAGE = 3000  # a "page" of a text file, for page counts and speed figures (PDFs count real pages)
HIDDEN_PREFIX = "file:"  # collections made for a single attached file: "file:/abs/path", not listed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS collections(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    indexed_at REAL
);
CREATE TABLE IF NOT EXISTS sources(
    id INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    UNIQUE(collection_id, path)
);
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    pages INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,          -- 'indexed' or 'failed'
    error TEXT,
    indexed_at REAL NOT NULL,
    UNIQUE(collection_id, path)
);
CREATE TABLE IF NOT EXISTS chunks(
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    collection_id INTEGER NOT NULL,
    ordinal INTEGER NOT NULL,
    page INTEGER,
    line_start INTEGER NOT NULL,
    line_end INTEGER NOT NULL,
    heading TEXT NOT NULL,
    text TEXT NOT NULL,
    embedded INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS chunks_file ON chunks(file_id);
CREATE INDEX IF NOT EXISTS chunks_unembedded ON chunks(collection_id) WHERE embedded = 0;
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    heading, text, content='chunks', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, heading, text) VALUES ('delete', old.id, old.heading, old.text);
END;
"""

# Words that carry no topic: dropped from the keyword query so BM25 ranks by what the question is about.
_STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i if in into is it
    its me my of on or our shall should so than that the their them then there these they this those to
    was we were what when where which while who whom why will with would you your about any some such not
    no yes also just only very more most much many may might must use used using""".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class CollectionInfo:
    """A collection as listed: its sources and what the index holds for it."""

    name: str
    sources: tuple[str, ...]
    files: int
    failed: int
    chunks: int
    embedded: int
    pages: int
    indexed_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "sources": list(self.sources)}


@dataclass(frozen=True)
class FileRecord:
    """What the index knows about one file (to decide whether it changed)."""

    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str
    status: str
    error: str | None
    chunks: int
    unembedded: int


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk with every score that ranked it (None: that retriever did not find it)."""

    chunk_id: int
    path: str
    kind: str
    page: int | None
    line_start: int
    line_end: int
    heading: str
    text: str
    bm25: float | None  # FTS5's bm25() made positive: higher is better
    bm25_rank: int | None  # 1-based rank among the keyword results
    vector: float | None  # cosine similarity to the question
    vector_rank: int | None
    score: float  # fused score (reciprocal rank fusion)
    rank: int  # 1-based final rank


@dataclass
class SearchResult:
    """Hits best first, the mode used ("hybrid", "bm25" or "vector") and a note for the user, if any."""

    hits: list[Hit]
    mode: str
    note: str = ""
    candidates: dict[str, int] = field(default_factory=dict)


def fts_query(question: str) -> str:
    """A safe FTS5 query from free text: its content words OR-ed (quoted, so no syntax can leak in)."""
    words = [w for w in (m.group(0).lower() for m in _WORD.finditer(question)) if w not in _STOPWORDS]
    if not words:  # a question of stopwords only: search them all rather than nothing
        words = [m.group(0).lower() for m in _WORD.finditer(question)]
    unique = list(dict.fromkeys(words))[:64]
    return " OR ".join(f'"{w}"' for w in unique)


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion of several best-first id lists: id -> sum of 1 / (k + rank)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return fused


class DocumentIndex:
    """The document index file. Methods may be called from any thread (each thread gets its connection)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self.connection()
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise DocumentsError(f"{self.path.name} was written by a newer Hearth; update Hearth to use it")
            if version == 0:  # one script, one transaction: a kill leaves no half schema
                db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};COMMIT;")
        except sqlite3.DatabaseError as exc:
            raise DocumentsError(
                f"the document index {self.path} is damaged ({exc}); delete it to start over"
            ) from None

    # ---- connections ---------------------------------------------------------------------------------
    def connection(self) -> Any:
        """This thread's connection (opened on first use)."""
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
                db.enable_load_extension(True)
                sqlite_vec.load(db)
                db.enable_load_extension(False)
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
                db.execute("PRAGMA foreign_keys = ON")
            except sqlite3.DatabaseError as exc:
                raise DocumentsError(f"the document index {self.path} cannot be opened: {exc}") from None
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    class _Transaction:
        def __init__(self, db: Any) -> None:
            self.db = db

        def __enter__(self) -> Any:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type: object, *_rest: object) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def transaction(self) -> DocumentIndex._Transaction:
        """`with index.transaction() as db:` one atomic write (BEGIN IMMEDIATE ... COMMIT/ROLLBACK)."""
        return DocumentIndex._Transaction(self.connection())

    def close(self) -> None:
        """Close every thread's connection (call when no other thread uses the index any more)."""
        with self._lock:
            for db in self._connections:
                try:
                    db.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()

    # ---- collections ---------------------------------------------------------------------------------
    def add_collection(self, name: str, paths: Iterable[Path]) -> None:
        """Create the collection (or add sources to it); paths are stored absolute."""
        name = name.strip()
        if not name or name.startswith(HIDDEN_PREFIX):
            raise DocumentsError(f"{name!r} cannot name a collection; use letters, digits, spaces")
        self._add(name, paths)

    def _add(self, name: str, paths: Iterable[Path]) -> int:
        with self.transaction() as db:
            row = db.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()
            cid = (
                row[0]
                if row
                else db.execute("INSERT INTO collections(name, created) VALUES (?, ?)", (name, time.time())).lastrowid
            )
            for path in paths:
                db.execute(
                    "INSERT OR IGNORE INTO sources(collection_id, path) VALUES (?, ?)",
                    (cid, str(Path(path).expanduser().resolve())),
                )
            return int(cid)

    def file_collection(self, path: Path) -> str:
        """The hidden collection holding one attached file (created on first use); its name."""
        resolved = Path(path).expanduser().resolve()
        name = f"{HIDDEN_PREFIX}{resolved}"
        self._add(name, [resolved])
        return name

    def remove_collection(self, name: str) -> None:
        cid = self.collection_id(name)
        with self.transaction() as db:
            if self._has_vectors(db):
                db.execute(
                    "DELETE FROM chunk_vectors WHERE rowid IN (SELECT id FROM chunks WHERE collection_id = ?)", (cid,)
                )
            db.execute("DELETE FROM chunks WHERE collection_id = ?", (cid,))
            db.execute("DELETE FROM collections WHERE id = ?", (cid,))

    def collection_id(self, name: str) -> int:
        row = self.connection().execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()
        if row is None:
            known = ", ".join(self.collection_names()) or "none yet"
            raise DocumentsError(f"no document collection named {name!r} (collections: {known})")
        return int(row[0])

    def collection_names(self, *, hidden: bool = False) -> list[str]:
        rows = self.connection().execute("SELECT name FROM collections ORDER BY name").fetchall()
        return [r[0] for r in rows if hidden or not r[0].startswith(HIDDEN_PREFIX)]

    def sources(self, name: str) -> list[Path]:
        rows = (
            self.connection()
            .execute("SELECT path FROM sources WHERE collection_id = ? ORDER BY path", (self.collection_id(name),))
            .fetchall()
        )
        return [Path(r[0]) for r in rows]

    def collections(self, *, hidden: bool = False) -> list[CollectionInfo]:
        db = self.connection()
        result = []
        for name in self.collection_names(hidden=hidden):
            cid = self.collection_id(name)
            files, failed, pages = db.execute(
                "SELECT COUNT(*) FILTER (WHERE status = 'indexed'), COUNT(*) FILTER (WHERE status = 'failed'),"
                " COALESCE(SUM(pages), 0) FROM files WHERE collection_id = ?",
                (cid,),
            ).fetchone()
            chunks, embedded = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(embedded), 0) FROM chunks WHERE collection_id = ?", (cid,)
            ).fetchone()
            indexed_at = db.execute("SELECT indexed_at FROM collections WHERE id = ?", (cid,)).fetchone()[0]
            result.append(
                CollectionInfo(
                    name, tuple(str(p) for p in self.sources(name)), files, failed, chunks, embedded, pages, indexed_at
                )
            )
        return result

    def mark_indexed(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE collections SET indexed_at = ? WHERE id = ?", (time.time(), self.collection_id(name)))

    # ---- files -----------------------------------------------------------------------------------------
    def files(self, name: str) -> dict[str, FileRecord]:
        rows = (
            self.connection()
            .execute(
                "SELECT f.id, f.path, f.size, f.mtime_ns, f.sha256, f.status, f.error,"
                " (SELECT COUNT(*) FROM chunks c WHERE c.file_id = f.id),"
                " (SELECT COUNT(*) FROM chunks c WHERE c.file_id = f.id AND c.embedded = 0)"
                " FROM files f WHERE f.collection_id = ?",
                (self.collection_id(name),),
            )
            .fetchall()
        )
        return {r[1]: FileRecord(*r) for r in rows}

    def failures(self, name: str) -> list[tuple[str, str]]:
        rows = (
            self.connection()
            .execute(
                "SELECT path, error FROM files WHERE collection_id = ? AND status = 'failed' ORDER BY path",
                (self.collection_id(name),),
            )
            .fetchall()
        )
        return [(r[0], r[1] or "") for r in rows]

    def write_file(
        self,
        name: str,
        path: str,
        *,
        kind: str,
        size: int,
        mtime_ns: int,
        sha256: str,
        pages: int,
        chunks: Sequence[Chunk],
        vectors: np.ndarray | None,
        model_key: str | None,
    ) -> None:
        """Replace one file's chunks (and vectors) in one transaction."""
        cid = self.collection_id(name)
        with self.transaction() as db:
            if vectors is not None:
                self._ensure_vectors(db, model_key or "", vectors.shape[1])
            self._delete_file(db, cid, path)
            fid = db.execute(
                "INSERT INTO files(collection_id, path, kind, size, mtime_ns, sha256, pages, status, indexed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'indexed', ?)",
                (cid, path, kind, size, mtime_ns, sha256, pages, time.time()),
            ).lastrowid
            embedded = 1 if vectors is not None else 0
            for i, chunk in enumerate(chunks):
                chunk_id = db.execute(
                    "INSERT INTO chunks(file_id, collection_id, ordinal, page, line_start, line_end, heading, text,"
                    " embedded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        fid,
                        cid,
                        chunk.ordinal,
                        chunk.page,
                        chunk.line_start,
                        chunk.line_end,
                        chunk.heading,
                        chunk.text,
                        embedded,
                    ),
                ).lastrowid
                if vectors is not None:
                    db.execute(
                        "INSERT INTO chunk_vectors(rowid, collection_id, embedding) VALUES (?, ?, ?)",
                        (chunk_id, cid, vectors[i].astype(np.float32).tobytes()),
                    )

    def write_failure(self, name: str, path: str, *, kind: str, size: int, mtime_ns: int, error: str) -> None:
        """Record a file that could not be read (its old chunks leave the index)."""
        cid = self.collection_id(name)
        with self.transaction() as db:
            self._delete_file(db, cid, path)
            db.execute(
                "INSERT INTO files(collection_id, path, kind, size, mtime_ns, sha256, status, error, indexed_at)"
                " VALUES (?, ?, ?, ?, ?, '', 'failed', ?, ?)",
                (cid, path, kind, size, mtime_ns, error, time.time()),
            )

    def touch_file(self, file_id: int, mtime_ns: int) -> None:
        """The file's time changed but not its content: remember the new time, keep the chunks."""
        with self.transaction() as db:
            db.execute("UPDATE files SET mtime_ns = ? WHERE id = ?", (mtime_ns, file_id))

    def remove_file(self, name: str, path: str) -> None:
        cid = self.collection_id(name)
        with self.transaction() as db:
            self._delete_file(db, cid, path)

    def _delete_file(self, db: Any, cid: int, path: str) -> None:
        row = db.execute("SELECT id FROM files WHERE collection_id = ? AND path = ?", (cid, path)).fetchone()
        if row is None:
            return
        if self._has_vectors(db):
            db.execute("DELETE FROM chunk_vectors WHERE rowid IN (SELECT id FROM chunks WHERE file_id = ?)", (row[0],))
        db.execute("DELETE FROM chunks WHERE file_id = ?", (row[0],))
        db.execute("DELETE FROM files WHERE id = ?", (row[0],))

    # ---- vectors --------------------------------------------------------------------------------------
    def model_key(self) -> str | None:
        """Which embedding model the stored vectors come from (None: no vectors yet)."""
        row = self.connection().execute("SELECT value FROM meta WHERE key = 'embedding_model'").fetchone()
        return json.loads(row[0])["key"] if row else None

    def use_model(self, model_key: str, dimensions: int) -> bool:
        """Make the index hold vectors of this model; True when earlier vectors (another model) were dropped."""
        with self.transaction() as db:
            return self._ensure_vectors(db, model_key, dimensions)

    def _ensure_vectors(self, db: Any, model_key: str, dimensions: int) -> bool:
        row = db.execute("SELECT value FROM meta WHERE key = 'embedding_model'").fetchone()
        if row is not None:
            stored = json.loads(row[0])
            if stored["key"] == model_key and stored["dimensions"] == dimensions:
                return False
            log.info("embedding model changed (%s -> %s): vectors dropped", stored["key"], model_key)
            db.execute("DROP TABLE IF EXISTS chunk_vectors")
            db.execute("UPDATE chunks SET embedded = 0")
        db.execute(
            f"CREATE VIRTUAL TABLE chunk_vectors USING vec0(collection_id integer partition key, "
            f"embedding float[{int(dimensions)}] distance_metric=cosine)"
        )
        db.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('embedding_model', ?)",
            (json.dumps({"key": model_key, "dimensions": dimensions}),),
        )
        return row is not None

    @staticmethod
    def _has_vectors(db: Any) -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunk_vectors'").fetchone() is not None

    def unembedded(self, name: str, limit: int = 256) -> list[tuple[int, str, str]]:
        """(chunk id, heading, text) of chunks still without a vector."""
        return (
            self.connection()
            .execute(
                "SELECT id, heading, text FROM chunks WHERE collection_id = ? AND embedded = 0 ORDER BY id LIMIT ?",
                (self.collection_id(name), limit),
            )
            .fetchall()
        )

    def write_vectors(self, name: str, chunk_ids: Sequence[int], vectors: np.ndarray, model_key: str) -> None:
        cid = self.collection_id(name)
        with self.transaction() as db:
            self._ensure_vectors(db, model_key, vectors.shape[1])
            for chunk_id, vector in zip(chunk_ids, vectors):
                db.execute("DELETE FROM chunk_vectors WHERE rowid = ?", (chunk_id,))
                db.execute(
                    "INSERT INTO chunk_vectors(rowid, collection_id, embedding) VALUES (?, ?, ?)",
                    (chunk_id, cid, vector.astype(np.float32).tobytes()),
                )
                db.execute("UPDATE chunks SET embedded = 1 WHERE id = ?", (chunk_id,))

    # ---- search ---------------------------------------------------------------------------------------
    def keyword_search(self, question: str, collection_ids: Sequence[int], limit: int) -> list[tuple[int, float]]:
        """(chunk id, BM25 score, higher better), best first, from FTS5 (headings weigh twice the text)."""
        query = fts_query(question)
        if not query or not collection_ids:
            return []
        marks = ",".join("?" * len(collection_ids))
        sql = (
            "SELECT c.id, -bm25(chunks_fts, 2.0, 1.0) FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid"
            f" WHERE chunks_fts MATCH ? AND c.collection_id IN ({marks}) ORDER BY bm25(chunks_fts, 2.0, 1.0) LIMIT ?"
        )
        rows = self.connection().execute(sql, (query, *collection_ids, limit)).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    def vector_search(self, vector: np.ndarray, collection_ids: Sequence[int], limit: int) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity), best first, exact k-nearest search per collection."""
        db = self.connection()
        if not self._has_vectors(db):
            return []
        blob = np.asarray(vector, dtype=np.float32).tobytes()
        found: list[tuple[int, float]] = []
        for cid in collection_ids:
            rows = db.execute(
                "SELECT rowid, distance FROM chunk_vectors WHERE embedding MATCH ? AND k = ? AND collection_id = ?",
                (blob, limit, cid),
            ).fetchall()
            found.extend((int(r[0]), 1.0 - float(r[1])) for r in rows)
        found.sort(key=lambda item: -item[1])
        return found[:limit]

    def chunk_rows(self, chunk_ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
        """id -> (path, kind, page, line_start, line_end, heading, text)."""
        if not chunk_ids:
            return {}
        marks = ",".join("?" * len(chunk_ids))
        rows = (
            self.connection()
            .execute(
                f"SELECT c.id, f.path, f.kind, c.page, c.line_start, c.line_end, c.heading, c.text FROM chunks c"
                f" JOIN files f ON f.id = c.file_id WHERE c.id IN ({marks})",
                tuple(chunk_ids),
            )
            .fetchall()
        )
        return {int(r[0]): tuple(r[1:]) for r in rows}

    def embedded_fraction(self, collection_ids: Sequence[int]) -> float:
        if not collection_ids:
            return 0.0
        marks = ",".join("?" * len(collection_ids))
        total, embedded = (
            self.connection()
            .execute(
                f"SELECT COUNT(*), COALESCE(SUM(embedded), 0) FROM chunks WHERE collection_id IN ({marks})",
                tuple(collection_ids),
            )
            .fetchone()
        )
        return embedded / total if total else 0.0

    def search(
        self,
        question: str,
        collections: Sequence[str],
        *,
        k: int = 5,
        query_vector: np.ndarray | None = None,
        candidates: int = 50,
        rrf_k: int = RRF_K,
    ) -> SearchResult:
        """Hybrid search: BM25 and (with a query vector) cosine kNN, fused by reciprocal rank."""
        ids = [self.collection_id(name) for name in collections]
        keyword = self.keyword_search(question, ids, candidates)
        semantic = self.vector_search(query_vector, ids, candidates) if query_vector is not None else []
        if query_vector is None:
            mode, note = "bm25", "keyword search only (BM25): no embedding model is set"
        elif not semantic:
            mode, note = "bm25", "keyword search only (BM25): these documents have no vectors yet; index them again"
        else:
            mode, note = "hybrid", ""
            fraction = self.embedded_fraction(ids)
            if fraction < 1.0:
                note = f"{fraction:.0%} of the chunks have vectors; index again to embed the rest"
        fused = rrf([[i for i, _ in keyword], [i for i, _ in semantic]], rrf_k)
        best = sorted(fused, key=lambda i: -fused[i])[:k]
        rows = self.chunk_rows(best)
        bm25 = {cid: (rank, score) for rank, (cid, score) in enumerate(keyword, start=1)}
        vec = {cid: (rank, score) for rank, (cid, score) in enumerate(semantic, start=1)}
        hits = []
        for rank, cid in enumerate(best, start=1):
            path, kind, page, start, end, heading, text = rows[cid]
            hits.append(
                Hit(
                    cid,
                    path,
                    kind,
                    page,
                    start,
                    end,
                    heading,
                    text,
                    bm25[cid][1] if cid in bm25 else None,
                    bm25[cid][0] if cid in bm25 else None,
                    vec[cid][1] if cid in vec else None,
                    vec[cid][0] if cid in vec else None,
                    fused[cid],
                    rank,
                )
            )
        return SearchResult(hits, mode, note, {"bm25": len(keyword), "vector": len(semantic)})
