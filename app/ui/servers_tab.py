"""Settings → Servers: add, edit and remove OpenAI-compatible servers, test a connection, enter an API key.

The tab checks what it can at once (name, URL, the key policy); keyring and network work is the app's, off
the GUI thread (the tab asks through its signals and shows the answer with set_status)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.core.errors import ConfigError
from app.core.remote_keys import check_key
from app.core.remote_servers import URL_EXAMPLE, ServerConfig, ServerRegistry
from app.ui.untrusted import plain

if TYPE_CHECKING:
    from app.core.settings import Settings

NameRole = Qt.ItemDataRole.UserRole + 1


@dataclass(frozen=True)
class ServerEdit:
    """A server to save: replacing is the name it had (None: a new one); key: a new key to keep in the
    keyring (None: unchanged); forget_key: remove the saved key."""

    config: ServerConfig
    replacing: str | None
    key: str | None = None
    forget_key: bool = False


class ServersTab(QWidget):
    """Signals:
    save_requested(object ServerEdit), remove_requested(str name), test_requested(object ServerConfig, str key).
    """

    save_requested = Signal(object)
    remove_requested = Signal(str)
    test_requested = Signal(object, str)

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.registry = ServerRegistry(settings)
        self._editing: str | None = None  # the server being edited (None: a new one)
        self._saved_key = False  # it has a key in the keyring
        layout = QVBoxLayout(self)
        intro = QLabel(
            "Chat with models on other machines: llama-server, vLLM, Ollama, LM Studio or another Hearth "
            "(anything OpenAI-compatible). Their models appear in the model picker under the server's name.",
            self,
        )
        intro.setWordWrap(True)
        intro.setObjectName("Muted")
        layout.addWidget(intro)
        self.list = QListWidget(self)
        self.list.currentItemChanged.connect(self._on_selected)
        layout.addWidget(self.list, 1)
        row = QHBoxLayout()
        self.add_button = QPushButton("Add server", self)
        self.add_button.clicked.connect(self.start_new)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.clicked.connect(self._on_remove)
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        row.addStretch(1)
        layout.addLayout(row)
        form = QFormLayout()
        self.name = QLineEdit(self)
        self.name.setPlaceholderText("e.g. workstation")
        form.addRow("Name", self.name)
        self.url = QLineEdit(self)
        self.url.setPlaceholderText(URL_EXAMPLE)
        form.addRow("Base URL", self.url)
        self.key = QLineEdit(self)
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        form.addRow("API key", self.key)
        self.forget_key = QCheckBox("Forget the saved key", self)
        form.addRow("", self.forget_key)
        self.key_over_http = QCheckBox("Send the key over plain HTTP (unencrypted) to this server", self)
        self.key_over_http.setToolTip(
            "Keys go only over https://, or plain http:// to this machine, unless you allow it here."
        )
        form.addRow("", self.key_over_http)
        self.llama_fields = QCheckBox("Send llama.cpp's sampling fields (top-k, min-p, repeat penalty)", self)
        self.llama_fields.setToolTip(
            "llama-server, llama-cpp-python, Ollama, LM Studio and Hearth take them; OpenAI's own API refuses them."
        )
        form.addRow("", self.llama_fields)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        self.save_button = QPushButton("Save server", self)
        self.save_button.setObjectName("Primary")
        self.save_button.clicked.connect(self._on_save)
        self.test_button = QPushButton("Test connection", self)
        self.test_button.clicked.connect(self._on_test)
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.test_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.status = plain(QLabel(self))  # a server's own answers and errors
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)
        note = QLabel("Keys are kept in your system's keyring, never in a file. Changes here are saved at once.", self)
        note.setObjectName("Muted")
        note.setWordWrap(True)
        layout.addWidget(note)
        self.reload()

    # ---- content -------------------------------------------------------------------------------------------
    def reload(self, select: str | None = None) -> None:
        """List the servers again (after a change), keeping or choosing the selection."""
        keep = select or self._editing
        self.list.blockSignals(True)
        self.list.clear()
        for config in self.registry.all():
            key = " · key in keyring" if config.has_key else ""
            item = QListWidgetItem(f"{config.name} — {config.url}{key}")
            item.setData(NameRole, config.name)
            self.list.addItem(item)
        for name, problem in self.registry.broken():
            item = QListWidgetItem(f"{name} — not usable: {problem}")
            item.setData(NameRole, name)
            self.list.addItem(item)
        self.list.blockSignals(False)
        for row in range(self.list.count()):
            if keep and str(self.list.item(row).data(NameRole)).lower() == keep.lower():
                self.list.setCurrentRow(row)
                return
        if self.list.count():
            self.list.setCurrentRow(0)
        else:
            self.start_new()

    def start_new(self) -> None:
        self.list.blockSignals(True)
        self.list.clearSelection()
        self.list.setCurrentRow(-1)
        self.list.blockSignals(False)
        self._fill(None)
        self.name.setFocus()

    def _on_selected(self, current: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        self._fill(self.registry.find(str(current.data(NameRole))) if current is not None else None)

    def _fill(self, config: ServerConfig | None) -> None:
        self._editing = config.name if config else None
        self.name.setText(config.name if config else "")
        self.url.setText(config.url if config else "")
        self.key.clear()
        has_key = self._saved_key = bool(config and config.has_key)
        self.key.setPlaceholderText("saved in the keyring; type to replace" if has_key else "optional")
        self.forget_key.setChecked(False)
        self.forget_key.setVisible(has_key)
        self.key_over_http.setChecked(bool(config and config.key_over_http))
        self.llama_fields.setChecked(config.llama_fields if config else True)
        self.remove_button.setEnabled(config is not None)
        self.set_status("")

    def set_status(self, text: str, error: bool = False) -> None:
        self.status.setObjectName("Error" if error else "Muted")
        self.status.setStyleSheet("")  # re-apply the theme's rule for the new object name
        self.status.setText(text)

    # ---- actions ---------------------------------------------------------------------------------------------
    def _typed_key(self) -> str | None:
        text = self.key.text().strip()
        return check_key(text) if text else None

    def _config(self) -> ServerConfig:
        saved = self.registry.find(self._editing) if self._editing else None
        key = self._typed_key()
        keeps_key = bool(saved and saved.has_key and not self.forget_key.isChecked())
        return ServerConfig(
            self.name.text(),
            self.url.text(),
            has_key=key is not None or keeps_key,
            key_over_http=self.key_over_http.isChecked(),
            llama_fields=self.llama_fields.isChecked(),
        )

    def _on_save(self) -> None:
        try:
            key = self._typed_key()
            config = self.registry.check(self._config(), replacing=self._editing)
        except ConfigError as exc:
            self.set_status(str(exc), error=True)
            return
        forget = self._saved_key and self.forget_key.isChecked() and key is None
        self.set_status("Saving…")
        self.save_requested.emit(ServerEdit(config, self._editing, key, forget))
        self._editing = config.name

    def _on_test(self) -> None:
        try:
            key = self._typed_key()
            config = self._config().validate()
            if key is not None and config.key_problem:
                raise ConfigError(config.key_problem)
        except ConfigError as exc:
            self.set_status(str(exc), error=True)
            return
        self.set_status(f"Connecting to {config.url}…")
        self.test_requested.emit(config, key or "")

    def _on_remove(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.remove_requested.emit(str(item.data(NameRole)))
