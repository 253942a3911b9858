"""Retrieval evaluation: recall@1, recall@5 and MRR@10 of BM25 alone, vectors alone and hybrid (RRF) over
Python's own documentation (tests/eval/corpus.py, 380+ pages) for the hand-written questions in
questions.json, each with the verbatim passage that answers it. A retrieved chunk is relevant when it
contains that passage (whitespace-normalised).

    python tests/eval/run_eval.py [--no-embeddings] [--json]

The embedding model is all-MiniLM-L6-v2 converted to GGUF by llama.cpp's converter
(tests/support/embedding_model.py; built once into .test-cache/).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from app.core.documents.index import DocumentIndex  # noqa: E402
from app.core.documents.indexer import index_collection  # noqa: E402
from tests.eval.corpus import build  # noqa: E402

QUESTIONS = Path(__file__).with_name("questions.json")
DEPTH = 10


def normalise(text: str) -> str:
    return " ".join(text.split())


def load_questions() -> list[dict]:
    return json.loads(QUESTIONS.read_text(encoding="utf-8"))


def score(rankings: list[list[bool]]) -> dict[str, float]:
    """recall@1, recall@5 and MRR@10 from, per question, the relevance of each ranked result."""
    n = len(rankings)
    first = [next((i for i, hit in enumerate(r) if hit), None) for r in rankings]
    return {
        "recall@1": sum(f == 0 for f in first) / n,
        "recall@5": sum(f is not None and f < 5 for f in first) / n,
        "mrr@10": sum(1 / (f + 1) for f in first if f is not None and f < DEPTH) / n,
    }


def evaluate(with_embeddings: bool = True, threads: int = 2) -> dict:
    questions = load_questions()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = build(Path(tmp) / "corpus")
        index = DocumentIndex(Path(tmp) / "documents.sqlite3")
        index.add_collection("python-docs", [Path(tmp) / "corpus"])
        embedder = None
        if with_embeddings:
            from app.core.embedder import Embedder
            from tests.support.embedding_model import build_embedding_model

            cache = REPO / ".test-cache"
            embedder = Embedder.open(build_embedding_model(cache), threads=threads)
        started = time.perf_counter()
        report = index_collection(index, "python-docs", embedder=embedder)
        indexing_s = time.perf_counter() - started
        cid = [index.collection_id("python-docs")]
        texts = {row[0]: normalise(row[1]) for row in index.connection().execute("SELECT id, text FROM chunks")}
        answerable = sum(any(normalise(q["answer"]) in t for t in texts.values()) for q in questions)
        runs: dict[str, list[list[bool]]] = {"bm25": [], "vector": [], "hybrid": []}
        for q in questions:
            answer = normalise(q["answer"])

            def relevant(ids: list[int], answer: str = answer) -> list[bool]:
                return [answer in texts[i] for i in ids]

            runs["bm25"].append(relevant([i for i, _ in index.keyword_search(q["question"], cid, DEPTH)]))
            if embedder is not None:
                vector = embedder.embed([q["question"]], purpose="query")[0]
                runs["vector"].append(relevant([i for i, _ in index.vector_search(vector, cid, DEPTH)]))
                hits = index.search(q["question"], ["python-docs"], k=DEPTH, query_vector=vector).hits
                runs["hybrid"].append(relevant([h.chunk_id for h in hits]))
        if embedder is not None:
            embedder.close()
        index.close()
    return {
        "corpus": corpus,
        "questions": len(questions),
        "answerable": answerable,
        "chunks": report.chunks,
        "indexing_s": round(indexing_s, 1),
        "embeddings": with_embeddings,
        "results": {name: score(r) for name, r in runs.items() if r},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-embeddings", action="store_true", help="BM25 only (no model needed)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = evaluate(with_embeddings=not args.no_embeddings)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    corpus = result["corpus"]
    print(
        f"corpus: {corpus['files']} files, {corpus['pages']} pages ({corpus['characters']:,} characters), "
        f"Python {corpus['python']}; {result['chunks']} chunks; indexed in {result['indexing_s']} s"
    )
    print(f"questions: {result['questions']} ({result['answerable']} with the passage inside one chunk)\n")
    print(f"{'retriever':<10} {'recall@1':>9} {'recall@5':>9} {'MRR@10':>8}")
    for name, values in result["results"].items():
        print(f"{name:<10} {values['recall@1']:>9.3f} {values['recall@5']:>9.3f} {values['mrr@10']:>8.3f}")
    hybrid = result["results"].get("hybrid")
    if hybrid:
        verdict = "meets" if hybrid["recall@5"] >= 0.9 else "MISSES"
        print(f"\ntarget hybrid recall@5 >= 0.90: {verdict} ({hybrid['recall@5']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
