"""Paints one message: a user bubble or a full-width reply, code blocks, stats and action buttons.

Rendering Markdown costs about 1-2 ms per message, so a 1,000-message conversation cannot render every
row before it opens. sizeHint() answers from a cache of exact heights, else from a cheap estimate; the
exact height is computed when a row is painted (or by the view's idle pass) and the view re-lays out.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from PySide6.QtCore import QModelIndex, QObject, QPersistentModelIndex, QPointF, QRectF, QSize, Qt
from PySide6.QtGui import (
    QAbstractTextDocumentLayout,
    QColor,
    QFont,
    QFontMetricsF,
    QPainter,
    QPainterPath,
    QPalette,
    QTextCharFormat,
    QTextCursor,
)
from PySide6.QtWidgets import QStyledItemDelegate, QStyleOptionViewItem, QWidget

from app.ui import theme, tool_blocks
from app.ui.chat_model import ItemRole, MessageItem
from app.ui.citations import link_citations
from app.ui.markdown_render import (
    CODE_HEADER,
    PLAIN_CHUNK,
    RenderedMarkdown,
    estimate_height,
    is_large,
    render,
)

SIDE = 28.0  # px between the viewport edge and the message column
COLUMN_MAX = 820.0  # a readable line length, however wide the window
GAP = 14.0  # px above each message
BUBBLE_PAD_X, BUBBLE_PAD_Y = 14.0, 10.0
USER_SHARE = 0.78  # a user bubble is at most this share of the column
FOOTER = 28.0
DOC_CACHE = 96  # rendered documents kept (the visible rows and some around them)

ACTION_LABELS = {
    "prev": "‹",
    "next": "›",
    "copy": "Copy",
    "edit": "Edit",
    "regenerate": "Regenerate",
    "prompt": "Show prompt",
    "expand": "Show result",  # a tool result's block
    "collapse": "Hide result",
    "more": "Show more",
}
ALWAYS_SHOWN = ("prev", "next", "more")  # buttons visible without hovering the row
PLAIN_NOTE = "Shown as plain text: this message is too large to format."


@dataclass
class RowGeometry:
    """Where everything of one row goes, relative to the row's top-left corner."""

    height: float
    content: QPointF  # where the document is drawn
    rendered: RenderedMarkdown | None
    bubble: QRectF | None = None
    header: tuple[QPointF, str] | None = None
    stats: tuple[QRectF, str] | None = None
    branch: tuple[QRectF, str] | None = None
    buttons: list[tuple[str, QRectF]] = field(default_factory=list)
    error: tuple[QRectF, str] | None = None
    note: tuple[QRectF, str] | None = None  # a large message's "shown as plain text"


