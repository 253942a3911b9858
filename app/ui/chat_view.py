"""The conversation view: a virtualized list of messages with follow-the-reply scrolling and text selection.

A QListView paints only the rows on screen, so a 1,000-message conversation costs a few rendered messages
to open; exact row heights are filled in on idle time, bottom first, without moving what the user reads.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QEvent, QModelIndex, QPoint, QPointF, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QContextMenuEvent,
    QDesktopServices,
    QGuiApplication,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QPaintEvent,
    QResizeEvent,
    QTextCursor,
)
from PySide6.QtWidgets import QAbstractItemView, QFrame, QListView, QMenu, QPushButton, QWidget

from app.ui.chat_delegate import MessageDelegate, RowGeometry
from app.ui.chat_model import ChatModel, ItemRole, MessageItem
from app.ui.citations import source_number

FOLLOW_SLACK = 12  # px from the bottom that still counts as "at the bottom"
IDLE_SLICE_S = 0.008  # exact-height work per idle tick, so input stays responsive
RELAYOUT_EVERY_S = 0.4
SAFE_SCHEMES = ("http", "https", "mailto")


class ChatView(QListView):
    """Shows a ChatModel.

    Signals:
        action_requested(str, int): a message button was clicked: action name, row.
        notice(str): a short confirmation for the status bar ("Code copied").
        source_requested(int, int): a citation [n] was clicked: row, n.
    """

    action_requested = Signal(str, int)
    notice = Signal(str)
    source_requested = Signal(int, int)

    def __init__(self, model: ChatModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ChatView")
        self.chat_model = model
        self.delegate = MessageDelegate(self)
        self.setModel(model)
        self.setItemDelegate(self.delegate)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setUniformItemSizes(False)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.verticalScrollBar().setSingleStep(28)
        self._follow = True
        self._press: tuple[int, QPointF, str] | None = None  # (row, pos, what) of a pending click
        self._dragging = False
        self._relayout_timer = QTimer(self)
        self._relayout_timer.setSingleShot(True)
        self._relayout_timer.setInterval(0)
        self._relayout_timer.timeout.connect(self._relayout)
        self._idle_timer = QTimer(self)
        self._idle_timer.setInterval(0)
        self._idle_timer.timeout.connect(self._measure_some)
        self._idle_row = -1
        self._idle_changed = False
        self._idle_relayout_at = 0.0
        self.verticalScrollBar().rangeChanged.connect(self._on_range_changed)
        self.verticalScrollBar().valueChanged.connect(self._on_scrolled)
        model.modelReset.connect(self._on_reset)
        model.rowsInserted.connect(self._on_rows_inserted)
        self._jump = QPushButton("↓  Latest", self.viewport())
        self._jump.setObjectName("Primary")
        self._jump.setCursor(Qt.CursorShape.PointingHandCursor)
        self._jump.hide()
        self._jump.clicked.connect(self.follow_bottom)

    # ---- following the reply ------------------------------------------------------------------------------
    @property
    def following(self) -> bool:
        return self._follow

    def follow_bottom(self) -> None:
        self._follow = True
        self._jump.hide()
        self.scrollToBottom()

    def _on_range_changed(self, _minimum: int, maximum: int) -> None:
        if self._follow:
            self.verticalScrollBar().setValue(maximum)

    def _on_scrolled(self, value: int) -> None:
        self._follow = value >= self.verticalScrollBar().maximum() - FOLLOW_SLACK
        streaming = any(item.streaming for item in self.chat_model.items[-1:])
        self._jump.setVisible(not self._follow and streaming)
        if self._jump.isVisible():
            self._place_jump()

    def _place_jump(self) -> None:
        self._jump.adjustSize()
        area = self.viewport().rect()
        self._jump.move(area.center().x() - self._jump.width() // 2, area.bottom() - self._jump.height() - 12)

    def _on_reset(self) -> None:
        self.delegate.selection = None
        self._follow = True
        self._jump.hide()
        self._idle_row = self.chat_model.rowCount() - 1
        self._idle_timer.start()
        self._update_always_shown()
        QTimer.singleShot(0, self.scrollToBottom)

    def _on_rows_inserted(self, _parent: QModelIndex, _first: int, _last: int) -> None:
        self._update_always_shown()
        if self._follow:
            QTimer.singleShot(0, self.scrollToBottom)

    def _update_always_shown(self) -> None:
        items = self.chat_model.items
        self.delegate.always_show_key = items[-1].key if items and items[-1].role == "assistant" else 0

    # ---- exact heights --------------------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if self.delegate.pending_relayout:
            self.delegate.pending_relayout = False
            self._relayout_timer.start()

    def _relayout(self) -> None:
        """Lay rows out again with their new heights, keeping the row at the top of the view in place."""
        anchor = self._anchor()
        self.doItemsLayout()
        if self._follow:
            self.scrollToBottom()
        elif anchor is not None:
            row, offset = anchor
            rect = self.visualRect(self.chat_model.index(row))
            bar = self.verticalScrollBar()
            bar.setValue(bar.value() + rect.top() - offset)

    def _anchor(self) -> tuple[int, int] | None:
        index = self.indexAt(QPoint(10, 1))
        if not index.isValid():
            return None
        return index.row(), self.visualRect(index).top()

    def _measure_some(self) -> None:
        """Compute exact heights for a slice of rows (newest first); re-lay out a few times a second."""
        width = float(self.viewport().width())
        now = time.perf_counter()
        deadline = now + IDLE_SLICE_S
        while self._idle_row >= 0 and time.perf_counter() < deadline:
            if self._idle_row < self.chat_model.rowCount():
                item = self.chat_model.item(self._idle_row)
                if self.delegate.known_height(item, width) is None:
                    self.delegate.measure(item, width, self)
                    self._idle_changed = True
            self._idle_row -= 1
        done = self._idle_row < 0
        if self._idle_changed and (done or now - self._idle_relayout_at > RELAYOUT_EVERY_S):
            # A relayout walks every row (~10 ms for 1,000): not after every slice.
            self._idle_changed = False
            self._idle_relayout_at = now
            self._relayout()
        if done:
            self._idle_timer.stop()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self._idle_row = self.chat_model.rowCount() - 1
            self._idle_timer.start()
        if self._jump.isVisible():
            self._place_jump()

    def refresh_style(self) -> None:
        """Theme or font changed: render everything again."""
        self.delegate.forget()
        self._idle_row = self.chat_model.rowCount() - 1
        self._idle_timer.start()
        self.doItemsLayout()
        self.viewport().update()

    # ---- hit testing ------------------------------------------------------------------------------------------
    def _at(self, pos: QPoint) -> tuple[int, MessageItem, RowGeometry, QPointF] | None:
        index = self.indexAt(pos)
        if not index.isValid():
            return None
        item: MessageItem = index.data(ItemRole)
        rect = self.visualRect(index)
        geo = self.delegate.geometry(item, float(self.viewport().width()), self)
        return index.row(), item, geo, QPointF(pos - rect.topLeft())

    def geometry_of(self, row: int) -> tuple[RowGeometry, QPoint]:
        """A row's geometry and its top-left in viewport coordinates (tests click buttons with it)."""
        index = self.chat_model.index(row)
        item: MessageItem = index.data(ItemRole)
        return self.delegate.geometry(item, float(self.viewport().width()), self), self.visualRect(index).topLeft()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        pos = event.position().toPoint()
        found = self._at(pos)
        if self._press is not None and event.buttons() & Qt.MouseButton.LeftButton:
            self._drag_select(found, pos)
            return
        key, what = (found[1].key, self.delegate.hit(found[1], found[2], found[3])) if found else (0, "")
        if (key, what) != (self.delegate.hover_key, self.delegate.hover_action):
            self.delegate.hover_key, self.delegate.hover_action = key, what
            self.viewport().update()
        if what == "text":
            self.viewport().setCursor(Qt.CursorShape.IBeamCursor)
        elif what:
            self.viewport().setCursor(Qt.CursorShape.PointingHandCursor)
        else:
            self.viewport().unsetCursor()

    def leaveEvent(self, event: QEvent) -> None:
        self.delegate.hover_key, self.delegate.hover_action = 0, ""
        self.viewport().update()
        super().leaveEvent(event)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.setFocus()
        found = self._at(event.position().toPoint())
        self._dragging = False
        if event.button() != Qt.MouseButton.LeftButton or found is None:
            self._press = None
            return
        row, item, geo, local = found
        what = self.delegate.hit(item, geo, local)
        self._press = (row, local, what)
        if what == "text" or (what == "" and self.delegate.selection is not None):
            position = self.delegate.text_position(geo, local)
            self.delegate.selection = (item.key, position, position) if what == "text" else None
            self.viewport().update()

    def _drag_select(self, found: tuple[int, MessageItem, RowGeometry, QPointF] | None, pos: QPoint) -> None:
        if self._press is None or self._press[2] != "text" or self.delegate.selection is None:
            return
        key, anchor, _ = self.delegate.selection
        row = self._press[0]
        if found is None or found[1].key != key:
            # Dragging past the message: select to its start or end.
            rect = self.visualRect(self.chat_model.index(row))
            item = self.chat_model.item(row)
            geo = self.delegate.geometry(item, float(self.viewport().width()), self)
            position = self.delegate.text_position(geo, QPointF(pos - rect.topLeft()))
        else:
            position = self.delegate.text_position(found[2], found[3])
        self._dragging = True
        self.delegate.selection = (key, anchor, position)
        self.viewport().update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        press, self._press = self._press, None
        if press is None or self._dragging or event.button() != Qt.MouseButton.LeftButton:
            return
        found = self._at(event.position().toPoint())
        if found is None or found[0] != press[0]:
            return
        row, item, geo, local = found
        what = self.delegate.hit(item, geo, local)
        if what != press[2] or what in ("", "text"):
            return
        if what.startswith("code:"):
            block = next(b for b in geo.rendered.code_blocks if f"code:{b.first_block}" == what)  # type: ignore[union-attr]
            QGuiApplication.clipboard().setText(block.text)
            self.notice.emit("Code copied")
        elif what.startswith("link:") and source_number(what[5:]) is not None:
            self.source_requested.emit(row, source_number(what[5:]))
        elif what.startswith("link:"):
            url = QUrl(what[5:])
            if url.scheme().lower() in SAFE_SCHEMES:
                QDesktopServices.openUrl(url)
        elif what == "more":
            self.show_more(row)
        else:
            self.action_requested.emit(what, row)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        found = self._at(event.position().toPoint())
        if found is None or self.delegate.hit(found[1], found[2], found[3]) != "text":
            return
        cursor = QTextCursor(found[2].rendered.doc)  # type: ignore[union-attr]
        cursor.setPosition(self.delegate.text_position(found[2], found[3]))
        cursor.select(QTextCursor.SelectionType.WordUnderCursor)
        self.delegate.selection = (found[1].key, cursor.anchor(), cursor.position())
        self.viewport().update()

    def selected_text(self) -> str:
        selection = self.delegate.selection
        if selection is None or selection[1] == selection[2]:
            return ""
        row = self.chat_model.row_of_key(selection[0])
        if row < 0:
            return ""
        item = self.chat_model.item(row)
        geo = self.delegate.geometry(item, float(self.viewport().width()), self)
        cursor = QTextCursor(geo.rendered.doc)  # type: ignore[union-attr]
        cursor.setPosition(selection[1])
        cursor.setPosition(selection[2], QTextCursor.MoveMode.KeepAnchor)
        return cursor.selection().toPlainText()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.matches(QKeySequence.StandardKey.Copy) and self.selected_text():
            QGuiApplication.clipboard().setText(self.selected_text())
            return
        super().keyPressEvent(event)

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:
        found = self._at(event.pos())
        if found is None:
            return
        row, item = found[0], found[1]
        menu = QMenu(self)
        selected = self.selected_text()
        if selected:
            menu.addAction("Copy selection", lambda: QGuiApplication.clipboard().setText(selected))
        menu.addAction("Copy message", lambda: self.action_requested.emit("copy", row))
        if not item.streaming:
            if item.role == "user":
                menu.addAction("Edit and resend", lambda: self.action_requested.emit("edit", row))
            else:
                menu.addAction("Regenerate", lambda: self.action_requested.emit("regenerate", row))
                menu.addAction("Show prompt", lambda: self.action_requested.emit("prompt", row))
        menu.exec(event.globalPos())

    def show_more(self, row: int) -> None:
        """Lay out the next part of a large message (each part costs a bounded, small layout)."""
        self.delegate.show_more(self.chat_model.item(row))
        self.delegate.selection = None
        self._follow = False
        self._relayout()
        self.viewport().update()

    def scroll_to_message(self, message_id: int) -> None:
        row = self.chat_model.row_of(message_id)
        if row >= 0:
            self._follow = False
            self.scrollTo(self.chat_model.index(row), QAbstractItemView.ScrollHint.PositionAtTop)
