"""Benchmark: documents (issue #20 targets) on 2 threads.

Indexing speed in pages/s (PDF pages; text files count 3,000 characters a page) without and with
embeddings; re-indexing after one file changed (target <= 2 s, with embeddings); hybrid search latency over
100,000 chunks (target <= 100 ms: BM25 + vector kNN + fusion, plus the question's embedding, shown apart).
Run: python tests/benchmarks/bench_docs.py [--chunks 100000] [--pdf-pages 100]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from app.core.documents.chunking import Chunk
from app.core.documents.index import DocumentIndex
from app.core.documents.indexer import index_collection, model_key
from app.core.embedder import Embedder
from tests.eval.corpus import build
from tests.support.documents import write_pdf
from tests.support.embedding_model import build_embedding_model

REPO = Path(__file__).resolve().parents[2]
WORDS = (
    "river town bread flour oven python sqlite model token chat summer winter garden music quantum history "
    "market coffee mountain bicycle library window paper engine signal harbor lantern glacier ocean forest "
    "compiler kernel thread socket buffer matrix vector index query answer source chapter section figure"
).split()


def vocabulary(rng: random.Random, size: int = 30_000) -> tuple[list[str], list[float]]:
    """Pseudo-words with Zipf frequencies (as in real text: a few very common, most rare), so each question
    word matches a realistic share of the chunks rather than all of them."""
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "si", "de", "pa", "gu", "be", "to", "ri", "an", "el"]
    words = list(dict.fromkeys("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(size)))
    return WORDS + words, [1.0 / (rank + 1) for rank in range(len(WORDS) + len(words))]


def row(name: str, value: float, unit: str, target: str = "") -> None:
    print(f"{name:<46} {value:>10.1f} {unit:<8} {target}")


def make_corpus(folder: Path, pdf_pages: int) -> None:
    build(folder / "python-docs")
    (folder / "pdfs").mkdir(parents=True)
    for i in range(max(1, pdf_pages // 20)):
        write_pdf(folder / "pdfs" / f"report-{i:02}.pdf", pages=20)


def bench_indexing(tmp: Path, embedder: Embedder, pdf_pages: int) -> None:
    corpus = tmp / "corpus"
    make_corpus(corpus, pdf_pages)
    for label, model in (("without embeddings", None), ("with embeddings (all-MiniLM-L6-v2 q8_0)", embedder)):
        index = DocumentIndex(tmp / f"index-{model is not None}.sqlite3")
        index.add_collection("docs", [corpus])
        report = index_collection(index, "docs", embedder=model)
        row(f"index {report.pages} pages, {report.chunks} chunks, {label}", report.pages / report.seconds, "pages/s")
        if model is not None:
            changed = corpus / "python-docs" / "library" / "heapq.txt"
            changed.write_text(changed.read_text() + "\nOne more paragraph about heaps.\n")
            again = index_collection(index, "docs", embedder=model)
            assert again.updated == 1 and again.unchanged == report.added - 1
            row("re-index after one file changed (with embeddings)", again.seconds * 1000, "ms", "target <= 2000 ms")
        index.close()


def bench_search(tmp: Path, embedder: Embedder, chunks: int) -> None:
    rng = random.Random(7)
    np_rng = np.random.default_rng(7)
    index = DocumentIndex(tmp / "big.sqlite3")
    index.add_collection("big", [tmp])
    key = model_key(embedder)
    per_file = 500
    words, weights = vocabulary(rng)
    started = time.perf_counter()
    for f in range(chunks // per_file):
        batch = [
            Chunk(i, " ".join(rng.choices(words, weights, k=110)), (f"Section {i % 17}",), i * 10 + 1, i * 10 + 9)
            for i in range(per_file)
        ]
        vectors = np_rng.standard_normal((per_file, embedder.dimensions)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index.write_file("big", f"/synthetic/file-{f:04}.txt", kind="text", size=1, mtime_ns=1, sha256="x", pages=1,
                         chunks=batch, vectors=vectors, model_key=key)  # fmt: skip
    print(f"(built {chunks:,} chunks with {embedder.dimensions}-d vectors in {time.perf_counter() - started:.0f} s)")
    questions = [" ".join(rng.choices(words, weights, k=8)) + "?" for _ in range(30)]
    embed_ms, search_ms, bm25_ms, vector_ms = [], [], [], []
    cid = [index.collection_id("big")]
    for question in questions:
        t0 = time.perf_counter()
        vector = embedder.embed([question], purpose="query")[0]
        t1 = time.perf_counter()
        hits = index.search(question, ["big"], k=5, query_vector=vector).hits
        t2 = time.perf_counter()
        index.keyword_search(question, cid, 50)
        t3 = time.perf_counter()
        index.vector_search(vector, cid, 50)
        t4 = time.perf_counter()
        assert len(hits) == 5
        embed_ms.append((t1 - t0) * 1000)
        search_ms.append((t2 - t1) * 1000)
        bm25_ms.append((t3 - t2) * 1000)
        vector_ms.append((t4 - t3) * 1000)
    row(f"hybrid search over {chunks:,} chunks (median)", statistics.median(search_ms), "ms", "target <= 100 ms")
    row("   of which BM25 (FTS5), top 50", statistics.median(bm25_ms), "ms")
    row("   of which vector kNN (sqlite-vec), top 50", statistics.median(vector_ms), "ms")
    row("question embedding (median)", statistics.median(embed_ms), "ms")
    row("hybrid search + embedding (p95)", sorted(s + e for s, e in zip(search_ms, embed_ms))[28], "ms")
    index.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--pdf-pages", type=int, default=100)
    args = parser.parse_args()
    embedder = Embedder.open(build_embedding_model(REPO / ".test-cache"), threads=2)
    print(f"{'measure':<46} {'value':>10} {'unit':<8} baseline")
    with tempfile.TemporaryDirectory() as tmp:
        bench_indexing(Path(tmp), embedder, args.pdf_pages)
        bench_search(Path(tmp), embedder, args.chunks)
    embedder.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
