"""The retrieval evaluation's ground truth holds: 300+ pages, 100+ questions, every answer passage
verbatim in the file it names (whitespace-normalised), no question twice."""

from __future__ import annotations

from pathlib import Path

from tests.eval.corpus import build
from tests.eval.run_eval import load_questions, normalise, score


def test_corpus_and_questions(tmp_path: Path):
    corpus = build(tmp_path / "corpus")
    assert corpus["pages"] >= 300
    questions = load_questions()
    assert len(questions) >= 100
    assert len({q["question"] for q in questions}) == len(questions)
    for q in questions:
        text = normalise((tmp_path / "corpus" / q["file"]).read_text(encoding="utf-8"))
        assert normalise(q["answer"]) in text, q


def test_scores():
    assert score([[True], [False, True], [False] * 10]) == {"recall@1": 1 / 3, "recall@5": 2 / 3, "mrr@10": 0.5}
