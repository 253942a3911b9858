"""DocumentIndex: collections, files, chunks, full-text (FTS5, BM25) and vectors (sqlite-vec) in one SQLite
file, and the hybrid search over them (reciprocal rank fusion).

Threads: one connection per thread (opened on first use in that thread), WAL journal, so an indexing worker
writes while another thread searches. Each file's chunks and vectors are replaced in one transaction: a
kill during indexing leaves every file either as it was or fully re-indexed, never half.

sqlite-vec is a loadable extension; CPython is often built without extension loading (pyenv's default),
so the connection comes from sqlean.py (the sqlite3 module with a current SQLite that can load them).
Vectors from one embedding model only: switching models drops the vectors (chunks stay) and they are
computed again on the next index run. They are unit length, so sqlite-vec's L2 distance ranks exactly as
cosine does (cosine = 1 - d^2 / 2) and its L2 kernel is the cheaper of the two (49 against 62 ms of CPU
for a 100,000-vector scan, sqlite-vec 0.1.9).

Keyword search over a large index is dominated by FTS5's bm25(), evaluated for every chunk that contains
any query word: a word found in a large share of the chunks (a common word of the collection) carries
little weight but makes most chunks match. Such words are left out of the query (see _selective_terms).
"""

from __future__ import annotations

import json
import logging
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
from app.core.documents.terms import joined, query_terms
from app.core.errors import DocumentsError

log = logging.getLogger("hearth.documents")

SCHEMA_VERSION = 2  # 2: vectors ranked by L2 (were cosine), an index on chunks(collection_id)
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009): 1 / (60 + rank)
CHARS_PER_PAGE = 3000  # a "page" of a text file, for page counts and speed figures (PDFs count real pages)
HIDDEN_PREFIX = "file:"  # collections made for a single attached file: "file:/abs/path", not listed
# A query word found in more than this share of the chunks (and in more than COMMON_MIN_CHUNKS of them) is
# left out of the keyword query. FTS5's BM25 weighs a word by idf = log((N - n + 0.5) / (n + 0.5)): at 5 %
# that is under 3, against about 9 for a word in ten chunks of 100,000, so dropping it barely moves the
# ranking while it saves one bm25() evaluation per chunk it occurs in (Elasticsearch's cutoff_frequency
# idea). Below COMMON_MIN_CHUNKS matching chunks the cost is small anyway: small collections are searched
# with every word.
COMMON_FRACTION = 0.05
COMMON_MIN_CHUNKS = 2000
HEADING_WEIGHT = 2.0  # BM25 weight of the heading path against the text (1.0)

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
CREATE INDEX IF NOT EXISTS chunks_collection ON chunks(collection_id);
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


