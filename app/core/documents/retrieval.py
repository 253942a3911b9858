"""What the chat pipeline calls: the numbered sources for a question and the prompt block that carries them,
the citations found in a reply, and the sources' JSON form stored in a reply's meta ("sources").

Attached documents small enough for the token budget go into the prompt whole (one source per file), as
LM Studio does; otherwise the best chunks of a hybrid search do, best first, until the budget is used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.documents.index import DocumentIndex, Hit, SearchResult, fts_query

if TYPE_CHECKING:
    from app.core.embedder import Embedder

TokenCounter = Callable[[str], int]

INSTRUCTION = (
    "Answer using the numbered sources below. Cite the sources you use as [1], [2] ... right after the "
    "statement they support. If the sources do not contain the answer, say so."
)
_CITATION = re.compile(r"\[(\d{1,3}(?:\s*(?:,|;|-|–)\s*\d{1,3})*)\](?!\()")


@dataclass(frozen=True)
class Source:
    """One numbered source given to the model, with the scores that chose it (for Show prompt)."""

    number: int
    path: str
    kind: str
    page: int | None
    line_start: int
    line_end: int
    heading: str
    text: str
    bm25: float | None = None
    bm25_rank: int | None = None
    vector: float | None = None
    vector_rank: int | None = None
    score: float = 0.0
    rank: int = 0
    whole_document: bool = False

    @property
    def file_name(self) -> str:
        return Path(self.path).name

    @property
    def location(self) -> str:
        """Where in the file: "page 3, lines 12-19", "lines 40-52", "paragraphs 4-6" (Word files)."""
        unit = "paragraph" if self.kind == "docx" else "line"
        span = (
            f"{unit} {self.line_start}"
            if self.line_start == self.line_end
            else f"{unit}s {self.line_start}-{self.line_end}"
        )
        return f"page {self.page}, {span}" if self.page else span

    def label(self) -> str:
        """`[2] manual.pdf, page 3, lines 12-19 (Setup > Linux)`: how the prompt and the CLI name it."""
        where = "whole file" if self.whole_document else self.location
        heading = f" ({self.heading})" if self.heading else ""
        return f"[{self.number}] {self.file_name}, {where}{heading}"

    def to_meta(self) -> dict[str, Any]:
        """JSON-able form for a reply's meta["sources"] (and exports)."""
        return asdict(self)

    @classmethod
    def from_meta(cls, data: dict[str, Any]) -> Source:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_hit(cls, number: int, hit: Hit) -> Source:
        return cls(
            number,
            hit.path,
            hit.kind,
            hit.page,
            hit.line_start,
            hit.line_end,
            hit.heading,
            hit.text,
            hit.bm25,
            hit.bm25_rank,
            hit.vector,
            hit.vector_rank,
            hit.score,
            hit.rank,
        )


@dataclass
class RetrievedContext:
    """What to give the model for one question.

    sources: what the prompt block carries, numbered from 1 (cite as [n]); retrieved: every chunk the
    search returned, in rank order, the ones left out for the budget too (Show prompt lists them all).
    """

    prompt: str
    sources: list[Source]
    retrieved: list[Source] = field(default_factory=list)
    mode: str = "bm25"  # "hybrid", "bm25", "whole" (documents given in full) or "none"
    note: str = ""

    def meta(self) -> list[dict[str, Any]]:
        return sources_meta(self.sources)


@dataclass(frozen=True)
class Citation:
    """One [n] in a reply: its place in the text and the source it names (None: no such source)."""

    number: int
    start: int
    end: int
    source: Source | None


def build_context(
    index: DocumentIndex,
    question: str,
    *,
    collections: Sequence[str] = (),
    files: Sequence[Path] = (),
    budget_tokens: int,
    count_tokens: TokenCounter,
    embedder: Embedder | None = None,
    k: int = 6,
    candidates: int = 50,
) -> RetrievedContext:
    """The sources and prompt block for a question over collections and single files.

    Single files must have been indexed (index.file_collection(path) + index_collection); budget_tokens is
    what the prompt block may take (the caller keeps room for the conversation and the reply).
    """
    names = [*collections, *(index.file_collection(path) for path in files)]
    if not names:
        return RetrievedContext("", [], mode="none", note="no documents attached")
    whole = whole_documents(index, names, budget_tokens, count_tokens)
    if whole is not None:
        return RetrievedContext(format_block(whole), whole, whole, "whole", "the documents fit the context whole")
    result = search(index, question, names, k=k, embedder=embedder, candidates=candidates)
    retrieved = [Source.from_hit(n, hit) for n, hit in enumerate(result.hits, start=1)]
    chosen: list[Source] = []
    for source in retrieved:
        attempt = [*chosen, _renumber(source, len(chosen) + 1)]
        if count_tokens(format_block(attempt)) > budget_tokens:
            break
        chosen = attempt
    note = result.note
    if len(chosen) < len(retrieved):
        note = f"{note}; " if note else ""
        note += f"{len(retrieved) - len(chosen)} of {len(retrieved)} passages left out to fit the context"
    return RetrievedContext(format_block(chosen) if chosen else "", chosen, retrieved, result.mode, note)


