"""Model Markdown -> a laid-out QTextDocument: GitHub dialect, raw HTML shown as text, Pygments-coloured code.

Qt's own Markdown reader (md4c) parses the text with MarkdownNoHTML, so nothing a model writes can become
live HTML. Nothing a model writes can make Hearth read a file or a URL either: Markdown images become their
alt text, and the document (SafeTextDocument) answers every resource request with a placeholder without
touching the file system (Qt would otherwise open `![x](/path)`: a FIFO blocks forever, /dev/zero aborts).
Fenced code blocks keep their language (BlockCodeLanguage); we colour them with Pygments by
applying character formats over the block text, and give each block a header strip where the chat view
paints the language name and a Copy button.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.style import StyleMeta
from pygments.styles import get_style_by_name
from pygments.token import _TokenType
from pygments.util import ClassNotFound
from PySide6.QtCore import QObject, QRectF, QUrl
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetricsF,
    QImage,
    QTextBlock,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QTextFrameFormat,
    QTextTable,
)
from PySide6.QtGui import QTextFormat as Fmt

from app.ui.theme import Theme

MARKDOWN_FEATURES = QTextDocument.MarkdownFeature(
    QTextDocument.MarkdownFeature.MarkdownDialectGitHub | QTextDocument.MarkdownFeature.MarkdownNoHTML
)
CODE_HEADER = 26.0  # px above a code block's first line for its language label and Copy button
CODE_PAD = 12.0  # px of padding inside a code block
CODE_GAP = 8.0  # px between a code block and the text around it
MAX_HIGHLIGHT_CHARS = 200_000  # beyond this a block is shown plain: lexing it would stall the GUI
# Qt lays Markdown tables out in worse than linear time (one 350 KiB table: 22 s on the GUI thread), and
# any document costs time in proportion to its size. A message bigger than this, or with more table rows,
# is shown as plain text, PLAIN_CHUNK characters at a time (the view offers "Show more").
LARGE_MESSAGE_CHARS = 100_000
MAX_TABLE_ROWS = 300
PLAIN_CHUNK = 50_000  # about 30 ms to lay out here


class SafeTextDocument(QTextDocument):
    """A QTextDocument that never loads a resource: every image, style sheet or URL it is asked for is a
    blank placeholder. QTextDocument's own loadResource opens local paths and file:// URLs (and Qt's image
    handler falls back to reading the file itself when a resource comes back empty), so the answer must be
    a valid image, not nothing. Use it for every document laid out from text Hearth did not write."""

    _PLACEHOLDER: QImage | None = None

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)

    def loadResource(self, kind: int, name: QUrl) -> object:
        if kind == QTextDocument.ResourceType.ImageResource.value:
            if SafeTextDocument._PLACEHOLDER is None:
                image = QImage(1, 1, QImage.Format.Format_ARGB32)
                image.fill(0)
                SafeTextDocument._PLACEHOLDER = image
            return SafeTextDocument._PLACEHOLDER
        return ""


@dataclass(frozen=True)
class CodeBlock:
    """One fenced code block: its language, text and where it sits in the document."""

    language: str
    text: str
    first_block: int  # block numbers in the QTextDocument
    last_block: int


@dataclass
class RenderedMarkdown:
    """A document ready to paint at a fixed width, with its code blocks for hit-testing."""

    doc: QTextDocument
    code_blocks: list[CodeBlock]
    width: float
    plain: bool = False  # too large to format: laid out as plain text
    hidden_chars: int = 0  # characters not laid out yet ("Show more")

    @property
    def height(self) -> float:
        return self.doc.size().height()

    def code_rect(self, block: CodeBlock) -> QRectF:
        """The rectangle (document coordinates) a code block's background covers, header included."""
        layout = self.doc.documentLayout()
        first = layout.blockBoundingRect(self.doc.findBlockByNumber(block.first_block))
        last = layout.blockBoundingRect(self.doc.findBlockByNumber(block.last_block))
        # Block rectangles exclude margins: the header strip is the first block's top margin, the padding
        # below is the last block's bottom margin.
        top = first.top() - CODE_HEADER
        return QRectF(0.0, top, self.width, last.bottom() + CODE_PAD - top)

    def copy_rect(self, block: CodeBlock) -> QRectF:
        rect = self.code_rect(block)
        return QRectF(rect.right() - 64.0, rect.top() + 3.0, 58.0, CODE_HEADER - 6.0)


def is_large(markdown: str) -> bool:
    """Whether laying markdown out as Markdown would stall the GUI thread (see LARGE_MESSAGE_CHARS)."""
    if len(markdown) > LARGE_MESSAGE_CHARS:
        return True
    rows = 0
    for line in markdown.split("\n"):
        if line.lstrip().startswith("|"):
            rows += 1
            if rows > MAX_TABLE_ROWS:
                return True
    return False


