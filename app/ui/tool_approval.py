"""Asking the user before a tool runs: the bridge from the tool loop's thread to the window, and the dialog.

The tool loop calls approve(call, spec) on its worker thread and waits for the answer. ApprovalBridge.ask()
hands the question to the GUI thread with a signal and waits on a threading.Event; the window shows an
ApprovalDialog (the tool, who runs it, its exact arguments; allow once / always in this chat / deny) and
answers through the bridge. Stop, the window closing, or the reply ending answer "deny" and close the dialog.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from app.core.messages import ToolCall
from app.core.tool_loop import Approval
from app.core.tools import ToolSpec
from app.ui import theme

POLL_S = 0.1  # how often a waiting worker looks at its Stop flag


@dataclass(eq=False)
class ApprovalRequest:
    """One question: the call, the tool it names, and (once answered) the answer."""

    call: ToolCall
    spec: ToolSpec
    answer: Approval = Approval.DENY
    answered: threading.Event = field(default_factory=threading.Event)

    @property
    def source(self) -> str:
        if self.spec.source == "builtin":
            return "a built-in tool (it touches nothing outside Hearth)"
        if self.spec.source.startswith("mcp:"):
            return f"from the MCP server '{self.spec.source.removeprefix('mcp:')}'"
        return self.spec.source

    def arguments_text(self) -> str:
        try:
            return json.dumps(json.loads(self.call.arguments or "{}"), indent=2, ensure_ascii=False)
        except ValueError:
            return self.call.arguments


class ApprovalBridge(QObject):
    """Signals (GUI thread): requested(ApprovalRequest) — show it; withdrawn(ApprovalRequest) — it was answered
    "deny" without the user (Stop, closing), close its dialog."""

    requested = Signal(object)
    withdrawn = Signal(object)
    _ask = Signal(object)
    _withdraw = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pending: set[ApprovalRequest] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._ask.connect(self._on_ask)
        self._withdraw.connect(self._on_withdraw)

    @property
    def pending(self) -> list[ApprovalRequest]:
        with self._lock:
            return list(self._pending)

    def ask(self, call: ToolCall, spec: ToolSpec, stop: threading.Event) -> Approval:
        """On the worker thread: ask the user and wait. DENY when stop is set or the bridge is closed first."""
        request = ApprovalRequest(call, spec)
        with self._lock:
            if self._closed:
                return Approval.DENY
            self._pending.add(request)
        self._ask.emit(request)
        while not request.answered.wait(POLL_S):
            if stop.is_set() or self._closed:
                break
        with self._lock:
            self._pending.discard(request)
        if not request.answered.is_set():
            request.answer = Approval.DENY
            request.answered.set()
            self._withdraw.emit(request)
        return request.answer

    def answer(self, request: ApprovalRequest, approval: Approval) -> None:
        """The user's answer (GUI thread). An answer to a request already withdrawn changes nothing."""
        with self._lock:
            if request.answered.is_set():
                return
            request.answer = approval
            request.answered.set()

    def close(self) -> None:
        """The window is closing: every question waiting and every later one is answered "deny"."""
        with self._lock:
            self._closed = True
            pending = list(self._pending)
        for request in pending:
            self.answer(request, Approval.DENY)

    def _on_ask(self, request: ApprovalRequest) -> None:
        if not request.answered.is_set():
            self.requested.emit(request)

    def _on_withdraw(self, request: ApprovalRequest) -> None:
        self.withdrawn.emit(request)


class ApprovalDialog(QDialog):
    """The question itself: which tool, who runs it, the exact arguments; three answers. Esc or closing the
    dialog is "deny"."""

    def __init__(self, request: ApprovalRequest, bridge: ApprovalBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.request = request
        self.bridge = bridge
        self.setWindowTitle("Allow a tool call?")
        self.setMinimumWidth(480)
        layout = QVBoxLayout(self)
        self.title = QLabel(f"The model wants to run <b>{_html(request.call.name)}</b>, {_html(request.source)}.", self)
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.title.setWordWrap(True)
        layout.addWidget(self.title)
        if request.spec.description.strip():
            description = QLabel(request.spec.description.strip()[:600], self)
            description.setTextFormat(Qt.TextFormat.PlainText)
            description.setObjectName("Muted")
            description.setWordWrap(True)
            layout.addWidget(description)
        layout.addWidget(QLabel("With these arguments:", self))
        self.arguments = QPlainTextEdit(self)
        self.arguments.setReadOnly(True)
        self.arguments.setPlainText(request.arguments_text())
        self.arguments.setFont(theme.mono_font())
        self.arguments.setMaximumHeight(180)
        layout.addWidget(self.arguments)
        buttons = QHBoxLayout()
        self.deny_button = QPushButton("Deny", self)
        self.always_button = QPushButton("Always allow in this chat", self)
        self.once_button = QPushButton("Allow once", self)
        self.once_button.setObjectName("Primary")
        for button, approval in (
            (self.deny_button, Approval.DENY),
            (self.always_button, Approval.ALWAYS),
            (self.once_button, Approval.ONCE),
        ):
            button.setAutoDefault(False)
            button.clicked.connect(lambda _checked=False, a=approval: self.choose(a))
            buttons.addWidget(button)
        buttons.insertStretch(1, 1)
        layout.addLayout(buttons)
        bridge.withdrawn.connect(self._on_withdrawn)

    def choose(self, approval: Approval) -> None:
        self.bridge.answer(self.request, approval)
        self.done(QDialog.DialogCode.Accepted if approval is not Approval.DENY else QDialog.DialogCode.Rejected)

    def reject(self) -> None:  # Esc, the close button
        self.bridge.answer(self.request, Approval.DENY)
        super().reject()

    def _on_withdrawn(self, request: object) -> None:
        if request is self.request and self.isVisible():
            super().reject()


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
