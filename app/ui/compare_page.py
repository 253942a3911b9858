"""The Compare page: one prompt sent to two or three models side by side, each column streaming its answer with
its statistics, and "Use this answer" to continue the chat with the one you prefer (app.ui.compare_controller
connects it to the engine host)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.core.structured import format_json_reply
from app.ui.untrusted import plain, tooltip

if TYPE_CHECKING:
    from app.core.assistants import Assistant
    from app.ui.compare_runner import CompareResult

MAX_MODELS = 3
NONE = ""
STATES = {
    "waiting": "Waiting for its turn…",
    "loading": "Loading the model…",
    "generating": "Writing…",
    "stopped": "Stopped",
}


def stats_text(result: CompareResult) -> str:
    """'128 tokens · 23.4 tok/s · 310 ms to first token' once done; else the state or the error."""
    if result.state == "failed":
        return f"Failed: {result.error}"
    stats = result.stats
    if result.state not in ("done", "stopped") or stats is None:
        return STATES.get(result.state, "")
    ttft = f"{stats.ttft_ms:.0f} ms" if stats.ttft_ms < 1000 else f"{stats.ttft_ms / 1000:.1f} s"
    text = f"{stats.generated_tokens} tokens · {stats.gen_tps:.1f} tok/s · {ttft} to first token"
    if stats.finish_reason == "length":
        text += " · cut at the length limit"
    elif stats.finish_reason == "cancelled":
        text += " · stopped"
    return text


class AnswerColumn(QFrame):
    """One model's answer: its name, its stats, the text, and "Use this answer"."""

    def __init__(self, index: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.index = index
        self.setObjectName("Card")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(6)
        self.title = plain(QLabel(self))  # the model's own name
        self.title.setObjectName("SectionTitle")
        layout.addWidget(self.title)
        self.stats = plain(QLabel(self))
        self.stats.setObjectName("Muted")
        self.stats.setWordWrap(True)
        layout.addWidget(self.stats)
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setFrameShape(QFrame.Shape.NoFrame)
        layout.addWidget(self.text, 1)
        self.use_button = QPushButton("Use this answer", self)
        self.use_button.setToolTip("Continue the open chat with the prompt and this answer (a new chat if none)")
        self.use_button.setEnabled(False)
        layout.addWidget(self.use_button)

    def show_result(self, result: CompareResult, json_reply: bool) -> None:
        self.title.setText(result.loaded.info.display_name if result.loaded else result.name)
        self.title.setToolTip(tooltip(result.path))
        self.stats.setText(stats_text(result))
        self.stats.setObjectName("Error" if result.state == "failed" else "Muted")
        self.stats.style().unpolish(self.stats)
        self.stats.style().polish(self.stats)
        shown = result.text
        if json_reply and result.state == "done":
            shown = format_json_reply(result.text) or result.text
        if self.text.toPlainText() != shown:
            if shown.startswith(self.text.toPlainText()) and self.text.toPlainText():
                cursor = self.text.textCursor()
                cursor.movePosition(QTextCursor.MoveOperation.End)
                cursor.insertText(shown[len(self.text.toPlainText()) :])
            else:
                self.text.setPlainText(shown)
        self.use_button.setEnabled(result.state in ("done", "stopped") and bool(result.text.strip()))


class ComparePage(QWidget):
    """Signals:
    run_requested(): compare with the models, prompt and system prompt shown.
    stop_requested(): stop the comparison.
    use_requested(int): continue the chat with column i's answer.
    assistant_chosen(str): an assistant was picked ('' = none): the controller fills in its system prompt.
    """

    run_requested = Signal()
    stop_requested = Signal()
    use_requested = Signal(int)
    assistant_chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._running = False
        self._quiet = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(28, 18, 28, 14)
        layout.setSpacing(10)
        title = QLabel("Compare models", self)
        title.setObjectName("Heading")
        layout.addWidget(title)
        intro = QLabel(
            "One prompt, two or three models side by side. They load one after another (one model in memory at "
            "a time); the model you were chatting with is loaded back afterwards.",
            self,
        )
        intro.setObjectName("Muted")
        intro.setWordWrap(True)
        layout.addWidget(intro)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        models = QHBoxLayout()
        self.model_boxes: list[QComboBox] = []
        for index in range(MAX_MODELS):
            box = QComboBox(self)
            box.setObjectName(f"CompareModel{index}")
            box.setMinimumWidth(160)
            box.currentIndexChanged.connect(self._update)
            models.addWidget(box, 1)
            self.model_boxes.append(box)
        form.addRow("Models", models)
        self.assistant = QComboBox(self)
        self.assistant.currentIndexChanged.connect(self._on_assistant)
        form.addRow("Assistant", self.assistant)
        self.system_prompt = QPlainTextEdit(self)
        self.system_prompt.setPlaceholderText("Optional: a system prompt every model gets")
        self.system_prompt.setFixedHeight(56)
        form.addRow("System prompt", self.system_prompt)
        self.prompt = QPlainTextEdit(self)
        self.prompt.setPlaceholderText("The prompt every model answers")
        self.prompt.setFixedHeight(72)
        self.prompt.textChanged.connect(self._update)
        form.addRow("Prompt", self.prompt)
        layout.addLayout(form)
        row = QHBoxLayout()
        self.error = plain(QLabel(self))
        self.error.setObjectName("Error")
        self.error.setWordWrap(True)
        row.addWidget(self.error, 1)
        self.run_button = QPushButton("Compare", self)
        self.run_button.setObjectName("Primary")
        self.run_button.clicked.connect(self._on_run)
        row.addWidget(self.run_button)
        layout.addLayout(row)

        columns = QHBoxLayout()
        columns.setSpacing(10)
        self.columns: list[AnswerColumn] = []
        for index in range(MAX_MODELS):
            column = AnswerColumn(index, self)
            column.use_button.clicked.connect(lambda _checked=False, i=index: self.use_requested.emit(i))
            column.hide()
            columns.addWidget(column, 1)
            self.columns.append(column)
        layout.addLayout(columns, 1)
        self.set_models([])
        self.set_assistants([])

    # ---- filling in ---------------------------------------------------------------------------------------------
    def set_models(self, models: Sequence[tuple[str, str]]) -> None:
        """The library's chat models: (path, label). The choices are kept when still there."""
        for index, box in enumerate(self.model_boxes):
            chosen = box.currentData()
            box.blockSignals(True)
            box.clear()
            box.addItem("Choose a model" if index < 2 else "— (two models only)", NONE)
            for path, label in models:
                box.addItem(label, path)
                box.setItemData(box.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
            found = box.findData(chosen) if chosen else -1
            box.setCurrentIndex(max(0, found))
            box.blockSignals(False)
        self._update()

    def set_assistants(self, assistants: Sequence[Assistant]) -> None:
        self._quiet = True
        chosen = self.assistant.currentData()
        self.assistant.clear()
        self.assistant.addItem("None", NONE)
        for assistant in assistants:
            self.assistant.addItem(assistant.name, assistant.id)
        self.assistant.setCurrentIndex(max(0, self.assistant.findData(chosen)))
        self._quiet = False

    def select_models(self, paths: Sequence[str]) -> None:
        for box, path in zip(self.model_boxes, [*paths, *[NONE] * MAX_MODELS]):
            box.setCurrentIndex(max(0, box.findData(path)))

    def chosen_models(self) -> list[str]:
        return [str(box.currentData()) for box in self.model_boxes if box.currentData()]

    def set_error(self, text: str) -> None:
        self.error.setText(text)

    def set_running(self, running: bool) -> None:
        self._running = running
        self.run_button.setText("Stop" if running else "Compare")
        for widget in (*self.model_boxes, self.assistant, self.system_prompt, self.prompt):
            widget.setEnabled(not running)
        self._update()

    def start_columns(self, count: int) -> None:
        for index, column in enumerate(self.columns):
            column.text.clear()
            column.setVisible(index < count)

    def show_result(self, index: int, result: CompareResult, json_reply: bool) -> None:
        self.columns[index].show_result(result, json_reply)
        for column in self.columns:
            if self._running:
                column.use_button.setEnabled(False)

    # ---- events -------------------------------------------------------------------------------------------------
    def _update(self) -> None:
        chosen = self.chosen_models()
        ready = len(chosen) >= 2 and bool(self.prompt.toPlainText().strip())
        self.run_button.setEnabled(self._running or ready)

    def _on_run(self) -> None:
        if self._running:
            self.stop_requested.emit()
        else:
            self.run_requested.emit()

    def _on_assistant(self) -> None:
        if not self._quiet:
            self.assistant_chosen.emit(str(self.assistant.currentData() or NONE))
