"""The document index's search paths that only large indexes take (common words left out of the keyword
query, every-word-common questions, a search limited to some collections) and the upgrade of a version 1
index, on real SQLite files with real vectors from the test embedding model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.core.documents import index as index_module
from app.core.documents.chunking import Chunk
from app.core.documents.index import DocumentIndex
from app.core.documents.indexer import index_collection
from app.core.documents.terms import query_terms
from app.core.embedder import Embedder
from tests.support import documents as docs


def write_chunks(index: DocumentIndex, collection: str, texts: list[str], name: str = "f.txt") -> None:
    chunks = [Chunk(i, text, (), i + 1, i + 1) for i, text in enumerate(texts)]
    index.write_file(collection, f"/x/{collection}/{name}", kind="text", size=1, mtime_ns=1, sha256="x", pages=1,
                     chunks=chunks, vectors=None, model_key=None)  # fmt: skip


@pytest.fixture
def index(tmp_path: Path):
    opened = DocumentIndex(tmp_path / "documents.sqlite3")
    yield opened
    opened.close()


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch):
    """The common-word limits scaled down, so an index of 100 chunks takes the path a 100,000 one does."""
    monkeypatch.setattr(index_module, "COMMON_MIN_CHUNKS", 10)
    monkeypatch.setattr(index_module, "COMMON_FRACTION", 0.2)


def test_common_words_leave_the_query_and_the_ranking_holds(index: DocumentIndex, small_limits):
    index.add_collection("c", [Path("/x")])
    texts = [f"river town chunk {i} about ordinary things" for i in range(100)]
    texts[37] = "river town lighthouse keeper logbook entry"
    write_chunks(index, "c", texts)
    cid = [index.collection_id("c")]
    db = index.connection()
    assert index._selective_terms(db, query_terms("river town lighthouse"), 100) == ["lighthouse"]
    hits = index.keyword_search("river town lighthouse", cid, 5)
    keeper = db.execute("SELECT id FROM chunks WHERE ordinal = 37").fetchone()[0]
    assert [chunk_id for chunk_id, _ in hits] == [keeper]
    # only the chunk holding the selective word matched: 99 bm25() evaluations saved


def test_a_question_of_common_words_only_finds_chunks_holding_all_of_them(index: DocumentIndex, small_limits):
    index.add_collection("c", [Path("/x")])
    texts = [f"river chunk {i}" if i % 2 else f"town chunk {i}" for i in range(100)]
    texts[10:14] = ["river town together one", "river town together two", "river town three", "river town four"]
    write_chunks(index, "c", texts)
    cid = [index.collection_id("c")]
    found = index.keyword_search("river town", cid, 4)
    texts_found = {index.chunk_rows([i])[i][6] for i, _ in found}
    assert texts_found == set(texts[10:14])  # AND found enough: the OR of both words was never needed
    more = index.keyword_search("river town", cid, 10)
    assert len(more) == 10 and texts_found <= {index.chunk_rows([i])[i][6] for i, _ in more}


def test_search_limited_to_some_collections(index: DocumentIndex):
    index.add_collection("a", [Path("/x/a")])
    index.add_collection("b", [Path("/x/b")])
    write_chunks(index, "a", ["glacier melt rates in alpine valleys", "bread ovens and flour"])
    write_chunks(index, "b", ["glacier tours for visitors", "harbour lights"])
    only_b = index.keyword_search("glacier", [index.collection_id("b")], 5)
    assert [index.chunk_rows([i])[i][6] for i, _ in only_b] == ["glacier tours for visitors"]
    both = index.keyword_search("glacier", [index.collection_id("a"), index.collection_id("b")], 5)
    assert len(both) == 2


def test_a_version_1_index_keeps_its_vectors_after_the_upgrade(tmp_path: Path, embedding_model_path: Path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    docs.write_markdown(folder / "climate.md")
    docs.write_text(folder / "notes.txt", "Lighthouse", paragraphs=4)
    path = tmp_path / "documents.sqlite3"
    with Embedder.open(embedding_model_path, threads=2) as embedder:
        index = DocumentIndex(path)
        index.add_collection("c", [folder])
        index_collection(index, "c", embedder=embedder)
        question = embedder.embed(["How fast did the ice melt?"], purpose="query")[0]
        before = index.search("How fast did the ice melt?", ["c"], k=3, query_vector=question)
        # Back to the version 1 layout: cosine-ranked vectors, no chunks(collection_id) index.
        db = index.connection()
        dimensions = json.loads(db.execute("SELECT value FROM meta WHERE key = 'embedding_model'").fetchone()[0])
        rows = db.execute("SELECT rowid, collection_id, embedding FROM chunk_vectors").fetchall()
        db.execute("DROP TABLE chunk_vectors")
        db.execute(
            "CREATE VIRTUAL TABLE chunk_vectors USING vec0(collection_id integer partition key, "
            f"embedding float[{dimensions['dimensions']}] distance_metric=cosine)"
        )
        db.executemany("INSERT INTO chunk_vectors(rowid, collection_id, embedding) VALUES (?, ?, ?)", rows)
        db.execute("DROP INDEX chunks_collection")
        db.execute("PRAGMA user_version = 1")
        index.close()

        upgraded = DocumentIndex(path)
        db = upgraded.connection()
        assert db.execute("PRAGMA user_version").fetchone()[0] == index_module.SCHEMA_VERSION
        table = db.execute("SELECT sql FROM sqlite_master WHERE name = 'chunk_vectors'").fetchone()[0]
        assert "distance_metric=l2" in table
        assert db.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunks_collection'").fetchone()
        after = upgraded.search("How fast did the ice melt?", ["c"], k=3, query_vector=question)
        assert [h.chunk_id for h in after.hits] == [h.chunk_id for h in before.hits]
        assert np.allclose([h.vector for h in after.hits], [h.vector for h in before.hits], atol=1e-5)
        assert after.mode == "hybrid" and after.hits[0].path.endswith("climate.md")
        upgraded.close()


def test_chunks_are_embedded_with_their_document_title_and_heading():
    from app.core.documents.indexer import EMBEDDING_TEXT_VERSION, document_title, embedding_text

    assert document_title("/x/annual-report_2023.v2.pdf") == "annual report 2023 v2"
    assert embedding_text("Setup > Linux", "Run it.", "manual") == "manual\nSetup > Linux\nRun it."
    assert embedding_text("", "Run it.", "notes") == "notes\nRun it."
    assert EMBEDDING_TEXT_VERSION == 2  # vectors embedded without the title (version 1) are recomputed