def render(
    markdown: str, *, width: float, theme: Theme, font: QFont, mono: QFont, shown_chars: int = PLAIN_CHUNK
) -> RenderedMarkdown:
    """Parse, colour and lay out markdown for painting at width. A large message is laid out as plain
    text, its first shown_chars characters only."""
    if is_large(markdown):
        return _render_plain(markdown, width, font, shown_chars)
    doc = SafeTextDocument()
    doc.setDocumentMargin(0)
    doc.setDefaultFont(font)
    doc.setUndoRedoEnabled(False)
    doc.setMarkdown(keep_line_breaks(markdown), MARKDOWN_FEATURES)
    _replace_images(doc)
    blocks = _decorate(doc, theme, mono)
    doc.setTextWidth(max(50.0, width))
    return RenderedMarkdown(doc, blocks, max(50.0, width))


def _render_plain(text: str, width: float, font: QFont, shown_chars: int) -> RenderedMarkdown:
    doc = SafeTextDocument()
    doc.setDocumentMargin(0)
    doc.setDefaultFont(font)
    doc.setUndoRedoEnabled(False)
    visible = text[: max(shown_chars, 0)]
    doc.setPlainText(visible)
    doc.setTextWidth(max(50.0, width))
    return RenderedMarkdown(doc, [], max(50.0, width), plain=True, hidden_chars=len(text) - len(visible))


def keep_line_breaks(markdown: str) -> str:
    """A single newline inside a paragraph becomes a line break, as in every chat app: models write
    addresses, poems and marker-less lists line by line, and Markdown would otherwise run them together.
    Fenced code is left alone (its lines are kept anyway); blank lines still separate paragraphs."""
    lines = markdown.split("\n")
    fence = ""
    for i, line in enumerate(lines[:-1]):
        stripped = line.lstrip()
        if fence:
            if stripped.startswith(fence):
                fence = ""
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            continue
        following = lines[i + 1].strip()
        if line.strip() and following and not line.endswith(("  ", "\\")) and not following.startswith(fence or "```"):
            lines[i] = line + "  "  # CommonMark's hard line break
    return "\n".join(lines)


def _replace_images(doc: QTextDocument) -> None:
    """Every image becomes "[image: alt text]" in italics, before anything lays the document out."""
    images: list[tuple[int, str]] = []
    block = doc.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            fragment = it.fragment()
            fmt = fragment.charFormat()
            if fragment.isValid() and fmt.isImageFormat():
                alt = fmt.stringProperty(Fmt.Property.ImageAltText) or fmt.stringProperty(Fmt.Property.ImageTitle)
                for offset in range(fragment.length()):  # one object-replacement character per image
                    images.append((fragment.position() + offset, alt.strip()))
            it += 1
        block = block.next()
    if not images:
        return
    cursor = QTextCursor(doc)
    cursor.beginEditBlock()
    for position, alt in reversed(images):  # from the end, so earlier positions stay valid
        cursor.setPosition(position)
        cursor.setPosition(position + 1, QTextCursor.MoveMode.KeepAnchor)
        fmt = QTextCharFormat()
        fmt.setFontItalic(True)
        cursor.insertText(f"[image: {alt}]" if alt else "[image]", fmt)
    cursor.endEditBlock()


def _decorate(doc: QTextDocument, theme: Theme, mono: QFont) -> list[CodeBlock]:
    """Indent and colour code blocks, tint inline code, tighten heading sizes."""
    groups: list[list[QTextBlock]] = []
    cursor = QTextCursor(doc)
    cursor.beginEditBlock()
    block = doc.begin()
    previous_code = False
    while block.isValid():
        fmt = block.blockFormat()
        is_code = fmt.hasProperty(Fmt.BlockCodeFence) or fmt.hasProperty(Fmt.BlockCodeLanguage)
        if is_code:
            if not previous_code:
                groups.append([])
            groups[-1].append(block)
        else:
            _tint_inline_code(cursor, block, theme)
            if fmt.headingLevel():
                _shrink_heading(cursor, block, fmt.headingLevel())
        previous_code = is_code
        block = block.next()
    code_blocks = [_style_code(cursor, group, theme, mono) for group in groups]
    for frame in doc.rootFrame().childFrames():
        if isinstance(frame, QTextTable):
            _style_table(frame, theme)
    cursor.endEditBlock()
    return code_blocks


def _style_table(table: QTextTable, theme: Theme) -> None:
    fmt = table.format()
    fmt.setBorder(1.0)
    fmt.setBorderBrush(QColor(theme.border))
    fmt.setBorderStyle(QTextFrameFormat.BorderStyle.BorderStyle_Solid)
    fmt.setBorderCollapse(True)
    fmt.setCellPadding(6.0)
    fmt.setCellSpacing(0.0)
    fmt.setTopMargin(4.0)
    fmt.setBottomMargin(8.0)
    table.setFormat(fmt)


def _tint_inline_code(cursor: QTextCursor, block: QTextBlock, theme: Theme) -> None:
    it = block.begin()
    while not it.atEnd():
        fragment = it.fragment()
        if fragment.isValid() and fragment.charFormat().fontFixedPitch():
            fmt = QTextCharFormat()
            fmt.setBackground(QColor(theme.inline_code_bg))
            cursor.setPosition(fragment.position())
            cursor.setPosition(fragment.position() + fragment.length(), QTextCursor.MoveMode.KeepAnchor)
            cursor.mergeCharFormat(fmt)
        it += 1


