"""Dropping documents on the chat: an event filter for the conversation view and the message box that takes
drops of local files Hearth can index (PDF, Word, Markdown, HTML, text, code) and hands their paths on.
Other drops (a .gguf on the window, text into the message box) go where they went before."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Signal
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QWidget

from app.core.documents.extract import kind_of


def document_paths(urls: Sequence[object]) -> list[str]:
    """The local files among dropped URLs that Hearth can index."""
    paths = []
    for url in urls:
        local = url.toLocalFile() if hasattr(url, "toLocalFile") else ""
        if local and kind_of(Path(local)) is not None and Path(local).is_file():
            paths.append(local)
    return paths


class DocumentDropFilter(QObject):
    """Signals: files_dropped(list[str]): documents dropped on one of the watched widgets."""

    files_dropped = Signal(list)

    def watch(self, widget: QWidget) -> None:
        widget.setAcceptDrops(True)
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind in (QEvent.Type.DragEnter, QEvent.Type.DragMove) and isinstance(
            event, (QDragEnterEvent, QDragMoveEvent)
        ):
            if document_paths(event.mimeData().urls()):
                event.acceptProposedAction()
                return True
        elif kind == QEvent.Type.Drop and isinstance(event, QDropEvent):
            paths = document_paths(event.mimeData().urls())
            if paths:
                event.acceptProposedAction()
                self.files_dropped.emit(paths)
                return True
        return super().eventFilter(watched, event)
