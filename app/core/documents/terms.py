"""The words of a question that keyword search looks for, and the FTS5 query made from them (no FTS5
syntax can come through: every word is quoted). Light on purpose: the GUI highlights matched words with
it without loading the index."""

from __future__ import annotations

import re
from collections.abc import Sequence

# Words that carry no topic: dropped from the keyword query so BM25 ranks by what the question is about.
_STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i if in into is it
    its me my of on or our shall should so than that the their them then there these they this those to
    was we were what when where which while who whom why will with would you your about any some such not
    no yes also just only very more most much many may might must use used using""".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)


def query_terms(question: str) -> list[str]:
    """The content words of free text, lower-cased, each once, in order (stopwords dropped unless the
    question has nothing else)."""
    words = [w for w in (m.group(0).lower() for m in _WORD.finditer(question)) if w not in _STOPWORDS]
    if not words:  # a question of stopwords only: search them all rather than nothing
        words = [m.group(0).lower() for m in _WORD.finditer(question)]
    return list(dict.fromkeys(words))[:64]


def fts_query(question: str, *, operator: str = "OR") -> str:
    """A safe FTS5 query from free text: its content words joined by OR (or AND), each quoted, so no FTS5
    syntax can leak in."""
    return joined(query_terms(question), operator)


def joined(terms: Sequence[str], operator: str = "OR") -> str:
    return f" {operator} ".join(f'"{w}"' for w in terms)


__all__ = ["fts_query", "joined", "query_terms"]
