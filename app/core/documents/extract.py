"""Text out of documents, as structural blocks (headings, paragraphs, code) that keep page and line numbers.

Formats: PDF (pypdfium2: PDFium's text layer, per page), DOCX (python-docx), HTML (the stdlib parser),
Markdown, reStructuredText/plain text and source code. Line numbers are 1-based and count lines of the
file itself (PDF: lines of the page's text; DOCX: paragraphs, as Word files have no stable lines).
A file that cannot be read raises ExtractionError with the reason in words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

from app.core.errors import DocumentsError

BlockKind = Literal["heading", "paragraph", "code"]

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdx"})
TEXT_SUFFIXES = frozenset({".txt", ".text", ".rst", ".log", ".csv", ".tsv", ".org", ".adoc"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
CODE_SUFFIXES = frozenset(
    {
        ".py",
        ".pyi",
        ".js",
        ".jsx",
        ".ts",
        ".tsx",
        ".mjs",
        ".java",
        ".kt",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".hpp",
        ".cs",
        ".go",
        ".rs",
        ".rb",
        ".php",
        ".swift",
        ".scala",
        ".sh",
        ".bash",
        ".sql",
        ".lua",
        ".r",
        ".m",
        ".toml",
        ".yaml",
        ".yml",
        ".json",
        ".ini",
        ".cfg",
        ".css",
        ".scss",
        ".xml",
        ".proto",
        ".dart",
        ".zig",
    }
)
MAX_FILE_BYTES = 200 * 1024 * 1024  # beyond this a "document" is a data dump; say so instead of hanging


class ExtractionError(DocumentsError):
    """One file could not be read as a document (the reason is the message); indexing goes on without it."""


@dataclass(frozen=True)
class Block:
    """A structural piece of a document. `lines` are the block's text lines; exact_lines says line i of
    the text is line line_start + i of the source (so a split block still knows its lines)."""

    kind: BlockKind
    lines: tuple[str, ...]
    line_start: int
    line_end: int
    page: int | None = None
    level: int = 0  # headings: 1 = top level
    exact_lines: bool = True

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Document:
    """The blocks of one file, in reading order."""

    path: Path
    kind: str  # "pdf", "docx", "html", "markdown", "text", "code"
    blocks: list[Block] = field(default_factory=list)
    pages: int = 0  # PDF pages; other formats: 0 (the index estimates pages from the text length)

    @property
    def line_unit(self) -> str:
        return "paragraph" if self.kind == "docx" else "line"


def kind_of(path: Path) -> str | None:
    """Which extractor reads this file (by its suffix), or None for files Hearth does not index."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return "pdf"
    if suffix == ".docx":
        return "docx"
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix in MARKDOWN_SUFFIXES:
        return "markdown"
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in CODE_SUFFIXES:
        return "code"
    return None


