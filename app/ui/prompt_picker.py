"""The composer's `/` prompt picker: type `/` to list saved prompts, pick one with the keyboard, then fill its
{{variables}} in place (highlighted fields; Tab and Shift+Tab move between them, Esc leaves them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QModelIndex, QObject, QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QKeyEvent, QPainter, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QFrame,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from app.core.placeholders import placeholders
from app.core.prompt_library import Prompt, PromptLibrary
from app.ui import theme
from app.ui.untrusted import plain, tooltip

MAX_ROWS = 7
PromptRole = Qt.ItemDataRole.UserRole + 1


@dataclass
class Field:
    """One variable's place in the editor: two cursors that follow edits around it.

    The start cursor keeps its position when text is typed exactly there (so typing over a selected field
    stays inside it); the end cursor moves with such text (so typing at the end extends the field).
    """

    name: str
    start: QTextCursor
    end: QTextCursor
    initial: str  # the text put there: the default value, or "{{name}}" when there is none

    def span(self) -> QTextCursor:
        """A fresh cursor selecting the field (a copy of `start` would share its keep-position setting, and
        as the editor's own cursor would leave each typed character behind it)."""
        cursor = QTextCursor(self.start.document())
        cursor.setPosition(self.start.position())
        cursor.setPosition(self.end.position(), QTextCursor.MoveMode.KeepAnchor)
        return cursor

    @property
    def text(self) -> str:
        return self.span().selectedText()

    @property
    def filled(self) -> bool:
        text = self.text
        return bool(text.strip()) and text != f"{{{{{self.name}}}}}"

    def select(self, editor: QPlainTextEdit) -> None:
        editor.setTextCursor(self.span())

    def contains(self, position: int) -> bool:
        return self.start.position() <= position <= self.end.position()


class _PromptDelegate(QStyledItemDelegate):
    """A row: the prompt's name, then its description in the muted colour."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        prompt = index.data(PromptRole)
        if prompt is None:
            super().paint(painter, option, index)
            return
        t = theme.current()
        painter.save()
        rect = option.rect.adjusted(2, 1, -2, -1)
        if option.state & QStyle.StateFlag.State_Selected:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(t.selection))
            painter.drawRoundedRect(rect, 6, 6)
        text_rect = rect.adjusted(8, 0, -8, 0)
        bold = QFont(option.font)
        bold.setWeight(QFont.Weight.DemiBold)
        painter.setFont(bold)
        painter.setPen(QColor(t.text))
        name_width = QFontMetrics(bold).horizontalAdvance(prompt.name)
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, prompt.name)
        painter.setFont(option.font)
        painter.setPen(QColor(t.muted))
        rest = text_rect.adjusted(name_width + 12, 0, 0, 0)
        detail = prompt.description or prompt.text.replace("\n", " ")
        elided = QFontMetrics(option.font).elidedText(detail, Qt.TextElideMode.ElideRight, rest.width())
        painter.drawText(rest, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, elided)
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        return QSize(option.rect.width(), QFontMetrics(option.font).height() + 12)


class PickerPopup(QFrame):
    """The floating list above the composer (and, while fields are filled in, a one-line guide)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("PromptPicker")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        self.title = plain(QLabel(self))
        self.title.setObjectName("SectionTitle")
        layout.addWidget(self.title)
        self.list = QListWidget(self)
        self.list.setObjectName("PromptPickerList")
        self.list.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # the composer keeps the keyboard
        self.list.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setUniformItemSizes(True)
        self.list.setItemDelegate(_PromptDelegate(self.list))
        layout.addWidget(self.list)
        self.guide = plain(QLabel(self))  # a prompt's own text and variables
        self.guide.setObjectName("Muted")
        self.guide.setWordWrap(True)
        layout.addWidget(self.guide)
        self.apply_style()

    def apply_style(self) -> None:
        t = theme.current()
        self.setStyleSheet(
            f"QFrame#PromptPicker {{ background: {t.base}; border: 1px solid {t.border}; border-radius: 10px; }}"
            f"QListWidget#PromptPickerList {{ border: none; background: {t.base}; outline: none; }}"
            f"QListWidget#PromptPickerList::item {{ padding: 5px 6px; border-radius: 6px; }}"
            f"QListWidget#PromptPickerList::item:selected {{ background: {t.selection}; color: {t.text}; }}"
        )


class PromptPicker(QObject):
    """Adds the `/` picker and in-place fields to a plain-text editor (the composer's), without subclassing it.

    It watches the editor's key presses (an event filter, which runs before the editor's own Enter-to-send):
    while the list is open, Up/Down move, Enter or Tab choose, Esc closes; while fields are being filled,
    Tab / Shift+Tab move between them, Esc leaves them, and Enter sends only once every field has a value
    (otherwise it jumps to the first empty one). The library is read when the list opens.

    Signals:
        prompt_inserted(object): the Prompt whose text was put in the editor.
        fields_done(): every field was filled, or the user left them (Esc) or cleared the editor.
        opened() / closed(): the list appeared / went away.
    """

    prompt_inserted = Signal(object)
    fields_done = Signal()
    opened = Signal()
    closed = Signal()

    def __init__(self, editor: QPlainTextEdit, library: PromptLibrary | Callable[[], list[Prompt]]) -> None:
        super().__init__(editor)
        self.editor = editor
        self._all = library.all if isinstance(library, PromptLibrary) else library
        self._prompts: list[Prompt] = []
        self._fields: list[Field] = []
        self._prompt: Prompt | None = None
        self._mirroring = False
        self._rows = 0
        self.popup = PickerPopup(editor.window())
        self.popup.hide()
        self.popup.list.itemClicked.connect(self._on_item_clicked)
        editor.installEventFilter(self)
        editor.textChanged.connect(self._on_text_changed)
        editor.cursorPositionChanged.connect(self._on_cursor_moved)

    # ---- state ------------------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.popup.isVisible() and self._prompt is None

    @property
    def fields(self) -> list[Field]:
        return list(self._fields)

    def shown_prompts(self) -> list[Prompt]:
        return [self.popup.list.item(i).data(PromptRole) for i in range(self.popup.list.count())]

    def current_prompt(self) -> Prompt | None:
        item = self.popup.list.currentItem()
        return item.data(PromptRole) if item is not None else None

    def unfilled(self) -> list[str]:
        """Names of the fields still without a value (in order, each name once)."""
        return list(dict.fromkeys(f.name for f in self._fields if not f.filled))

    # ---- the list ---------------------------------------------------------------------------------------------
    def _query(self) -> str | None:
        """What follows `/` when the whole editor holds just `/word` (None: the picker does not apply)."""
        text = self.editor.toPlainText()
        if not text.startswith("/") or any(c.isspace() for c in text):
            return None
        return text[1:]

    def _on_text_changed(self) -> None:
        if self._fields:
            self._after_field_edit()
            return
        query = self._query()
        if query is None:
            self.close()
            return
        if not self.popup.isVisible():
            self._prompts = self._all()
        self._fill_list(query)

    def _fill_list(self, query: str) -> None:
        scored = sorted(
            ((p.matches(query), index, p) for index, p in enumerate(self._prompts)), key=lambda t: (-t[0], t[1])
        )
        matches = [p for score, _, p in scored if score > 0]
        lst = self.popup.list
        lst.clear()
        muted = QColor(theme.current().muted)
        for prompt in matches:
            item = QListWidgetItem(prompt.name)
            item.setData(PromptRole, prompt)
            item.setToolTip(tooltip(prompt.text))
            lst.addItem(item)
        if not matches:
            item = QListWidgetItem(f"No saved prompt matches “{query}”. Enter sends the text as it is.")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            item.setForeground(muted)
            lst.addItem(item)
        else:
            lst.setCurrentRow(0)
        self.popup.title.setText("Prompts")
        self.popup.guide.setText("↑↓ choose · Enter or Tab insert · Esc close")
        self._show_popup(min(max(len(matches), 1), MAX_ROWS))

    def _show_popup(self, rows: int) -> None:
        """Show the popup just above the editor's frame (below it when there is no room), `rows` list rows
        high (0: the guide only)."""
        self._rows = rows
        host = self.editor.window()
        if self.popup.parent() is not host:
            self.popup.setParent(host)
        widget: QWidget | None = self.editor
        while widget is not None:  # follow the composer as it grows and the window as it resizes
            widget.installEventFilter(self)  # (installing twice changes nothing)
            widget = widget.parentWidget()
        self.popup.apply_style()
        self._place()
        self.popup.show()
        self.popup.raise_()
        if self._prompt is None:
            self.opened.emit()

    def _place(self) -> None:
        rows = self._rows
        host = self.editor.window()
        lst = self.popup.list
        lst.setVisible(rows > 0)
        if rows:
            lst.setFixedHeight(rows * max(lst.sizeHintForRow(0), 20) + 2 * lst.frameWidth() + 4)
        frame = self.editor.parentWidget() or self.editor
        top_left = frame.mapTo(host, QPoint(0, 0))
        width = min(max(frame.width(), 320), 560)
        self.popup.setFixedWidth(width)
        height = self.popup.layout().sizeHint().height()
        y = top_left.y() - height - 6
        if y < 0:  # no room above: open below the editor instead
            y = top_left.y() + frame.height() + 6
        self.popup.setGeometry(QRect(QPoint(top_left.x(), y), QSize(width, height)))

    def close(self) -> None:
        """Close the list (the editor's text is left as it is)."""
        if self.popup.isVisible() and self._prompt is None:
            self.popup.hide()
            self.closed.emit()

    def _move(self, step: int) -> None:
        lst = self.popup.list
        if lst.count() and lst.item(0).data(PromptRole) is not None:
            lst.setCurrentRow((lst.currentRow() + step) % lst.count())

    def _on_item_clicked(self, item: QListWidgetItem) -> None:
        prompt = item.data(PromptRole)
        if prompt is not None:
            self.choose(prompt)
            self.editor.setFocus()

    # ---- inserting and fields ---------------------------------------------------------------------------------
    def choose(self, prompt: Prompt) -> None:
        """Replace `/query` with the prompt's text; its variables become fields (defaults pre-filled)."""
        self.popup.hide()
        self.closed.emit()
        text, spans = _expanded(prompt)
        self._prompt = prompt
        self._fields = []
        self._mirroring = True
        self.editor.setPlainText(text)
        self._mirroring = False
        document = self.editor.document()
        for name, start, end, initial in spans:
            first, last = QTextCursor(document), QTextCursor(document)
            first.setPosition(start)
            last.setPosition(end)
            first.setKeepPositionOnInsert(True)
            self._fields.append(Field(name, first, last, initial))
        self.prompt_inserted.emit(prompt)
        if not self._fields:
            self._finish()
            self.editor.moveCursor(QTextCursor.MoveOperation.End)
            return
        self._show_guide()
        target = next((f for f in self._fields if not f.filled), self._fields[0])
        target.select(self.editor)
        self._paint()

    def next_field(self, step: int = 1) -> None:
        """Select the next (step 1) or previous (-1) field, wrapping around."""
        if not self._fields:
            return
        position = self.editor.textCursor().selectionStart()
        index = next((i for i, f in enumerate(self._fields) if f.contains(position)), None)
        if index is None:
            index = -1 if step > 0 else 0
            for i, f in enumerate(self._fields):
                if f.start.position() < position:
                    index = i
        self._fields[(index + step) % len(self._fields)].select(self.editor)

    def leave_fields(self) -> None:
        """Stop treating the variables as fields (the text stays as it is)."""
        if self._fields or self._prompt is not None:
            self._finish()

    def _finish(self) -> None:
        self._fields = []
        self._prompt = None
        self.popup.hide()
        self.editor.setExtraSelections([])
        self.fields_done.emit()

    def _after_field_edit(self) -> None:
        if self._mirroring:
            return
        if not self.editor.toPlainText():
            self._finish()
            return
        self._mirror()
        self._paint()
        self._show_guide()

    def _mirror(self) -> None:
        """A variable used more than once: typing in one of its fields updates the others."""
        position = self.editor.textCursor().position()
        current = next((f for f in self._fields if f.contains(position)), None)
        if current is None:
            return
        value = current.text
        others = [f for f in self._fields if f.name == current.name and f is not current and f.text != value]
        if not others:
            return
        self._mirroring = True
        try:
            for other in others:
                other.span().insertText(value)  # other's own cursors follow (start keeps its place, end moves on)
        finally:
            self._mirroring = False

    def _on_cursor_moved(self) -> None:
        if self._fields:
            self._paint()

    def _paint(self) -> None:
        t = theme.current()
        position = self.editor.textCursor().position()
        selections = []
        for f in self._fields:
            fmt = QTextCharFormat()
            colour = QColor(t.accent if f.contains(position) else t.selection)
            colour.setAlpha(90 if f.contains(position) else 150)
            fmt.setBackground(colour)
            if not f.filled:
                fmt.setForeground(QColor(t.muted))
            selection = QTextEdit.ExtraSelection()
            selection.format = fmt
            selection.cursor = f.span()
            selections.append(selection)
        self.editor.setExtraSelections(selections)

    def _show_guide(self) -> None:
        if self._prompt is None:
            return
        waiting = self.unfilled()
        self.popup.title.setText(self._prompt.name)
        if waiting:
            names = ", ".join(waiting)
            self.popup.guide.setText(f"Fill in: {names}  ·  Tab next field · Shift+Tab back · Esc done")
        else:
            self.popup.guide.setText("All fields filled: Enter sends · Tab moves between fields · Esc done")
        self._show_popup(0)

    # ---- keys -------------------------------------------------------------------------------------------------
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.editor and event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent):
            return self._key(event)
        if watched is self.editor and event.type() == QEvent.Type.FocusOut and self.is_open:
            self.close()
        if event.type() in (QEvent.Type.Resize, QEvent.Type.Move) and self.popup.isVisible():
            self._place()  # the composer grew with its text, or the window was resized
        return False

    def _key(self, event: QKeyEvent) -> bool:
        key, modifiers = event.key(), event.modifiers()
        shift = bool(modifiers & Qt.KeyboardModifier.ShiftModifier)
        if self.is_open:
            if key in (Qt.Key.Key_Down, Qt.Key.Key_Up):
                self._move(1 if key == Qt.Key.Key_Down else -1)
                return True
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Tab) and not shift:
                prompt = self.current_prompt()
                if prompt is None:
                    self.close()
                    return key == Qt.Key.Key_Tab
                self.choose(prompt)
                return True
            if key == Qt.Key.Key_Escape:
                self.close()
                return True
            return False
        if not self._fields:
            return False
        if key == Qt.Key.Key_Tab or key == Qt.Key.Key_Backtab:
            self.next_field(-1 if shift or key == Qt.Key.Key_Backtab else 1)
            return True
        if key == Qt.Key.Key_Escape:
            self.leave_fields()
            return True
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not shift:
            empty = next((f for f in self._fields if not f.filled), None)
            if empty is not None:
                empty.select(self.editor)
                self.popup.guide.setText(f"Fill in {empty.name} first (or Esc to send the text as it is).")
                return True
            self._finish()
            return False  # the editor's own Enter sends
        return False


def _expanded(prompt: Prompt) -> tuple[str, list[tuple[str, int, int, str]]]:
    """The prompt's text with each {{variable}} replaced by its default (or left as {{variable}} when it has
    none), and where each field ended up: (name, start, end, initial text)."""
    text = prompt.text
    parts: list[str] = []
    spans: list[tuple[str, int, int, str]] = []
    position = length = 0
    for placeholder in placeholders(text):
        before = text[position : placeholder.start]
        parts.append(before)
        length += len(before)
        initial = prompt.defaults.get(placeholder.name) or f"{{{{{placeholder.name}}}}}"
        parts.append(initial)
        spans.append((placeholder.name, length, length + len(initial), initial))
        length += len(initial)
        position = placeholder.end
    parts.append(text[position:])
    return "".join(parts), spans


def install_prompt_picker(composer: QWidget, library: PromptLibrary) -> PromptPicker:
    """Give a Composer its `/` picker (the composer's `editor` is the plain-text box)."""
    return PromptPicker(composer.editor, library)  # type: ignore[attr-defined]
