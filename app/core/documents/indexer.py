"""Incremental indexing of one collection: find its files, re-read only those that changed (size, time,
then sha256), drop deleted ones, embed what has no vector yet; pause, cancel and progress for a worker.

Runs on a worker thread (never the GUI thread); it touches nothing but the index and the files. Every file
is written in its own transaction, so cancelling or killing the process keeps all finished files and the
next run picks up where this one stopped.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.core.documents.chunking import Chunk, chunk_blocks
from app.core.documents.extract import ExtractionError, extract, kind_of
from app.core.documents.index import CHARS_PER_PAGE, DocumentIndex, FileRecord

if TYPE_CHECKING:
    from app.core.embedder import Embedder

log = logging.getLogger("hearth.documents")

EMBED_GROUP = 64  # chunks per embed() call: the unit between two looks at pause/cancel


@dataclass(frozen=True)
class IndexProgress:
    """Where an index run is: files done of total, the file at hand, and the phase."""

    done: int
    total: int
    path: str
    phase: str  # "scanning", "reading", "embedding", "done"


@dataclass
class IndexReport:
    """What one index run did. `failed` lists (path, reason) of files that could not be read."""

    collection: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks: int = 0  # chunks written in this run
    embedded: int = 0  # vectors computed in this run
    pages: int = 0  # pages read in this run (PDF pages; text files: 3,000 characters a page)
    failed: list[tuple[str, str]] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0
    vectors_dropped: bool = False  # another embedding model's vectors were replaced

    @property
    def changed(self) -> int:
        return self.added + self.updated + self.removed


class IndexControl:
    """Pause, resume and cancel an index run from another thread."""

    def __init__(self) -> None:
        self._running = threading.Event()
        self._running.set()
        self._cancelled = threading.Event()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def cancel(self) -> None:
        self._cancelled.set()
        self._running.set()  # a paused run must wake up to see it

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def proceed(self) -> bool:
        """Block while paused; False once cancelled (the run then stops after the file at hand)."""
        self._running.wait()
        return not self._cancelled.is_set()


ProgressCallback = Callable[[IndexProgress], None]


EMBEDDING_TEXT_VERSION = 2  # 2: the document's title before the heading path (vectors of 1 are recomputed)


def model_key(embedder: Embedder) -> str:
    """Identifies an embedding model (and what it is given) for the index: vectors of different keys never mix."""
    try:
        size = embedder.path.stat().st_size
    except OSError:
        size = 0
    return f"{embedder.path.name}|{size}|{embedder.dimensions}|{embedder.pooling}|text{EMBEDDING_TEXT_VERSION}"


def document_title(path: str | Path) -> str:
    """A document's title as its chunks are embedded with it: the file name without its suffix, separators
    as spaces ("annual-report_2023.pdf" -> "annual report 2023")."""
    return " ".join(re.split(r"[-_.\s]+", Path(path).stem)).strip()


def embedding_text(heading: str, text: str, title: str = "") -> str:
    """What is embedded for a chunk: the document's title and the heading path first, so a passage is read in
    its context (a chunk alone often never names what it is about). The keyword index has the heading as a
    field of its own; the title is for the vectors only. The retrieval evaluation (tests/eval) measured
    hybrid recall@5 0.898 without the title and 0.906 with it."""
    return "\n".join(part for part in (title, heading, text) if part)


def scan(sources: Sequence[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The documents under the collection's sources (folders recursively; hidden entries skipped), sorted,
    and (path, reason) for sources that are missing or not documents."""
    found: dict[str, Path] = {}
    problems: list[tuple[str, str]] = []
    for source in sources:
        if source.is_file():
            if kind_of(source) is None:
                problems.append((str(source), f"not a supported document type ({source.suffix or 'no suffix'})"))
            else:
                found[str(source)] = source
        elif source.is_dir():
            for path in _walk(source):
                found.setdefault(str(path), path)
        else:
            problems.append((str(source), "not found"))
    return [found[key] for key in sorted(found)], problems


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, names in os.walk(folder, onerror=lambda exc: log.warning("cannot list %s", exc.filename)):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "node_modules"))
        for name in sorted(names):
            path = Path(root, name)
            if not name.startswith(".") and kind_of(path) is not None:
                yield path