def extract(path: Path) -> Document:
    """Read one file into blocks; ExtractionError (with the reason) when it cannot be read."""
    kind = kind_of(path)
    if kind is None:
        raise ExtractionError(f"{path.name}: not a supported document type ({path.suffix or 'no suffix'})")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ExtractionError(f"{path.name}: cannot be read ({exc.strerror or exc})") from None
    if size > MAX_FILE_BYTES:
        raise ExtractionError(f"{path.name}: too large to index ({size // (1024 * 1024)} MB)")
    try:
        if kind == "pdf":
            return _pdf(path)
        if kind == "docx":
            return _docx(path)
        text = _read_text(path)
        if kind == "html":
            return Document(path, kind, _html_blocks(text))
        if kind == "markdown":
            return Document(path, kind, markdown_blocks(text))
        if kind == "code":
            return Document(path, kind, code_blocks(text))
        return Document(path, kind, text_blocks(text))
    except ExtractionError:
        raise
    except OSError as exc:
        raise ExtractionError(f"{path.name}: cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # a parser's own exception types are many; the file is what is wrong
        raise ExtractionError(
            f"{path.name}: not a readable {kind.upper()} file ({type(exc).__name__}: {exc})"
        ) from None


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise ExtractionError(f"{path.name}: binary data, not text")
    for encoding in ("utf-8-sig", "utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig",):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("cp1252", errors="replace")  # old Windows text files; never refuse a text file


# ---- PDF ----------------------------------------------------------------------------------------------
def _pdf(path: Path) -> Document:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        reason = str(exc)
        if "password" in reason.lower():
            raise ExtractionError(f"{path.name}: the PDF is password-protected") from None
        raise ExtractionError(f"{path.name}: not a readable PDF ({reason})") from None
    document = Document(path, "pdf", pages=len(pdf))
    try:
        for number in range(len(pdf)):
            page = pdf[number]
            textpage = page.get_textpage()
            text = textpage.get_text_bounded()
            textpage.close()
            page.close()
            # PDFium ends lines with \r\n; form feeds and stray \r never mean a new line of the page.
            lines = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x0c", "").split("\n")
            document.blocks.extend(_paragraphs(lines, 1, page=number + 1))
    finally:
        pdf.close()
    return document


# ---- DOCX ---------------------------------------------------------------------------------------------
def _docx(path: Path) -> Document:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        word = docx.Document(str(path))
    except PackageNotFoundError:
        raise ExtractionError(f"{path.name}: not a readable Word (.docx) file") from None
    document = Document(path, "docx")
    number = 0  # paragraphs (and table rows) in body order: a Word file's "lines"
    body = word.element.body
    for element in body.iterchildren():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "p":
            number += 1
            paragraph = Paragraph(element, word)
            text = paragraph.text.strip()
            if not text:
                continue
            style = (paragraph.style.name if paragraph.style is not None else "") or ""
            level = _docx_heading_level(style)
            kind: BlockKind = "heading" if level else "paragraph"
            document.blocks.append(Block(kind, (text,), number, number, level=level))
        elif tag == "tbl":
            table = Table(element, word)
            for row in table.rows:
                number += 1
                cells = [cell.text.strip() for cell in row.cells]
                text = " | ".join(dict.fromkeys(c for c in cells if c))  # merged cells repeat their text
                if text:
                    document.blocks.append(Block("paragraph", (text,), number, number))
    return document


def _docx_heading_level(style: str) -> int:
    if style == "Title":
        return 1
    match = re.fullmatch(r"Heading (\d)", style)
    return int(match.group(1)) if match else 0


# ---- plain text, reStructuredText -------------------------------------------------------------------------
_UNDERLINE = re.compile(r"^([=\-~*^#+`'\".:_])\1{2,}\s*$")


def text_blocks(text: str) -> list[Block]:
    """Paragraphs split at blank lines; a line underlined with =====, -----, ***** ... is a heading
    (reStructuredText's rule, which Python's own help texts follow); levels in order of first use."""
    lines = text.splitlines()
    blocks: list[Block] = []
    styles: list[str] = []
    pending: list[str] = []
    start = 1
    i = 0
    while i < len(lines):
        line = lines[i]
        below = lines[i + 1] if i + 1 < len(lines) else ""
        title = line.strip()
        if title and _UNDERLINE.match(below) and len(below.strip()) >= len(title) and not _UNDERLINE.match(line):
            blocks.extend(_paragraphs(pending, start))
            pending = []
            if below.strip()[0] not in styles:
                styles.append(below.strip()[0])
            blocks.append(Block("heading", (title,), i + 1, i + 2, level=styles.index(below.strip()[0]) + 1))
            i += 2
            start = i + 1
            continue
        if not pending:
            start = i + 1
        pending.append(line)
        i += 1
    blocks.extend(_paragraphs(pending, start))
    return blocks


def _paragraphs(lines: list[str], first_line: int, page: int | None = None) -> list[Block]:
    """Blank-line separated paragraphs of consecutive lines numbered from first_line."""
    blocks: list[Block] = []
    current: list[str] = []
    start = first_line
    for offset, line in enumerate([*lines, ""]):
        if line.strip():
            if not current:
                start = first_line + offset
            current.append(line.rstrip())
        elif current:
            blocks.append(Block("paragraph", tuple(current), start, start + len(current) - 1, page=page))
            current = []
    return blocks


# ---- Markdown -----------------------------------------------------------------------------------------
_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_FRONT_MATTER = re.compile(r"^---\s*$")


def markdown_blocks(text: str) -> list[Block]:
    """Headings (ATX and setext), fenced code blocks and blank-line separated paragraphs/lists."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: list[str] = []
    start = 1
    i = 0
    if lines and _FRONT_MATTER.match(lines[0]):  # YAML front matter is metadata, not text
        end = next((j for j in range(1, len(lines)) if _FRONT_MATTER.match(lines[j])), None)
        if end is not None:
            i = end + 1

    def flush() -> None:
        nonlocal pending
        blocks.extend(_paragraphs(pending, start))
        pending = []

    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            flush()
            marker = fence.group(1)
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith(marker[0] * len(marker)):
                end += 1
            body = tuple(lines[i : min(end, len(lines) - 1) + 1])
            blocks.append(Block("code", body, i + 1, i + len(body)))
            i = end + 1
            start = i + 1
            continue
        atx = _ATX.match(line)
        if atx:
            flush()
            blocks.append(Block("heading", (atx.group(2),), i + 1, i + 1, level=len(atx.group(1))))
            i += 1
            start = i + 1
            continue
        below = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and not pending and _SETEXT.match(below):
            level = 1 if below.strip().startswith("=") else 2
            blocks.append(Block("heading", (line.strip(),), i + 1, i + 2, level=level))
            i += 2
            start = i + 1
            continue
        if not pending:
            start = i + 1
        pending.append(line)
        i += 1
    flush()
    return blocks


# ---- source code --------------------------------------------------------------------------------------
_DEFINITION = re.compile(
    r"^(?:export\s+|pub(?:\(\w+\))?\s+|public\s+|private\s+|static\s+|async\s+|abstract\s+|final\s+)*"
    r"(?:def|class|function|fn|func|impl|struct|enum|trait|interface|type|module|namespace|object)\b"
)


def code_blocks(text: str) -> list[Block]:
    """Blank-line separated runs of lines as code blocks; a top-level definition (def, class, fn, func ...)
    also starts a heading, so a chunk of code knows which function or class it belongs to."""
    lines = text.splitlines()
    blocks: list[Block] = []
    for block in _paragraphs(lines, 1):
        first = block.lines[0]
        if _DEFINITION.match(first):
            blocks.append(
                Block(
                    "heading", (first.strip().rstrip("{:").strip()[:120],), block.line_start, block.line_start, level=1
                )
            )
        blocks.append(Block("code", block.lines, block.line_start, block.line_end))
    return blocks


# ---- HTML ---------------------------------------------------------------------------------------------
_BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "li",
        "dt",
        "dd",
        "td",
        "th",
        "tr",
        "blockquote",
        "section",
        "article",
        "header",
        "footer",
        "table",
        "ul",
        "ol",
        "dl",
        "br",
        "hr",
        "figcaption",
        "caption",
        "main",
        "nav",
        "aside",
        "form",
    }
)
_SKIP_TAGS = frozenset({"script", "style", "template", "noscript", "svg", "head"})
_HEADINGS = {f"h{n}": n for n in range(1, 7)}


class _HtmlBlocks(HTMLParser):
    """Collects text between block-level tags, with the source line where each piece began and ended."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self._text: list[str] = []
        self._start = 0
        self._skip = 0
        self._pre = 0
        self._heading = 0

    def _flush(self) -> None:
        raw = "".join(self._text)
        self._text = []
        if self._pre:
            lines = tuple(line.rstrip() for line in raw.strip("\n").split("\n"))
            kind: BlockKind = "code"
        else:
            lines = (" ".join(raw.split()),)
            kind = "heading" if self._heading else "paragraph"
        if any(line.strip() for line in lines):
            end = self.getpos()[0]
            self.blocks.append(
                Block(kind, lines, self._start, max(end, self._start), level=self._heading, exact_lines=False)
            )

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _HEADINGS or tag in _BLOCK_TAGS or tag == "pre":
            self._flush()
            if tag in _HEADINGS:
                self._heading = _HEADINGS[tag]
            if tag == "pre":
                self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _HEADINGS or tag in _BLOCK_TAGS or tag == "pre":
            self._flush()
            if tag in _HEADINGS:
                self._heading = 0
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if not "".join(self._text).strip():
            self._start = self.getpos()[0] + data[: len(data) - len(data.lstrip())].count("\n")
        self._text.append(data)


def _html_blocks(text: str) -> list[Block]:
    parser = _HtmlBlocks()
    parser.feed(text)
    parser.close()
    parser._flush()
    return parser.blocks
