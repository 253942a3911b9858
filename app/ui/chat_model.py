"""The messages of the open conversation as a Qt list model; streamed text is applied once per frame."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QPersistentModelIndex, Qt, QTimer

from app.core.messages import ChatMessage, ToolCall
from app.core.structured import JSON_ANY, JSON_SCHEMA, format_json_reply
from app.ui import tool_blocks

if TYPE_CHECKING:
    from app.core.store import StoredMessage

ItemRole = Qt.ItemDataRole.UserRole + 1
FRAME_MS = 33  # streamed text reaches the screen at most this often (about 30 frames per second)
_keys = itertools.count(1)


@dataclass
class MessageItem:
    """One row: what the delegate paints. `key` and `revision` identify the rendered text for caching."""

    role: str
    content: str
    message_id: int | None = None
    parent_id: int | None = None
    sibling_index: int = 1
    sibling_count: int = 1
    streaming: bool = False
    complete: bool = True
    model: str = ""
    template: str = ""
    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    gen_tps: float | None = None
    ttft_ms: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    reply_format: str = ""  # a reply's format kind ("json", "json_schema"; "" or "text": free text)
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn's calls (run, or answered "denied"/"not run")
    tool_call_id: str | None = None  # a tool result: the call it answers
    tool_name: str | None = None
    tool_outcome: str = ""  # a tool result: ran | failed | denied | stopped
    notes: tuple[str, ...] = ()  # calls the model wrote that were not run, and why
    status: str = ""  # while a reply with tools is busy: "Calling a tool…", "Running get_time…"
    expanded: bool = False  # a tool result's block is open
    sources: tuple[dict[str, Any], ...] = ()  # a reply's document sources (meta["sources"]): what [n] cites
    key: int = field(default_factory=lambda: next(_keys))
    revision: int = 0

    @classmethod
    def from_message(cls, message: StoredMessage) -> MessageItem:
        chat = message.to_chat()
        notes = message.meta.get("tool_notes")
        return cls(
            role=message.role,
            content=message.content,
            message_id=message.id,
            parent_id=message.parent_id,
            sibling_index=message.sibling_index,
            sibling_count=message.sibling_count,
            complete=message.complete,
            model=message.model,
            template=message.template,
            prompt_tokens=message.prompt_tokens,
            generated_tokens=message.generated_tokens,
            gen_tps=message.gen_tps,
            ttft_ms=message.ttft_ms,
            finish_reason=message.finish_reason,
            reply_format=_format_kind(message.meta),
            tool_calls=chat.tool_calls,
            tool_call_id=chat.tool_call_id,
            tool_name=chat.name,
            tool_outcome=str(message.meta.get("outcome") or ""),
            notes=tuple(str(n) for n in notes) if isinstance(notes, list) else (),
            sources=tuple(s for s in message.meta.get("sources") or () if isinstance(s, dict)),
        )

    def to_chat(self) -> ChatMessage:
        """The message as the model sees it in the next reply's prompt."""
        return ChatMessage(self.role, self.content, self.tool_calls, self.tool_call_id, self.tool_name)

    def display_text(self) -> str:
        """The Markdown the chat renders: a finished JSON reply indented in a code block (with its Copy button;
        the content stays exactly as the model sent it); tool calls, results and notes as blocks."""
        if self.role == "assistant" and not self.streaming and self.reply_format in (JSON_ANY, JSON_SCHEMA):
            formatted = format_json_reply(self.content)
            if formatted is not None and not self.tool_calls:
                return f"```json\n{formatted}\n```"
        return tool_blocks.display_text(self)

    def stats_line(self) -> str:
        """'128 tokens · 23.4 tok/s · 310 ms to first token' (+ how it ended when not naturally)."""
        if self.role != "assistant":
            return ""
        if self.streaming:
            return "Generating…"
        parts = []
        if self.generated_tokens is not None:
            parts.append(f"{self.generated_tokens} tokens")
        if self.gen_tps:
            parts.append(f"{self.gen_tps:.1f} tok/s")
        if self.ttft_ms is not None:
            parts.append(
                f"{self.ttft_ms:.0f} ms to first token"
                if self.ttft_ms < 1000
                else f"{self.ttft_ms / 1000:.1f} s to first token"
            )
        ending = {"cancelled": "stopped", "length": "cut at the length limit", "error": "failed"}
        if self.finish_reason in ending:
            parts.append(ending[self.finish_reason])
        elif not self.complete:
            parts.append("unfinished (Hearth was closed while it was written)")
        return " · ".join(parts)