def index_collection(
    index: DocumentIndex,
    name: str,
    *,
    embedder: Embedder | None = None,
    progress: ProgressCallback | None = None,
    control: IndexControl | None = None,
) -> IndexReport:
    """Bring the collection's index up to date with its files; see the module docstring."""
    started = time.perf_counter()
    control = control or IndexControl()
    report = IndexReport(collection=name)
    key = model_key(embedder) if embedder is not None else None
    if embedder is not None and key is not None:
        report.vectors_dropped = index.use_model(key, embedder.dimensions)

    def tell(done: int, total: int, path: str, phase: str) -> None:
        if progress is not None:
            try:
                progress(IndexProgress(done, total, path, phase))
            except Exception:  # a UI callback must never stop indexing
                log.exception("index progress callback failed")

    tell(0, 0, "", "scanning")
    paths, problems = scan(index.sources(name))
    report.failed.extend(problems)
    known = index.files(name)
    present = {str(p) for p in paths}
    for gone in sorted(set(known) - present):
        index.remove_file(name, gone)
        report.removed += 1
    for number, path in enumerate(paths):
        if not control.proceed():
            report.cancelled = True
            break
        tell(number, len(paths), str(path), "reading")
        _index_file(index, name, path, known.get(str(path)), embedder, key, control, report)
    if embedder is not None and key is not None and not report.cancelled:
        _fill_vectors(index, name, embedder, key, control, report, tell)
    if not report.cancelled:
        index.mark_indexed(name)
    tell(len(paths), len(paths), "", "done")
    report.seconds = time.perf_counter() - started
    return report


def _index_file(
    index: DocumentIndex,
    name: str,
    path: Path,
    record: FileRecord | None,
    embedder: Embedder | None,
    key: str | None,
    control: IndexControl,
    report: IndexReport,
) -> None:
    kind = kind_of(path) or "text"
    try:
        stat = path.stat()
    except OSError as exc:  # e.g. a link to a file that is gone
        reason = f"cannot be read ({exc.strerror or exc})"
        index.write_failure(name, str(path), kind=kind, size=0, mtime_ns=0, error=reason)
        report.failed.append((str(path), reason))
        return
    same_stat = record is not None and (record.size, record.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    if same_stat and record is not None and record.status == "indexed":
        report.unchanged += 1
        return
    try:
        digest = _sha256(path)
    except OSError as exc:
        reason = f"cannot be read ({exc.strerror or exc})"
        index.write_failure(name, str(path), kind=kind, size=stat.st_size, mtime_ns=stat.st_mtime_ns, error=reason)
        report.failed.append((str(path), reason))
        return
    if record is not None and record.status == "indexed" and record.sha256 == digest:
        index.touch_file(record.id, stat.st_mtime_ns)  # touched, not changed
        report.unchanged += 1
        return
    try:
        document = extract(path)
    except ExtractionError as exc:
        reason = str(exc).removeprefix(f"{path.name}: ")
        index.write_failure(name, str(path), kind=kind, size=stat.st_size, mtime_ns=stat.st_mtime_ns, error=reason)
        report.failed.append((str(path), reason))
        return
    chunks = chunk_blocks(document.blocks)
    if not chunks:  # listed like an unreadable file, so the user knows why it is never found
        reason = "no text found" + (
            " (a scanned PDF? Hearth reads a PDF's text layer and does no OCR)" if kind == "pdf" else ""
        )
        index.write_failure(name, str(path), kind=kind, size=stat.st_size, mtime_ns=stat.st_mtime_ns, error=reason)
        report.failed.append((str(path), reason))
        return
    characters = sum(len(c.text) for c in chunks)
    pages = document.pages or max(1, math.ceil(characters / CHARS_PER_PAGE))
    vectors = None
    if embedder is not None and chunks:
        vectors = _embed_chunks(embedder, chunks, control, document_title(path))
        if vectors is None:  # cancelled in the middle of this file: it stays as it was
            report.cancelled = True
            return
        report.embedded += len(chunks)
    index.write_file(
        name,
        str(path),
        kind=kind,
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        sha256=digest,
        pages=pages,
        chunks=chunks,
        vectors=vectors,
        model_key=key,
    )
    report.chunks += len(chunks)
    report.pages += pages
    if record is None or record.status != "indexed":
        report.added += 1
    else:
        report.updated += 1


def _embed_chunks(embedder: Embedder, chunks: Sequence[Chunk], control: IndexControl, title: str) -> np.ndarray | None:
    parts = []
    for start in range(0, len(chunks), EMBED_GROUP):
        if not control.proceed():
            return None
        group = chunks[start : start + EMBED_GROUP]
        texts = [embedding_text(c.heading, c.text, title) for c in group]
        parts.append(embedder.embed(texts, purpose="document"))
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dimensions), dtype=np.float32)


def _fill_vectors(
    index: DocumentIndex,
    name: str,
    embedder: Embedder,
    key: str,
    control: IndexControl,
    report: IndexReport,
    tell: Callable[[int, int, str, str], None],
) -> None:
    """Vectors for chunks indexed earlier without a model (or with another one)."""
    while True:
        rows = index.unembedded(name, EMBED_GROUP)
        if not rows:
            return
        if not control.proceed():
            report.cancelled = True
            return
        tell(report.embedded, 0, "", "embedding")
        texts = [embedding_text(heading, text, document_title(path)) for _, heading, text, path in rows]
        vectors = embedder.embed(texts, purpose="document")
        index.write_vectors(name, [r[0] for r in rows], vectors, key)
        report.embedded += len(rows)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
