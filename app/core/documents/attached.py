"""Documents attached to a conversation, and what they add to each reply, the same for every backend: the
sources block in the user's latest message, the sources in the reply's meta (the numbers [n] refer to)
and what was retrieved with its scores (for Show prompt).

The engine host calls DocumentRetriever.retrieve for every reply whose request names documents, on the
thread that prepares that reply (the engine thread locally, a reply's own thread for a remote server),
before the prompt is prepared. Heavy modules (the index, the embedding model) load on first use.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.messages import ChatMessage

if TYPE_CHECKING:
    from app.core.documents.index import DocumentIndex
    from app.core.documents.retrieval import RetrievedContext, Source
    from app.core.embedder import Embedder
    from app.core.reply import ReplyRequest

log = logging.getLogger("hearth.documents")

TokenCounter = Callable[[str], int]
TEMPLATE_MARGIN = 64  # tokens a chat template adds around the messages (role markers), kept free
REMOTE_BUDGET = 4000  # tokens of sources for a backend that cannot count tokens or tell its context size


@dataclass(frozen=True)
class AttachedDocuments:
    """Collections (by name) and single files (absolute paths) attached to a conversation. Stored in
    Conversation.meta["documents"] as {"collections": [...], "files": [...]}."""

    collections: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.collections or self.files)

    def to_meta(self) -> dict[str, list[str]]:
        return {"collections": list(self.collections), "files": list(self.files)}

    @classmethod
    def from_meta(cls, value: Any) -> AttachedDocuments:
        """From Conversation.meta.get("documents") (a list is read as collection names, as an assistant's
        setup lists them); anything malformed reads as nothing attached."""
        if isinstance(value, list):
            value = {"collections": value}
        if not isinstance(value, dict):
            return cls()

        def strings(key: str) -> tuple[str, ...]:
            items = value.get(key)
            return tuple(dict.fromkeys(s for s in items if isinstance(s, str) and s)) if isinstance(items, list) else ()

        return cls(strings("collections"), strings("files"))

    def with_collection(self, name: str) -> AttachedDocuments:
        return AttachedDocuments(tuple(dict.fromkeys((*self.collections, name))), self.files)

    def with_file(self, path: str | Path) -> AttachedDocuments:
        resolved = str(Path(path).expanduser().resolve())
        return AttachedDocuments(self.collections, tuple(dict.fromkeys((*self.files, resolved))))

    def without(self, item: str) -> AttachedDocuments:
        """Detach a collection name or a file path."""
        return AttachedDocuments(
            tuple(c for c in self.collections if c != item), tuple(f for f in self.files if f != item)
        )


def latest_question(messages: Sequence[ChatMessage]) -> tuple[int, str]:
    """(index, text) of the latest user message; (-1, "") when there is none."""
    for position in range(len(messages) - 1, -1, -1):
        if messages[position].role == "user":
            return position, messages[position].content
    return -1, ""


def document_budget(messages: Sequence[ChatMessage], max_tokens: int, n_ctx: int, count: TokenCounter) -> int:
    """The tokens the sources may take in a prompt for a model of n_ctx tokens.

    The prompt may use n_ctx minus the reply's reserve (ChatRunner's rule: max_tokens, at most half the
    context). The system prompt, the question and a template margin always stay; the sources get what the
    earlier turns leave free, but never less than half of the rest: with a long conversation the oldest
    turns make room (the runner drops them), not the documents.
    """
    room = n_ctx - min(max_tokens, n_ctx // 2)
    position, question = latest_question(messages)
    system = messages[0].content if messages and messages[0].role == "system" else ""
    fixed = count(system) + count(question) + TEMPLATE_MARGIN
    earlier = sum(count(m.content) for i, m in enumerate(messages) if i != position and m.role != "system")
    return max(0, max(room - fixed - earlier, (room - fixed) // 2))


def remote_budget(request: ReplyRequest) -> tuple[int, TokenCounter]:
    """For a backend that cannot count: about four characters a token, REMOTE_BUDGET tokens of sources."""
    return REMOTE_BUDGET, lambda text: len(text) // 4 + 1


class DocumentRetriever:
    """The document index and the embedding model, opened on first use and shared by the threads that
    prepare replies (the index gives each thread its own connection; the embedder serialises its calls)."""

    def __init__(self, index_path: Path, embedding_model: Callable[[], str] = lambda: "") -> None:
        """embedding_model: the GGUF path to embed questions with, asked at each retrieval (a setting can
        change between replies); "" for keyword search only."""
        self.index_path = Path(index_path)
        self.embedding_model = embedding_model
        self._lock = threading.Lock()
        self._index: DocumentIndex | None = None
        self._embedder: Embedder | None = None
        self._embedder_path = ""
        self._embedder_error = ""

    def index(self) -> DocumentIndex:
        with self._lock:
            if self._index is None:
                from app.core.documents.index import DocumentIndex

                self._index = DocumentIndex(self.index_path)
            return self._index

    def embedder(self) -> tuple[Embedder | None, str]:
        """The embedding model in the settings (reopened when the setting changes), and why there is none."""
        path = (self.embedding_model() or "").strip()
        with self._lock:
            if path != self._embedder_path:
                if self._embedder is not None:
                    self._embedder.close()
                self._embedder, self._embedder_path, self._embedder_error = None, path, ""
                if path:
                    from app.core.embedder import Embedder
                    from app.core.errors import HearthError

                    try:
                        self._embedder = Embedder.open(Path(path).expanduser())
                    except HearthError as exc:
                        self._embedder_error = f"the embedding model could not be opened ({exc})"
                        log.warning("documents: %s", self._embedder_error)
            return self._embedder, self._embedder_error

    def retrieve(
        self, question: str, attached: AttachedDocuments, *, budget_tokens: int, count_tokens: TokenCounter
    ) -> RetrievedContext:
        """The sources for a question. Collections that no longer exist and files that are gone are left out
        with a note; an attached file not indexed yet (or changed) is indexed first."""
        from app.core.documents.indexer import index_collection
        from app.core.documents.retrieval import RetrievedContext, build_context

        index = self.index()
        embedder, embedder_note = self.embedder()
        notes: list[str] = []
        known = set(index.collection_names())
        collections = [name for name in attached.collections if name in known]
        notes += [f"the collection {name!r} no longer exists" for name in attached.collections if name not in known]
        files: list[Path] = []
        for item in attached.files:
            path = Path(item)
            if not path.is_file():
                notes.append(f"{path.name} is no longer there")
                continue
            report = index_collection(index, index.file_collection(path), embedder=embedder)
            if report.failed:
                notes.append(f"{path.name} cannot be read ({report.failed[0][1]})")
                continue
            files.append(path)
        if not collections and not files:
            return RetrievedContext("", [], mode="none", note="; ".join(notes) or "no documents attached")
        context = build_context(
            index,
            question,
            collections=collections,
            files=files,
            budget_tokens=budget_tokens,
            count_tokens=count_tokens,
            embedder=embedder,
        )
        if embedder_note and context.mode == "bm25":
            notes.append(f"keyword search only (BM25): {embedder_note}")
        context.note = "; ".join(n for n in (context.note, *notes) if n)
        return context

    def close(self) -> None:
        with self._lock:
            if self._embedder is not None:
                self._embedder.close()
                self._embedder = None
            self._embedder_path = ""
            if self._index is not None:
                self._index.close()
                self._index = None


def with_sources(request: ReplyRequest, context: RetrievedContext) -> ReplyRequest:
    """The request with the sources block before the latest question and the retrieval in its meta."""
    from app.core.documents.retrieval import question_with_sources

    position, question = latest_question(request.messages)
    messages = list(request.messages)
    if position >= 0 and context.prompt:
        messages[position] = dataclasses.replace(messages[position], content=question_with_sources(question, context))
    meta = {**request.meta, "sources": context.meta(), "retrieval": retrieval_meta(question, context)}
    return dataclasses.replace(request, messages=tuple(messages), meta=meta)


def retrieval_meta(question: str, context: RetrievedContext) -> dict[str, Any]:
    """What is stored with the reply besides its sources: the question searched, the mode, the note, and
    every retrieved chunk with its scores and ranks (text left out: the sources carry the passages used)."""
    given = {(s.path, s.line_start, s.line_end, s.page): s.number for s in context.sources}
    retrieved = []
    for source in context.retrieved:
        item = {k: v for k, v in source.to_meta().items() if k not in ("text", "number")}
        item["number"] = given.get((source.path, source.line_start, source.line_end, source.page))
        retrieved.append(item)
    return {"question": question, "mode": context.mode, "note": context.note, "retrieved": retrieved}


def retrieval_report(meta: dict[str, Any]) -> str:
    """Show prompt's account of a reply's retrieval: each retrieved chunk with its ranks and scores, and
    whether it went into the prompt (as [n]). "" when the reply used no documents."""
    retrieval = meta.get("retrieval")
    if not isinstance(retrieval, dict):
        return ""
    mode = {
        "hybrid": "hybrid (BM25 + vectors, fused by reciprocal rank)",
        "bm25": "keyword (BM25) only",
        "whole": "documents given whole",
        "none": "nothing retrieved",
    }.get(str(retrieval.get("mode")), str(retrieval.get("mode")))
    lines = [f"Documents searched for: {retrieval.get('question', '')}", f"Retrieval: {mode}"]
    if retrieval.get("note"):
        lines.append(f"Note: {retrieval['note']}")
    from app.core.documents.retrieval import Source

    rows = [r for r in retrieval.get("retrieved") or [] if isinstance(r, dict)]
    if rows:
        header = f"{'rank':>4}  {'in prompt':<9}  {'BM25 (rank)':<16}  {'vector (rank)':<16}  {'fused':>7}  passage"
        lines += ["", header]
    for row in rows:
        source = Source.from_meta({**row, "number": row.get("number") or 0, "text": ""})
        bm25 = f"{row['bm25']:.2f} (#{row['bm25_rank']})" if row.get("bm25") is not None else "-"
        vector = f"{row['vector']:.3f} (#{row['vector_rank']})" if row.get("vector") is not None else "-"
        given = f"[{row['number']}]" if row.get("number") else "left out"
        heading = f" ({source.heading})" if source.heading else ""
        lines.append(
            f"{row.get('rank', 0):>4}  {given:<9}  {bm25:<16}  {vector:<16}  {row.get('score', 0.0):>7.4f}  "
            f"{source.file_name}, {source.location}{heading}"
        )
    return "\n".join(lines)


def source_lines(sources: Sequence[Source]) -> list[str]:
    """`[1] manual.pdf, page 3, lines 12-19  (/home/me/manual.pdf)`: the sources as the CLI lists them."""
    return [f"{source.label()}  ({source.path})" for source in sources]
