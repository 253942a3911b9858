"""The conversation list: new chat, search, chats grouped by date, rename / pin / delete with undo."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from PySide6.QtCore import QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.ui.untrusted import plain, tooltip

if TYPE_CHECKING:
    from app.core.store import Conversation, SearchHit

IdRole = Qt.ItemDataRole.UserRole + 1
MessageRole = Qt.ItemDataRole.UserRole + 2
UNDO_MS = 10_000
SEARCH_DELAY_MS = 150


def date_group(when: float, today: date | None = None) -> str:
    """'Today', 'Yesterday', 'Previous 7 days', 'Previous 30 days', then 'March 2025'."""
    today = today or date.today()
    try:
        day = datetime.fromtimestamp(when).date()
    except (OverflowError, OSError, ValueError):  # a time no calendar here can show (an odd import)
        return "Undated"
    if day >= today:
        return "Today"
    if day == today - timedelta(days=1):
        return "Yesterday"
    if day > today - timedelta(days=7):
        return "Previous 7 days"
    if day > today - timedelta(days=30):
        return "Previous 30 days"
    return day.strftime("%B %Y")


def snippet_html(snippet: str) -> str:
    """A search snippet with its [matches] in bold, everything else escaped."""
    escaped = html.escape(snippet)
    return re.sub(r"\[([^\[\]]*)\]", r"<b>\1</b>", escaped)


class Sidebar(QWidget):
    """Signals:
    new_chat_requested(), conversation_selected(int), search_changed(str), hit_selected(int, int),
    rename_requested(int, str), pin_requested(int, bool), delete_requested(int), restore_requested(int).
    """

    new_chat_requested = Signal()
    conversation_selected = Signal(int)
    search_changed = Signal(str)
    hit_selected = Signal(int, int)
    rename_requested = Signal(int, str)
    pin_requested = Signal(int, bool)
    delete_requested = Signal(int)
    restore_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Sidebar")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self._conversations: dict[int, Conversation] = {}
        self._current = 0
        self._filling = False
        self._deleted_id = 0
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 12, 10, 10)
        layout.setSpacing(8)

        self.new_button = QPushButton("+  New chat", self)
        self.new_button.setToolTip("Start a new conversation (Ctrl+N)")
        self.new_button.clicked.connect(self.new_chat_requested)
        layout.addWidget(self.new_button)

        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Search chats (Ctrl+K)")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._on_search_text)
        layout.addWidget(self.search)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self._emit_search)

        self.list = QListWidget(self)
        self.list.setObjectName("ConversationList")
        self.list.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.EditKeyPressed)
        self.list.customContextMenuRequested.connect(self._on_context_menu)
        self.list.itemClicked.connect(self._on_item_clicked)
        self.list.itemChanged.connect(self._on_item_changed)
        layout.addWidget(self.list, 1)

        self.empty = QLabel("No conversations yet.", self)
        self.empty.setObjectName("Muted")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        layout.addWidget(self.empty)

        self.undo_bar = QFrame(self)
        self.undo_bar.setObjectName("Notice")
        undo_layout = QHBoxLayout(self.undo_bar)
        undo_layout.setContentsMargins(8, 4, 4, 4)
        self.undo_label = plain(QLabel("Chat deleted.", self.undo_bar))  # shows the title
        undo_button = QPushButton("Undo", self.undo_bar)
        undo_button.clicked.connect(self._on_undo)
        undo_layout.addWidget(self.undo_label, 1)
        undo_layout.addWidget(undo_button)
        self.undo_bar.hide()
        layout.addWidget(self.undo_bar)
        self._undo_timer = QTimer(self)
        self._undo_timer.setSingleShot(True)
        self._undo_timer.setInterval(UNDO_MS)
        self._undo_timer.timeout.connect(self.undo_bar.hide)

    # ---- content ---------------------------------------------------------------------------------------------
    @property
    def searching(self) -> bool:
        return bool(self.search.text().strip())

    def set_conversations(self, conversations: Sequence[Conversation], current_id: int) -> None:
        """Show the chats, pinned first, then grouped by the day they were last used."""
        self._conversations = {c.id: c for c in conversations}
        self._current = current_id
        if self.searching:
            return
        self._filling = True
        self.list.clear()
        group = None
        for conversation in conversations:
            name = "Pinned" if conversation.pinned else date_group(conversation.updated_at)
            if name != group:
                group = name
                self._add_header(name)
            item = QListWidgetItem(conversation.title or "New chat")
            item.setData(IdRole, conversation.id)
            item.setToolTip(tooltip(conversation.title))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            self.list.addItem(item)
            if conversation.id == current_id:
                item.setSelected(True)
                self.list.setCurrentItem(item)
        self._filling = False
        self.empty.setVisible(not conversations)

    def _add_header(self, text: str) -> None:
        header = QListWidgetItem(text)
        header.setFlags(Qt.ItemFlag.NoItemFlags)
        font = QFont(self.list.font())
        font.setPointSizeF(font.pointSizeF() - 1)
        font.setWeight(QFont.Weight.DemiBold)
        header.setFont(font)
        header.setForeground(self.palette().placeholderText())
        self.list.addItem(header)

    def set_current(self, conversation_id: int) -> None:
        self._current = conversation_id
        self._filling = True
        for row in range(self.list.count()):
            item = self.list.item(row)
            selected = item.data(IdRole) == conversation_id and conversation_id != 0
            item.setSelected(selected)
            if selected:
                self.list.setCurrentItem(item)
        self._filling = False

    def set_search_results(self, hits: Sequence[SearchHit]) -> None:
        self._filling = True
        self.list.clear()
        self._add_header(f"{len(hits)} result{'s' if len(hits) != 1 else ''}")
        for hit in hits:
            item = QListWidgetItem()
            item.setData(IdRole, hit.conversation_id)
            item.setData(MessageRole, hit.message_id)
            label = QLabel(f"<b>{html.escape(hit.conversation_title or 'New chat')}</b><br>{snippet_html(hit.snippet)}")
            label.setTextFormat(Qt.TextFormat.RichText)  # every piece of text in it is escaped
            label.setWordWrap(True)
            label.setContentsMargins(8, 4, 8, 4)
            label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents, True)
            item.setSizeHint(label.sizeHint().expandedTo(label.minimumSizeHint()))
            self.list.addItem(item)
            self.list.setItemWidget(item, label)
        self._filling = False
        self.empty.hide()

    def focus_search(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

    def item_for(self, conversation_id: int) -> QListWidgetItem | None:
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item.data(IdRole) == conversation_id:
                return item
        return None

    def show_undo(self, conversation_id: int, title: str) -> None:
        self._deleted_id = conversation_id
        self.undo_label.setText(f"Deleted “{title[:40]}”.")
        self.undo_bar.show()
        self._undo_timer.start()

    # ---- events ---------------------------------------------------------------------------------------------
    def _on_search_text(self, _text: str) -> None:
        self._search_timer.start()

    def _emit_search(self) -> None:
        text = self.search.text().strip()
        self.search_changed.emit(text)
        if not text:
            self.set_conversations(list(self._conversations.values()), self._current)

    def _on_item_clicked(self, item: QListWidgetItem) -> None:
        conversation_id = item.data(IdRole)
        if not conversation_id:
            return
        message_id = item.data(MessageRole)
        if message_id:
            self.hit_selected.emit(int(conversation_id), int(message_id))
        else:
            self.conversation_selected.emit(int(conversation_id))

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        if self._filling:
            return
        conversation_id = item.data(IdRole)
        conversation = self._conversations.get(conversation_id)
        title = item.text().strip()
        if conversation is not None and title and title != conversation.title:
            self.rename_requested.emit(int(conversation_id), title)
        elif conversation is not None and not title:
            self._filling = True
            item.setText(conversation.title)
            self._filling = False

    def _on_context_menu(self, pos: QPoint) -> None:
        item = self.list.itemAt(pos)
        if item is None or not item.data(IdRole) or item.data(MessageRole):
            return
        conversation = self._conversations.get(item.data(IdRole))
        if conversation is None:
            return
        menu = QMenu(self)
        menu.addAction("Rename", lambda: self.list.editItem(item))
        menu.addAction("Unpin" if conversation.pinned else "Pin", lambda: self._pin(conversation))
        menu.addSeparator()
        menu.addAction("Delete", lambda: self.delete_requested.emit(conversation.id))
        menu.exec(self.list.viewport().mapToGlobal(pos))

    def _pin(self, conversation: Conversation) -> None:
        self.pin_requested.emit(conversation.id, not conversation.pinned)

    def _on_undo(self) -> None:
        self.undo_bar.hide()
        if self._deleted_id:
            self.restore_requested.emit(self._deleted_id)
            self._deleted_id = 0
