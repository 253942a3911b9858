"""Blocks into retrieval chunks along the document's structure: a heading starts a new chunk, small
paragraphs under one heading are packed together, a long block is split at line (then sentence) ends.

A chunk never spans a heading or a PDF page, so "page 4, lines 12-19 under Setup > Linux" is always true
of the whole chunk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from app.core.documents.extract import Block

TARGET_CHARS = 600  # about 130 tokens: one idea per chunk, and the length small embedding models were trained on
MAX_CHARS = 1000
HEADING_SEPARATOR = " > "

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


@dataclass(frozen=True)
class Chunk:
    """One retrievable passage: the exact text, where it is, and the headings above it."""

    ordinal: int
    text: str
    headings: tuple[str, ...]
    line_start: int
    line_end: int
    page: int | None = None

    @property
    def heading(self) -> str:
        return HEADING_SEPARATOR.join(self.headings)


@dataclass
class _Piece:
    lines: list[str]
    line_start: int
    line_end: int
    page: int | None


def chunk_blocks(blocks: Iterable[Block], target: int = TARGET_CHARS, maximum: int = MAX_CHARS) -> list[Chunk]:
    """Chunks in reading order (ordinal 0, 1, ...)."""
    chunks: list[Chunk] = []
    headings: list[tuple[int, str]] = []  # (level, title) of the headings above the current position
    current: _Piece | None = None

    def emit() -> None:
        nonlocal current
        if current is not None and "".join(current.lines).strip():
            chunks.append(
                Chunk(
                    len(chunks),
                    "\n".join(current.lines).strip("\n"),
                    tuple(t for _, t in headings),
                    current.line_start,
                    current.line_end,
                    current.page,
                )
            )
        current = None

    for block in blocks:
        if block.kind == "heading":
            emit()
            while headings and headings[-1][0] >= block.level:
                headings.pop()
            headings.append((block.level, block.text.strip()))
            continue
        for piece in _split(block, maximum):
            size = sum(len(line) + 1 for line in piece.lines)
            if current is not None and (
                current.page != piece.page or _size(current) + size > target or block.kind == "code"
            ):
                emit()
            if current is None:
                current = _Piece(list(piece.lines), piece.line_start, piece.line_end, piece.page)
            else:
                # The blank lines between the paragraphs, as in the file, so line i of the chunk's text is
                # line line_start + i of the file (HTML and DOCX keep one: their lines are not the file's).
                gap = piece.line_start - current.line_end - 1 if block.exact_lines else 1
                current.lines.extend(["", *piece.lines] if not 0 < gap <= 10 else [*[""] * gap, *piece.lines])
                current.line_end = piece.line_end
            if block.kind == "code":  # a code block is its own chunk (or chunks): never glued to prose
                emit()
    emit()
    return chunks


def _size(piece: _Piece) -> int:
    return sum(len(line) + 1 for line in piece.lines)


def _split(block: Block, maximum: int) -> Iterator[_Piece]:
    """The block itself, or consecutive runs of its lines of at most `maximum` characters; one overlong
    line is cut at sentence ends (all pieces keep that line's number)."""
    lines = list(block.lines)
    if sum(len(line) + 1 for line in lines) <= maximum:
        yield _Piece(lines, block.line_start, block.line_end, block.page)
        return
    run: list[str] = []
    run_first = run_last = 0
    for index, line in enumerate(lines):
        for part in [line] if len(line) <= maximum else _sentences(line, maximum):
            if run and sum(len(x) + 1 for x in run) + len(part) + 1 > maximum:
                yield _piece(block, run, run_first, run_last)
                run = []
            if not run:
                run_first = index
            run.append(part)
            run_last = index
    if run:
        yield _piece(block, run, run_first, run_last)


def _piece(block: Block, run: list[str], first: int, last: int) -> _Piece:
    if not block.exact_lines:  # HTML: text lines are not source lines; the block's range is what is known
        return _Piece(run, block.line_start, block.line_end, block.page)
    return _Piece(run, block.line_start + first, block.line_start + last, block.page)


def _sentences(line: str, maximum: int) -> Iterator[str]:
    """Pieces of one long line, cut after sentence ends (or hard at `maximum` when a sentence is longer)."""
    current = ""
    for sentence in _SENTENCE_END.split(line):
        while len(sentence) > maximum:
            if current:
                yield current
                current = ""
            yield sentence[:maximum]
            sentence = sentence[maximum:]
        if current and len(current) + 1 + len(sentence) > maximum:
            yield current
            current = ""
        current = f"{current} {sentence}" if current else sentence
    if current:
        yield current