def _shrink_heading(cursor: QTextCursor, block: QTextBlock, level: int) -> None:
    # Qt's heading sizes (up to xx-large) shout inside a chat bubble; keep them modest.
    fmt = QTextCharFormat()
    fmt.setProperty(Fmt.FontSizeAdjustment, {1: 2, 2: 1, 3: 1}.get(level, 0))
    cursor.setPosition(block.position())
    cursor.setPosition(block.position() + block.length() - 1, QTextCursor.MoveMode.KeepAnchor)
    cursor.mergeCharFormat(fmt)


def _style_code(cursor: QTextCursor, group: list[QTextBlock], theme: Theme, mono: QFont) -> CodeBlock:
    language = group[0].blockFormat().stringProperty(Fmt.BlockCodeLanguage).strip()
    for index, block in enumerate(group):
        fmt = block.blockFormat()
        fmt.setLeftMargin(CODE_PAD)
        fmt.setRightMargin(CODE_PAD)
        fmt.setTopMargin(CODE_HEADER + CODE_GAP if index == 0 else 0.0)
        fmt.setBottomMargin(CODE_PAD + CODE_GAP if index == len(group) - 1 else 0.0)
        fmt.setNonBreakableLines(False)  # long lines wrap instead of widening the whole message
        cursor.setPosition(block.position())
        cursor.setBlockFormat(fmt)
    start = group[0].position()
    end = group[-1].position() + group[-1].length() - 1
    cursor.setPosition(start)
    cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
    base = QTextCharFormat()
    base.setFont(mono)
    base.setForeground(QColor(theme.text))
    cursor.setCharFormat(base)
    text = "\n".join(block.text() for block in group)
    if len(text) <= MAX_HIGHLIGHT_CHARS:
        _highlight(cursor, start, text, language, theme)
    return CodeBlock(language, text, group[0].blockNumber(), group[-1].blockNumber())


def _highlight(cursor: QTextCursor, start: int, text: str, language: str, theme: Theme) -> None:
    lexer = _lexer(language.lower())
    formats = _token_formats(theme.pygments_style)
    position = start
    for token, value in lexer.get_tokens(text):
        length = len(value)
        fmt = _format_for(formats, token)
        if fmt is not None and length:
            cursor.setPosition(position)
            cursor.setPosition(position + length, QTextCursor.MoveMode.KeepAnchor)
            cursor.mergeCharFormat(fmt)
        position += length


@cache
def _lexer(language: str) -> Lexer:
    if not language:
        return TextLexer()
    try:
        # stripnl/ensurenl off: token offsets must match the document text character for character.
        return get_lexer_by_name(language, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return TextLexer()


@cache
def _token_formats(style_name: str) -> dict[_TokenType, QTextCharFormat | None]:
    style: StyleMeta = get_style_by_name(style_name)
    formats: dict[_TokenType, QTextCharFormat | None] = {}
    for token, spec in style:
        if not (spec["color"] or spec["bold"] or spec["italic"]):
            formats[token] = None
            continue
        fmt = QTextCharFormat()
        if spec["color"]:
            fmt.setForeground(QColor("#" + spec["color"]))
        if spec["bold"]:
            fmt.setFontWeight(QFont.Weight.Bold)
        if spec["italic"]:
            fmt.setFontItalic(True)
        formats[token] = fmt
    return formats


def _format_for(formats: dict[_TokenType, QTextCharFormat | None], token: _TokenType) -> QTextCharFormat | None:
    while token is not None:
        fmt = formats.get(token)
        if fmt is not None:
            return fmt
        token = token.parent
    return None


def estimate_height(markdown: str, width: float, font: QFont, mono: QFont) -> float:
    """A cheap guess of render(markdown).height (no parsing): used for rows not laid out yet, so a long
    conversation opens without rendering every message; the exact height replaces it when painted."""
    text_metrics, mono_metrics = QFontMetricsF(font), QFontMetricsF(mono)
    line, mono_line = text_metrics.lineSpacing(), mono_metrics.lineSpacing()
    average = max(1.0, text_metrics.averageCharWidth())
    mono_average = max(1.0, mono_metrics.averageCharWidth())
    per_line = max(1, int(width / average))
    mono_per_line = max(1, int((width - 2 * CODE_PAD) / mono_average))
    height, in_code, paragraphs = 0.0, False, 0
    for raw in markdown.split("\n"):
        if raw.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
            height += CODE_HEADER if in_code else CODE_PAD
            continue
        if in_code:
            height += mono_line * max(1, math.ceil(len(raw) / mono_per_line))
        elif raw.strip():
            height += line * max(1, math.ceil(len(raw) / per_line))
        else:
            paragraphs += 1
    return height + paragraphs * line * 0.5
