"""The Assistants dialog: the built-in and your own assistants; new, duplicate, edit, delete, import, export,
and "New chat with this assistant"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.core.assistants import Assistant, AssistantLibrary
from app.core.errors import HearthError
from app.ui import theme
from app.ui.assistant_editor import AssistantEditor
from app.ui.untrusted import plain, tooltip

if TYPE_CHECKING:
    from app.ui.workers import TaskRunner

IdRole = Qt.ItemDataRole.UserRole + 1


class AssistantDialog(QDialog):
    """Manages the assistants of an AssistantLibrary (small JSON files: read and written in place).

    Built-ins are shown read-only, with Duplicate to make an editable copy. Changes are saved with Save;
    leaving an assistant with unsaved changes asks first.

    Signals:
        assistants_changed(): an assistant was saved, added or deleted (menus listing them should refresh).
        chat_requested(str): the user asked for a new chat with the assistant of this id.
    """

    assistants_changed = Signal()
    chat_requested = Signal(str)

    def __init__(
        self, library: AssistantLibrary, parent: QWidget | None = None, tasks: TaskRunner | None = None
    ) -> None:
        super().__init__(parent)
        self._tasks = tasks  # checks a reply schema off the GUI thread
        self.setWindowTitle("Assistants")
        self.setMinimumSize(860, 600)
        self.library = library
        self._dirty = False
        self._shown_id = ""
        layout = QVBoxLayout(self)
        splitter = QSplitter(self)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self._list_side())
        splitter.addWidget(self._edit_side())
        splitter.setSizes([240, 620])
        layout.addWidget(splitter, 1)
        self.refresh()

    def _list_side(self) -> QWidget:
        side = QWidget(self)
        layout = QVBoxLayout(side)
        layout.setContentsMargins(0, 0, 6, 0)
        self.list = QListWidget(side)
        self.list.setObjectName("AssistantList")
        t = theme.current()
        self.list.setStyleSheet(
            f"QListWidget#AssistantList {{ border: 1px solid {t.border}; border-radius: 8px; background: {t.base};"
            f" outline: none; padding: 4px; }}"
            f"QListWidget#AssistantList::item {{ padding: 6px 8px; border-radius: 6px; }}"
            f"QListWidget#AssistantList::item:selected {{ background: {t.selection}; color: {t.text}; }}"
            f"QListWidget#AssistantList::item:hover {{ background: {t.hover}; }}"
        )
        self.list.currentItemChanged.connect(self._on_selected)
        layout.addWidget(self.list, 1)
        row = QHBoxLayout()
        self.new_button = QPushButton("New", side)
        self.new_button.clicked.connect(self._on_new)
        self.duplicate_button = QPushButton("Duplicate", side)
        self.duplicate_button.clicked.connect(self._on_duplicate)
        self.delete_button = QPushButton("Delete…", side)
        self.delete_button.clicked.connect(self._on_delete)
        for button in (self.new_button, self.duplicate_button, self.delete_button):
            row.addWidget(button)
        layout.addLayout(row)
        row = QHBoxLayout()
        self.import_button = QPushButton("Import…", side)
        self.import_button.clicked.connect(self._on_import)
        self.export_button = QPushButton("Export…", side)
        self.export_button.clicked.connect(self._on_export)
        row.addWidget(self.import_button)
        row.addWidget(self.export_button)
        layout.addLayout(row)
        return side

    def _edit_side(self) -> QWidget:
        side = QWidget(self)
        layout = QVBoxLayout(side)
        layout.setContentsMargins(6, 0, 0, 0)
        self.banner = QFrame(side)
        self.banner.setObjectName("Notice")
        banner_layout = QHBoxLayout(self.banner)
        banner_layout.setContentsMargins(10, 6, 6, 6)
        self.banner_label = QLabel("Built-in assistants cannot be changed: Duplicate makes one you can edit.")
        self.banner_label.setWordWrap(True)
        banner_layout.addWidget(self.banner_label, 1)
        layout.addWidget(self.banner)
        self.editor = AssistantEditor(side, self._tasks)
        self.editor.edited.connect(self._on_edited)
        layout.addWidget(self.editor, 1)
        self.problems = plain(QLabel(side))  # an imported assistant's own text
        self.problems.setObjectName("Muted")
        self.problems.setWordWrap(True)
        self.problems.hide()
        layout.addWidget(self.problems)
        self.error = plain(QLabel(side))
        self.error.setObjectName("Error")
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()
        layout.addWidget(self.error)
        row = QHBoxLayout()
        self.chat_button = QPushButton("New chat with this assistant", side)
        self.chat_button.clicked.connect(self._on_chat)
        row.addWidget(self.chat_button)
        row.addStretch(1)
        self.revert_button = QPushButton("Revert", side)
        self.revert_button.clicked.connect(self._on_revert)
        self.save_button = QPushButton("Save", side)
        self.save_button.setObjectName("Primary")
        self.save_button.clicked.connect(self.save)
        close = QPushButton("Close", side)
        close.clicked.connect(self.close)
        for button in (self.revert_button, self.save_button, close):
            row.addWidget(button)
        layout.addLayout(row)
        return side

    # ---- state ------------------------------------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return self._dirty

    def current(self) -> Assistant | None:
        return self.library.find(self._shown_id) if self._shown_id else None

    def refresh(self, select: str | None = None) -> None:
        """Re-read the library and list it, keeping (or moving to) a selection."""
        wanted = select or self._shown_id
        everyone = self.library.all()
        self.list.blockSignals(True)
        self.list.clear()
        for assistant in everyone:
            item = QListWidgetItem(assistant.name + ("  · built-in" if assistant.builtin else ""))
            if assistant.builtin:
                item.setForeground(theme.current().color("muted"))
            item.setData(IdRole, assistant.id)
            item.setToolTip(tooltip(assistant.description))
            self.list.addItem(item)
        self.list.blockSignals(False)
        problems = self.library.problems
        self.problems.setText("\n".join(problems))
        self.problems.setVisible(bool(problems))
        ids = [a.id for a in everyone]
        self.list.setCurrentRow(ids.index(wanted) if wanted in ids else 0)
        if self.list.currentItem() is not None and self.list.currentItem().data(IdRole) != self._shown_id:
            self._show(self.list.currentItem().data(IdRole))
        elif self._shown_id not in ids and everyone:
            self._show(everyone[0].id)

    def select(self, name_or_id: str) -> None:
        assistant = self.library.get(name_or_id)
        for row in range(self.list.count()):
            if self.list.item(row).data(IdRole) == assistant.id:
                self.list.setCurrentRow(row)
                return

    def _show(self, assistant_id: str) -> None:
        assistant = self.library.find(assistant_id)
        if assistant is None:
            return
        self._shown_id = assistant.id
        self.editor.set_assistant(assistant)
        self.editor.set_read_only(assistant.builtin)
        self.banner.setVisible(assistant.builtin)
        self.delete_button.setEnabled(not assistant.builtin)
        self._set_dirty(False)
        self._show_error("")

    def _set_dirty(self, dirty: bool) -> None:
        self._dirty = dirty
        self.save_button.setEnabled(dirty)
        self.revert_button.setEnabled(dirty)

    def _show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))

    # ---- actions ----------------------------------------------------------------------------------------------
    def save(self) -> bool:
        """Save the shown assistant; False (with the reason shown) when it is invalid."""
        try:
            saved = self.library.save(self.editor.assistant())
        except HearthError as exc:
            self._show_error(f"Not saved: {exc}")
            return False
        self._shown_id = saved.id
        self._set_dirty(False)
        self.refresh(select=saved.id)
        self._show_error("")
        self.assistants_changed.emit()
        return True

    def _on_edited(self) -> None:
        current = self.current()
        if current is not None and not current.builtin:
            self._set_dirty(True)

    def _on_selected(self, item: QListWidgetItem | None, previous: QListWidgetItem | None) -> None:
        if item is None:
            return
        if self._dirty and not self._leave_unsaved():
            self.list.blockSignals(True)
            self.list.setCurrentItem(previous)
            self.list.blockSignals(False)
            return
        self._show(item.data(IdRole))

    def _leave_unsaved(self) -> bool:
        """Save, discard or stay when leaving an assistant with unsaved changes; True to go on."""
        answer = self.ask(
            "Unsaved changes", f"Save your changes to {self.editor.name.text() or 'this assistant'}?", discard=True
        )
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        return answer == QMessageBox.StandardButton.Discard

    def _on_revert(self) -> None:
        if self._shown_id:
            self._show(self._shown_id)

    def _on_new(self) -> None:
        if self._dirty and not self._leave_unsaved():
            return
        self._act(lambda: self.library.save(Assistant(id="", name=self.library.unique_name("New assistant"))))

    def _on_duplicate(self) -> None:
        current = self.current()
        if current is not None and (not self._dirty or self._leave_unsaved()):
            self._act(lambda: self.library.duplicate(current.id))

    def _on_delete(self) -> None:
        current = self.current()
        if current is None or current.builtin:
            return
        answer = self.ask("Delete assistant", f"Delete {current.name}? Chats that used it keep their settings.")
        if answer == QMessageBox.StandardButton.Yes:
            self._dirty = False
            self._shown_id = ""
            self._act(lambda: self.library.delete(current.id), select_result=False)

    def _on_import(self) -> None:
        path = self.ask_import_path()
        if path:
            self._act(lambda: self.library.import_file(Path(path)))

    def _on_export(self) -> None:
        current = self.current()
        if current is None:
            return
        path = self.ask_export_path(f"{current.name}.json")
        if not path:
            return
        try:
            Path(path).write_text(self.library.export_text(current.id), encoding="utf-8")
        except OSError as exc:
            self._show_error(f"Could not export to {path}: {exc.strerror or exc}")
            return
        self._show_error("")

    def _on_chat(self) -> None:
        if self._dirty and not self.save():
            return
        if self._shown_id:
            self.chat_requested.emit(self._shown_id)

    def _act(self, action: Callable[[], object], select_result: bool = True) -> None:
        """Run a library action; show its error, or list the result (selected)."""
        try:
            result = action()
        except HearthError as exc:
            self._show_error(str(exc))
            return
        self._set_dirty(False)
        self.refresh(select=result.id if select_result and isinstance(result, Assistant) else None)
        self._show_error("")
        self.assistants_changed.emit()

    # ---- questions (replaced in tests) ------------------------------------------------------------------------
    def ask(self, title: str, text: str, discard: bool = False) -> QMessageBox.StandardButton:
        buttons = (
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel
            if discard
            else QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
        )
        box = QMessageBox(QMessageBox.Icon.Question, title, text, buttons, self)
        box.setTextFormat(Qt.TextFormat.PlainText)  # the question names an assistant, which may be imported
        return QMessageBox.StandardButton(box.exec())

    def ask_import_path(self) -> str:
        path, _ = QFileDialog.getOpenFileName(self, "Import an assistant", str(Path.home()), "JSON (*.json)")
        return path

    def ask_export_path(self, suggested: str) -> str:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export the assistant", str(Path.home() / suggested), "JSON (*.json)"
        )
        return path

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._dirty and not self._leave_unsaved():
            event.ignore()
            return
        super().closeEvent(event)