def search(
    index: DocumentIndex,
    question: str,
    collections: Sequence[str],
    *,
    k: int = 5,
    embedder: Embedder | None = None,
    candidates: int = 50,
) -> SearchResult:
    """Hybrid search when the embedder is the model the index's vectors come from, else BM25 with a note."""
    from app.core.documents.indexer import model_key

    vector = None
    note = ""
    if embedder is not None:
        stored = index.model_key()
        if stored is None or stored == model_key(embedder):
            vector = embedder.embed([question], purpose="query")[0]
        else:
            note = "keyword search only (BM25): the vectors come from another embedding model; index again"
    result = index.search(question, collections, k=k, query_vector=vector, candidates=candidates)
    if note:
        result.note = note
    return result


def whole_documents(
    index: DocumentIndex, collections: Sequence[str], budget_tokens: int, count_tokens: TokenCounter
) -> list[Source] | None:
    """Every file of the collections as one source each, when their text fits the budget; else None."""
    ids = [index.collection_id(name) for name in collections]
    marks = ",".join("?" * len(ids))
    db = index.connection()
    total_chars = db.execute(
        f"SELECT COALESCE(SUM(LENGTH(text)), 0) FROM chunks WHERE collection_id IN ({marks})", ids
    ).fetchone()[0]
    if total_chars == 0 or total_chars > budget_tokens * 8:  # no tokenizer makes 8 characters one token
        return None
    files = db.execute(
        f"SELECT f.id, f.path, f.kind FROM files f WHERE f.collection_id IN ({marks}) AND f.status = 'indexed'"
        " ORDER BY f.path",
        ids,
    ).fetchall()
    sources: list[Source] = []
    for number, (file_id, path, kind) in enumerate(files, start=1):
        rows = db.execute(
            "SELECT line_start, line_end, text FROM chunks WHERE file_id = ? ORDER BY ordinal", (file_id,)
        ).fetchall()
        if not rows:
            continue
        text = "\n\n".join(r[2] for r in rows)
        first, last = min(r[0] for r in rows), max(r[1] for r in rows)
        sources.append(Source(len(sources) + 1, path, kind, None, first, last, "", text, whole_document=True))
        del number
    if not sources or count_tokens(format_block(sources)) > budget_tokens:
        return None
    return sources


def format_block(sources: Sequence[Source]) -> str:
    """The prompt text: the instruction, then each source under its label."""
    if not sources:
        return ""
    parts = [INSTRUCTION, ""]
    for source in sources:
        parts.append(source.label())
        parts.append(source.text.strip())
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def question_with_sources(question: str, context: RetrievedContext) -> str:
    """A user message carrying the sources block before the question (for pipelines that do not put the
    block in the system prompt)."""
    if not context.prompt:
        return question
    return f"{context.prompt}\nQuestion: {question}"


def find_citations(reply: str, sources: Sequence[Source]) -> list[Citation]:
    """Every [n], [n, m], [n-m] in a reply, in order, mapped to its source ([n](url) links are not citations)."""
    by_number = {s.number: s for s in sources}
    found: list[Citation] = []
    for match in _CITATION.finditer(reply):
        numbers: list[int] = []
        for part in re.split(r"\s*[,;]\s*", match.group(1)):
            bounds = re.split(r"\s*[-–]\s*", part)
            if len(bounds) == 2 and int(bounds[0]) <= int(bounds[1]) <= int(bounds[0]) + 20:
                numbers.extend(range(int(bounds[0]), int(bounds[1]) + 1))
            else:
                numbers.extend(int(b) for b in bounds)
        for number in numbers:
            found.append(Citation(number, match.start(), match.end(), by_number.get(number)))
    return found


def cited_sources(reply: str, sources: Sequence[Source]) -> list[Source]:
    """The sources a reply cites, each once, in order of first citation."""
    seen: dict[int, Source] = {}
    for citation in find_citations(reply, sources):
        if citation.source is not None:
            seen.setdefault(citation.number, citation.source)
    return list(seen.values())


def sources_meta(sources: Sequence[Source]) -> list[dict[str, Any]]:
    return [s.to_meta() for s in sources]


def sources_from_meta(data: Sequence[dict[str, Any]] | None) -> list[Source]:
    return [Source.from_meta(item) for item in data or ()]


def highlight_spans(question: str, text: str) -> list[tuple[int, int]]:
    """(start, end) of the words in text that match the question's content words (same word or the same
    first five letters: "indexing" lights up "index" and "indexes"), for showing why a passage matched."""
    terms = {t.strip('"') for t in fts_query(question).split(" OR ") if t}
    stems = {t[:5] for t in terms if len(t) >= 5}
    spans = []
    for match in re.finditer(r"\w+", text):
        word = match.group(0).lower()
        if word in terms or (len(word) >= 5 and word[:5] in stems):
            spans.append((match.start(), match.end()))
    return spans


def _renumber(source: Source, number: int) -> Source:
    from dataclasses import replace

    return replace(source, number=number)