# The fields of a MessageItem that come from its stored message (the rest is live state: streaming, error,
# expanded ...): what a row takes from the history once a reply or a tool turn is stored.
STORED_FIELDS = (
    "content",
    "message_id",
    "parent_id",
    "sibling_index",
    "sibling_count",
    "complete",
    "model",
    "template",
    "prompt_tokens",
    "generated_tokens",
    "gen_tps",
    "ttft_ms",
    "finish_reason",
    "reply_format",
    "sources",
    "tool_calls",
    "tool_call_id",
    "tool_name",
    "tool_outcome",
    "notes",
)


class ChatModel(QAbstractListModel):
    """Rows of MessageItem. Only the GUI thread touches it (workers send text through signals)."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._items: list[MessageItem] = []
        self._pending: dict[int, list[str]] = {}  # row key -> text not yet shown
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(FRAME_MS)
        self._flush_timer.timeout.connect(self.flush)

    # ---- Qt model API ---------------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._items):
            return None
        item = self._items[index.row()]
        if role == ItemRole:
            return item
        if role == Qt.ItemDataRole.DisplayRole:
            return item.content
        return None

    # ---- edits ------------------------------------------------------------------------------------------
    @property
    def items(self) -> list[MessageItem]:
        return list(self._items)

    def item(self, row: int) -> MessageItem:
        return self._items[row]

    def reset(self, items: list[MessageItem]) -> None:
        self.beginResetModel()
        self._items = list(items)
        self._pending.clear()
        self.endResetModel()

    def append(self, item: MessageItem) -> int:
        row = len(self._items)
        self.beginInsertRows(QModelIndex(), row, row)
        self._items.append(item)
        self.endInsertRows()
        return row

    def truncate(self, row: int) -> None:
        """Remove rows from `row` to the end (a regenerated or edited branch replaces them)."""
        if row >= len(self._items):
            return
        self.beginRemoveRows(QModelIndex(), row, len(self._items) - 1)
        for item in self._items[row:]:
            self._pending.pop(item.key, None)
        del self._items[row:]
        self.endRemoveRows()

    def update(self, row: int, **changes: Any) -> None:
        """Replace fields of a row (content changes bump the revision so the delegate re-renders)."""
        old = self._items[row]
        if "content" in changes:
            self._pending.pop(old.key, None)
            changes.setdefault("revision", old.revision + 1)
        self._items[row] = replace(old, **changes)
        index = self.index(row)
        self.dataChanged.emit(index, index)

    def row_of(self, message_id: int | None) -> int:
        for row, item in enumerate(self._items):
            if item.message_id == message_id and message_id is not None:
                return row
        return -1

    def row_of_key(self, key: int) -> int:
        for row in range(len(self._items) - 1, -1, -1):  # the streaming row is near the end
            if self._items[row].key == key:
                return row
        return -1

    # ---- streaming ----------------------------------------------------------------------------------------
    def append_text(self, key: int, text: str) -> None:
        """Queue streamed text for the row with this key; shown at the next frame (one repaint per frame)."""
        self._pending.setdefault(key, []).append(text)
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def flush(self) -> None:
        """Apply queued text now: one dataChanged per streaming row, whatever the number of chunks."""
        pending, self._pending = self._pending, {}
        for key, parts in pending.items():
            row = self.row_of_key(key)
            if row < 0:
                continue
            item = self._items[row]
            item.content += "".join(parts)
            item.revision += 1
            index = self.index(row)
            self.dataChanged.emit(index, index)


def _format_kind(meta: dict[str, Any]) -> str:
    """The reply format a stored reply was asked for (its meta's "reply_format" kind), or ""."""
    reply_format = meta.get("reply_format") if isinstance(meta, dict) else None
    kind = reply_format.get("kind") if isinstance(reply_format, dict) else None
    return kind if isinstance(kind, str) else ""