class MessageDelegate(QStyledItemDelegate):
    """Knows how messages look; the view asks it for geometry to hit-test clicks."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._docs: OrderedDict[int, tuple[tuple, RenderedMarkdown]] = OrderedDict()
        self._heights: dict[int, tuple[tuple, float]] = {}  # exact heights, by row key
        self._estimates: dict[int, tuple[tuple, float]] = {}
        self.hover_key = 0  # the row under the mouse (its buttons show)
        self.hover_action = ""
        self.always_show_key = 0  # the latest reply shows its buttons without hovering
        self.selection: tuple[int, int, int] | None = None  # (row key, anchor, position) in its document
        self._shown: dict[int, int] = {}  # characters laid out of a large message, by row key
        self.pending_relayout = False  # an exact height differed from the estimate given to the view

    # ---- fonts and widths ---------------------------------------------------------------------------------
    @staticmethod
    def fonts(widget: QWidget | None) -> tuple[QFont, QFont, QFont]:
        font = QFont(widget.font()) if widget is not None else theme.ui_font()
        font.setPointSizeF(max(10.5, font.pointSizeF() + 0.5))
        small = QFont(font)
        small.setPointSizeF(font.pointSizeF() - 1.5)
        return font, theme.mono_font(), small

    @staticmethod
    def column(width: float) -> tuple[float, float]:
        """(left, width) of the message column in a viewport of this width."""
        inner = max(120.0, width - 2 * SIDE)
        col = min(COLUMN_MAX, inner)
        return SIDE + (inner - col) / 2, col

    # ---- rendering with caches ------------------------------------------------------------------------
    def _signature(self, item: MessageItem, width: float) -> tuple:
        return (item.revision, len(item.sources), round(width), theme.current().name, self.shown_chars(item))

    def shown_chars(self, item: MessageItem) -> int:
        return self._shown.get(item.key, PLAIN_CHUNK)

    def show_more(self, item: MessageItem) -> None:
        """Lay out the next PLAIN_CHUNK characters of a large message (the next render does it)."""
        self._shown[item.key] = self.shown_chars(item) + PLAIN_CHUNK

    def rendered(self, item: MessageItem, width: float, widget: QWidget | None, keep: bool = True) -> RenderedMarkdown:
        """The message's document at this text width; keep=False measures without filling the cache."""
        signature = self._signature(item, width)
        cached = self._docs.get(item.key)
        if cached is not None and cached[0] == signature:
            self._docs.move_to_end(item.key)
            return cached[1]
        font, mono, _ = self.fonts(widget)
        text = item.display_text() or ("…" if item.streaming else "")
        if item.sources:  # [n] become links to the reply's sources (the passage view)
            text = link_citations(text, len(item.sources))
        doc = render(text, width=width, theme=theme.current(), font=font, mono=mono, shown_chars=self.shown_chars(item))
        if keep:
            self._docs[item.key] = (signature, doc)
            while len(self._docs) > DOC_CACHE:
                self._docs.popitem(last=False)
        return doc

    def _text_width(self, item: MessageItem, column: float) -> float:
        return column * USER_SHARE - 2 * BUBBLE_PAD_X if item.role == "user" else column

    def measure(self, item: MessageItem, viewport_width: float, widget: QWidget | None) -> float:
        """The exact height (rendering the message if needed, without caching its document)."""
        known = self.known_height(item, viewport_width)
        if known is not None:
            return known
        # A large message's layout is the expensive part of painting it: keep it for the paint to come.
        return self.geometry(item, viewport_width, widget, keep=is_large(item.display_text())).height

    def known_height(self, item: MessageItem, viewport_width: float) -> float | None:
        cached = self._heights.get(item.key)
        if cached is not None and cached[0] == self._signature(item, viewport_width):
            return cached[1]
        return None

    def estimated_height(self, item: MessageItem, viewport_width: float, widget: QWidget | None) -> float:
        signature = self._signature(item, viewport_width)
        cached = self._estimates.get(item.key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        font, mono, small = self.fonts(widget)
        _, column = self.column(viewport_width)
        text = item.display_text() or "…"
        if is_large(text):
            text = text[: self.shown_chars(item)]
        body = estimate_height(text, self._text_width(item, column), font, mono)
        height = self._chrome_height(item, small) + body
        self._estimates[item.key] = (signature, height)
        return height

    def _chrome_height(self, item: MessageItem, small: QFont) -> float:
        """Everything of a row but its text: gap, header, bubble padding, footer, error line."""
        line = QFontMetricsF(small).lineSpacing()
        height = GAP + FOOTER
        if item.role == "user":
            height += 2 * BUBBLE_PAD_Y
        else:
            height += line + 6
        if item.error:
            height += line * 2 + 6
        if is_large(item.display_text()):
            height += line + 4  # the "shown as plain text" note
        return height

    def forget(self) -> None:
        """Drop every cached document and height (theme or font changed)."""
        self._docs.clear()
        self._heights.clear()
        self._estimates.clear()

    # ---- geometry -----------------------------------------------------------------------------------------
    def geometry(
        self, item: MessageItem, viewport_width: float, widget: QWidget | None, keep: bool = True
    ) -> RowGeometry:
        left, column = self.column(viewport_width)
        _, _, small = self.fonts(widget)
        small_metrics = QFontMetricsF(small)
        line = small_metrics.lineSpacing()
        text_width = self._text_width(item, column)
        doc = self.rendered(item, text_width, widget, keep)
        y = GAP
        geo = RowGeometry(height=0.0, content=QPointF(), rendered=doc)
        if item.role == "user":
            ideal = min(text_width, max(doc.doc.idealWidth(), 24.0))
            if doc.code_blocks:
                ideal = text_width  # code blocks paint across the full text width
            bubble_w = ideal + 2 * BUBBLE_PAD_X
            bubble = QRectF(left + column - bubble_w, y, bubble_w, doc.height + 2 * BUBBLE_PAD_Y)
            geo.bubble = bubble
            geo.content = QPointF(bubble.left() + BUBBLE_PAD_X, bubble.top() + BUBBLE_PAD_Y)
            y = bubble.bottom()
        else:
            label = tool_blocks.header(item) if item.role == "tool" else _model_label(item.model) or "Assistant"
            geo.header = (QPointF(left, y + small_metrics.ascent()), label)
            y += line + 6
            geo.content = QPointF(left, y)
            y += doc.height
        if doc.plain:
            geo.note = (QRectF(left, y + 4, column, line), PLAIN_NOTE)
            y += line + 4
        if item.error:
            geo.error = (QRectF(left, y + 6, column, line * 2), item.error)
            y += line * 2 + 6
        self._footer(item, geo, left, column, y, small_metrics)
        geo.height = y + FOOTER
        self._heights[item.key] = (self._signature(item, viewport_width), geo.height)
        return geo

    def _footer(
        self, item: MessageItem, geo: RowGeometry, left: float, column: float, y: float, metrics: QFontMetricsF
    ) -> None:
        top, height = y + 4, FOOTER - 8
        names: list[str] = []
        if item.role == "tool":
            names = [] if item.streaming else ["collapse" if item.expanded else "expand", "copy"]
        elif not item.streaming:
            names = ["copy", "edit"] if item.role == "user" else ["copy", "regenerate", "prompt"]
        if geo.rendered is not None and geo.rendered.hidden_chars:
            names.append("more")
        widths = [metrics.horizontalAdvance(ACTION_LABELS[name]) + 16 for name in names]
        branch_w = 0.0
        branch_label = f"{item.sibling_index} / {item.sibling_count}"
        if item.sibling_count > 1:
            branch_w = 2 * 22 + metrics.horizontalAdvance(branch_label) + 8
        total = sum(widths) + branch_w + 4 * len(names)
        x = left + column - total if item.role == "user" else left - 6
        if item.sibling_count > 1:
            geo.buttons.append(("prev", QRectF(x, top, 22, height)))
            geo.branch = (QRectF(x + 22, top, branch_w - 44, height), branch_label)
            geo.buttons.append(("next", QRectF(x + branch_w - 22, top, 22, height)))
            x += branch_w + 4
        for name, width in zip(names, widths):
            geo.buttons.append((name, QRectF(x, top, width, height)))
            x += width + 4
        stats = item.stats_line()
        if stats:
            stats_w = metrics.horizontalAdvance(stats) + 4
            geo.stats = (QRectF(max(x + 8, left + column - stats_w), top, stats_w, height), stats)

    # ---- Qt delegate API ----------------------------------------------------------------------------------
    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        item: MessageItem = index.data(ItemRole)
        widget = option.widget
        width = float(widget.viewport().width()) if widget is not None else 800.0  # type: ignore[attr-defined]
        height = self.known_height(item, width)
        if height is None:
            height = self.estimated_height(item, width, widget)
        return QSize(int(width), int(height))

    def paint(
        self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        item: MessageItem = index.data(ItemRole)
        widget = option.widget
        width = float(widget.viewport().width()) if widget is not None else float(option.rect.width())  # type: ignore[attr-defined]
        known = self.known_height(item, width)
        geo = self.geometry(item, width, widget)
        if known is None or abs(known - geo.height) > 0.5 or abs(option.rect.height() - geo.height) > 1:
            self.pending_relayout = True
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.translate(QPointF(option.rect.topLeft()))
        # Only what the viewport shows is drawn: a long document draws every line otherwise.
        if widget is not None:
            viewport = QRectF(widget.viewport().rect())  # type: ignore[attr-defined]
            visible = viewport.translated(-QPointF(option.rect.topLeft()))
        else:
            visible = QRectF(0, 0, option.rect.width(), option.rect.height())
        self._paint_row(painter, item, geo, widget, visible)
        painter.restore()

    def _paint_row(
        self, painter: QPainter, item: MessageItem, geo: RowGeometry, widget: QWidget | None, visible: QRectF
    ) -> None:
        t = theme.current()
        _, _, small = self.fonts(widget)
        if geo.bubble is not None:
            path = QPainterPath()
            path.addRoundedRect(geo.bubble, 14, 14)
            painter.fillPath(path, QColor(t.user_bubble))
        if geo.header is not None:
            font = QFont(small)
            font.setWeight(QFont.Weight.DemiBold)
            painter.setFont(font)
            painter.setPen(QColor(t.muted))
            painter.drawText(geo.header[0], geo.header[1])
        assert geo.rendered is not None
        self._paint_code_frames(painter, geo, small, item)
        painter.save()
        painter.translate(geo.content)
        context = QAbstractTextDocumentLayout.PaintContext()
        context.clip = visible.translated(-geo.content)
        context.palette.setColor(QPalette.ColorRole.Text, QColor(t.text))
        context.palette.setColor(QPalette.ColorRole.Link, QColor(t.accent))
        if self.selection is not None and self.selection[0] == item.key:
            context.selections = [self._selection_format(geo.rendered, self.selection)]
        geo.rendered.doc.documentLayout().draw(painter, context)
        painter.restore()
        painter.setFont(small)
        if geo.note is not None:
            painter.setPen(QColor(t.muted))
            painter.drawText(geo.note[0], Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, geo.note[1])
        if geo.error is not None:
            painter.setPen(QColor(t.error))
            painter.drawText(geo.error[0], Qt.TextFlag.TextWordWrap, geo.error[1])
        if geo.stats is not None:
            painter.setPen(QColor(t.muted))
            painter.drawText(geo.stats[0], Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, geo.stats[1])
        show_buttons = item.key in (self.hover_key, self.always_show_key)
        if geo.branch is not None:
            painter.setPen(QColor(t.muted))
            painter.drawText(geo.branch[0], Qt.AlignmentFlag.AlignCenter, geo.branch[1])
        for name, rect in geo.buttons:
            if name not in ALWAYS_SHOWN and not show_buttons:
                continue
            hovered = item.key == self.hover_key and name == self.hover_action
            if hovered:
                path = QPainterPath()
                path.addRoundedRect(rect, 6, 6)
                painter.fillPath(path, QColor(t.hover))
            painter.setPen(QColor(t.text if hovered else t.muted))
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, ACTION_LABELS[name])

    def _paint_code_frames(self, painter: QPainter, geo: RowGeometry, small: QFont, item: MessageItem) -> None:
        t = theme.current()
        assert geo.rendered is not None
        for block in geo.rendered.code_blocks:
            rect = geo.rendered.code_rect(block).translated(geo.content)
            path = QPainterPath()
            path.addRoundedRect(rect, 8, 8)
            painter.fillPath(path, QColor(t.code_bg))
            painter.setPen(QColor(t.code_border))
            painter.drawPath(path)
            painter.setFont(small)
            painter.setPen(QColor(t.muted))
            header = QRectF(rect.left() + 12, rect.top(), rect.width() - 24, CODE_HEADER)
            painter.drawText(
                header, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, block.language or "text"
            )
            copy = geo.rendered.copy_rect(block).translated(geo.content)
            hovered = item.key == self.hover_key and self.hover_action == f"code:{block.first_block}"
            if hovered:
                chip = QPainterPath()
                chip.addRoundedRect(copy, 5, 5)
                painter.fillPath(chip, QColor(t.hover))
            painter.setPen(QColor(t.text if hovered else t.muted))
            painter.drawText(copy, Qt.AlignmentFlag.AlignCenter, "Copy")

    @staticmethod
    def _selection_format(
        rendered: RenderedMarkdown, selection: tuple[int, int, int]
    ) -> QAbstractTextDocumentLayout.Selection:
        cursor = QTextCursor(rendered.doc)
        cursor.setPosition(selection[1])
        cursor.setPosition(selection[2], QTextCursor.MoveMode.KeepAnchor)
        fmt = QTextCharFormat()
        fmt.setBackground(QColor(theme.current().selection))
        chosen = QAbstractTextDocumentLayout.Selection()
        chosen.cursor = cursor
        chosen.format = fmt
        return chosen

    # ---- hit testing --------------------------------------------------------------------------------------
    def hit(self, item: MessageItem, geo: RowGeometry, pos: QPointF) -> str:
        """What is under pos (row coordinates): an action name, 'code:<block>', 'link:<url>', 'text' or ''."""
        for name, rect in geo.buttons:
            if rect.contains(pos) and (name in ALWAYS_SHOWN or item.key in (self.hover_key, self.always_show_key)):
                return name
        if geo.rendered is None:
            return ""
        local = pos - geo.content
        for block in geo.rendered.code_blocks:
            if geo.rendered.copy_rect(block).contains(local):
                return f"code:{block.first_block}"
        layout = geo.rendered.doc.documentLayout()
        anchor = layout.anchorAt(local)
        if anchor:
            return f"link:{anchor}"
        if QRectF(0, 0, geo.rendered.width, geo.rendered.height).contains(local):
            return "text"
        return ""

    def text_position(self, geo: RowGeometry, pos: QPointF) -> int:
        assert geo.rendered is not None
        return geo.rendered.doc.documentLayout().hitTest(pos - geo.content, Qt.HitTestAccuracy.FuzzyHit)


def _model_label(model: str) -> str:
    name = model.rsplit("/", 1)[-1]
    return name[:-5] if name.lower().endswith(".gguf") else name
