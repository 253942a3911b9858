"""Settings -> Tools: the MCP servers (the usual {"mcpServers": {...}} JSON, checked as it is typed) and the
built-in tools, each with what it can reach."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QVBoxLayout, QWidget

from app.core.errors import ConfigError
from app.core.tool_setup import EXAMPLE_CONFIG, check_mcp_text, read_mcp_text, save_mcp_text
from app.ui import theme

HELP = (
    'MCP servers, as in Claude Desktop or LM Studio: {"mcpServers": {"name": {"command": "...", "args": [...], '
    '"env": {...}}}} for a program Hearth starts, or {"url": "https://..."} for a server on the network. '
    "Turn them on per chat in the chat panel; every call asks for your approval. A server started here runs "
    "as you, with your permissions: only add servers you trust."
)


class McpSettingsPage(QWidget):
    """Edits mcp.json. apply() saves a valid text ('' on success, else why not; the file is unchanged).

    Signals: saved(): the configuration file changed."""

    saved = Signal()

    def __init__(self, path: Path, builtins: Sequence[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.path = path
        layout = QVBoxLayout(self)
        about = QLabel(HELP, self)
        about.setObjectName("Muted")
        about.setWordWrap(True)
        layout.addWidget(about)
        self.editor = QPlainTextEdit(self)
        self.editor.setFont(theme.mono_font())
        self.editor.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        try:
            self._original = read_mcp_text(path)
            self.editor.setPlainText(self._original or EXAMPLE_CONFIG)
            self.editor.setReadOnly(False)
        except ConfigError as exc:
            self._original = None  # unreadable: never overwritten by accident
            self.editor.setPlainText("")
            self.editor.setReadOnly(True)
            self.editor.setPlaceholderText(str(exc))
        layout.addWidget(self.editor, 1)
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        layout.addWidget(self.status)
        names = ", ".join(name for name, _description in builtins)
        builtin = QLabel(
            f"Built-in tools (no server, nothing outside Hearth: the clock, arithmetic): {names}. "
            "Turn them on per chat too.",
            self,
        )
        builtin.setObjectName("Muted")
        builtin.setWordWrap(True)
        layout.addWidget(builtin)
        self.editor.textChanged.connect(self._check)
        self._check()

    def _check(self) -> None:
        """Say what the text defines, or what is wrong with it, as it is typed."""
        try:
            servers = check_mcp_text(self.editor.toPlainText())
        except ConfigError as exc:
            self.status.setObjectName("Error")
            self.status.setText(str(exc))
        else:
            self.status.setObjectName("Muted")
            names = ", ".join(s.name + (" (disabled)" if s.disabled else "") for s in servers)
            plural = "s" if len(servers) != 1 else ""
            self.status.setText(f"{len(servers)} server{plural}: {names}" if servers else "No servers.")
        self.status.style().unpolish(self.status)
        self.status.style().polish(self.status)

    def problem(self) -> str:
        try:
            check_mcp_text(self.editor.toPlainText())
        except ConfigError as exc:
            return str(exc)
        return ""

    def apply(self) -> str:
        if self._original is None:
            return ""
        text = self.editor.toPlainText()
        if text == self._original or (not self._original and text == EXAMPLE_CONFIG):
            return ""
        try:
            save_mcp_text(self.path, text)
        except ConfigError as exc:
            return f"Tools: {exc}"
        self._original = text
        self.saved.emit()
        return ""