def vector_table_sql(dimensions: int) -> str:
    """The vec0 table of chunk vectors (rowid = chunk id), partitioned by collection."""
    return (
        f"CREATE VIRTUAL TABLE chunk_vectors USING vec0(collection_id integer partition key, "
        f"embedding float[{int(dimensions)}] distance_metric=l2)"
    )


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
            elif version == 1:
                self._upgrade_from_1(db)
        except sqlite3.DatabaseError as exc:
            raise DocumentsError(
                f"the document index {self.path} is damaged ({exc}); delete it to start over"
            ) from None

    @staticmethod
    def _upgrade_from_1(db: Any) -> None:
        """Version 1 ranked vectors by cosine: the same vectors move to an L2 table (one transaction)."""
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE INDEX IF NOT EXISTS chunks_collection ON chunks(collection_id)")
            row = db.execute("SELECT value FROM meta WHERE key = 'embedding_model'").fetchone()
            if row is not None and DocumentIndex._has_vectors(db):
                db.execute("CREATE TEMP TABLE moved AS SELECT rowid AS id, collection_id, embedding FROM chunk_vectors")
                db.execute("DROP TABLE chunk_vectors")
                db.execute(vector_table_sql(json.loads(row[0])["dimensions"]))
                db.execute(
                    "INSERT INTO chunk_vectors(rowid, collection_id, embedding)"
                    " SELECT id, collection_id, embedding FROM moved"
                )
                db.execute("DROP TABLE moved")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

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

    def remove_source(self, name: str, path: Path | str) -> None:
        """Stop following a folder or file; its files leave the index at the next index run."""
        cid = self.collection_id(name)
        with self.transaction() as db:
            db.execute("DELETE FROM sources WHERE collection_id = ? AND path = ?", (cid, str(path)))

    def is_indexed_file(self, path: Path | str) -> bool:
        """Whether this exact file was read into the index (by any collection): the only files Hearth opens."""
        row = (
            self.connection()
            .execute("SELECT 1 FROM files WHERE path = ? AND status = 'indexed' LIMIT 1", (str(path),))
            .fetchone()
        )
        return row is not None

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
        db.execute(vector_table_sql(dimensions))
        db.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('embedding_model', ?)",
            (json.dumps({"key": model_key, "dimensions": dimensions}),),
        )
        return row is not None

    @staticmethod
    def _has_vectors(db: Any) -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunk_vectors'").fetchone() is not None

    def unembedded(self, name: str, limit: int = 256) -> list[tuple[int, str, str, str]]:
        """(chunk id, heading, text, file path) of chunks still without a vector."""
        return (
            self.connection()
            .execute(
                "SELECT c.id, c.heading, c.text, f.path FROM chunks c JOIN files f ON f.id = c.file_id"
                " WHERE c.collection_id = ? AND c.embedded = 0 ORDER BY c.id LIMIT ?",
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
        """(chunk id, BM25 score, higher better), best first, from FTS5 (headings weigh HEADING_WEIGHT times
        the text). Words common across the index are left out (see COMMON_FRACTION); when every word is
        common, the chunks holding all of them are searched first."""
        terms = query_terms(question)
        if not terms or not collection_ids:
            return []
        db = self.connection()
        total = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        marks = ",".join("?" * len(collection_ids))
        asked = db.execute(f"SELECT COUNT(*) FROM chunks WHERE collection_id IN ({marks})", tuple(collection_ids))
        whole_index = asked.fetchone()[0] == total  # no need to filter by collection (the usual case)
        selective = self._selective_terms(db, terms, total)
        queries = [joined(selective)] if selective else [joined(terms, "AND"), joined(terms)]
        weights = f"{HEADING_WEIGHT}, 1.0"
        if whole_index:
            sql = (
                f"SELECT rowid, bm25(chunks_fts, {weights}) AS s FROM chunks_fts WHERE chunks_fts MATCH ?"
                " ORDER BY s LIMIT ?"
            )
            parameters: tuple[Any, ...] = (limit,)
        else:
            sql = (
                f"SELECT c.id, bm25(chunks_fts, {weights}) AS s FROM chunks_fts"
                f" JOIN chunks c ON c.id = chunks_fts.rowid WHERE chunks_fts MATCH ?"
                f" AND c.collection_id IN ({marks}) ORDER BY s LIMIT ?"
            )
            parameters = (*collection_ids, limit)
        rows: list[Any] = []
        for query in queries:
            rows = db.execute(sql, (query, *parameters)).fetchall()
            if len(rows) >= limit:
                break
        return [(int(r[0]), -float(r[1])) for r in rows]

    @staticmethod
    def _selective_terms(db: Any, terms: list[str], total: int) -> list[str]:
        """The terms found in at most COMMON_FRACTION of the chunks (or COMMON_MIN_CHUNKS). Each is counted
        only up to that limit, so a common word costs a bounded walk through its list, not a full one."""
        limit = max(COMMON_MIN_CHUNKS, int(total * COMMON_FRACTION))
        if total <= limit:
            return terms
        kept = []
        for term in terms:
            found = db.execute(
                "SELECT COUNT(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT ?)",
                (joined([term]), limit + 1),
            ).fetchone()[0]
            if found <= limit:
                kept.append(term)
        return kept

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
            # L2 distance d between unit vectors: cosine similarity = 1 - d^2 / 2.
            found.extend((int(r[0]), 1.0 - float(r[1]) ** 2 / 2.0) for r in rows)
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
        """The share of the collections' chunks that have a vector (1.0 when there are none)."""
        if not collection_ids:
            return 0.0
        marks = ",".join("?" * len(collection_ids))
        db = self.connection()
        # Chunks without a vector come from the partial index chunks_unembedded: free when there are none.
        missing = db.execute(
            f"SELECT COUNT(*) FROM chunks WHERE collection_id IN ({marks}) AND embedded = 0", tuple(collection_ids)
        ).fetchone()[0]
        if not missing:
            return 1.0
        total = db.execute(
            f"SELECT COUNT(*) FROM chunks WHERE collection_id IN ({marks})", tuple(collection_ids)
        ).fetchone()[0]
        return (total - missing) / total if total else 0.0

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
