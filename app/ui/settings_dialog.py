"""The Settings dialog over app.core.settings: theme, model folders, defaults for new chats and loads,
the Hugging Face token (kept in the OS keyring) and endpoint, remote servers (app/ui/servers_tab.py), the
local server."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.core.errors import ConfigError, SettingsError
from app.core.fields import DEFAULT_SETTING, LOAD_FIELDS
from app.core.sampling import PRESETS, canonical_preset_name, preset_label
from app.core.server.config import config_from_settings, lan_address
from app.core.settings import OPTIONS_BY_NAME
from app.ui.field_editors import add_rows
from app.ui.servers_tab import ServersTab
from app.ui.untrusted import plain

if TYPE_CHECKING:
    from app.core.settings import Settings


class SettingsDialog(QDialog):
    """Edits Settings; OK validates and saves every field (a refused value is named, nothing is lost).

    Signals:
        token_save_requested(str), token_clear_requested(): run by the app off the GUI thread (keyring).
    """

    token_save_requested = Signal(str)
    token_clear_requested = Signal()

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumSize(560, 460)
        self.settings = settings
        layout = QVBoxLayout(self)
        self.tabs = tabs = QTabWidget(self)
        self.pages: list[Any] = []  # tabs added by others (add_page), applied with the rest
        tabs.addTab(self._general_tab(), "General")
        tabs.addTab(self._models_tab(), "Models")
        tabs.addTab(self._defaults_tab(), "Defaults")
        tabs.addTab(self._hub_tab(), "Hugging Face")
        self.servers = ServersTab(settings, self)  # saved at once, not by OK (keys go to the keyring)
        tabs.addTab(self.servers, "Servers")
        tabs.addTab(self._server_tab(), "Local server")
        self.tabs = tabs
        layout.addWidget(tabs, 1)
        self.error = plain(QLabel(self))
        self.error.setObjectName("Error")
        self.error.setWordWrap(True)
        self.error.hide()
        layout.addWidget(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self._on_accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    # ---- tabs ------------------------------------------------------------------------------------------------
    def _general_tab(self) -> QWidget:
        page = QWidget(self)
        form = QFormLayout(page)
        self.theme = QComboBox(page)
        for label, value in (("Follow the system", "system"), ("Light", "light"), ("Dark", "dark")):
            self.theme.addItem(label, value)
        self.theme.setCurrentIndex(max(0, self.theme.findData(self.settings.get("theme"))))
        form.addRow("Theme", self.theme)
        return page

    def _models_tab(self) -> QWidget:
        page = QWidget(self)
        layout = QVBoxLayout(page)
        layout.addWidget(QLabel("Extra folders scanned for GGUF files (Hearth's own folder is always scanned):"))
        self.folders = QListWidget(page)
        self.folders.addItems(self.settings.get("model_folders"))
        layout.addWidget(self.folders, 1)
        row = QHBoxLayout()
        add = QPushButton("Add folder…", page)
        add.clicked.connect(self._on_add_folder)
        remove = QPushButton("Remove", page)
        remove.clicked.connect(self._on_remove_folder)
        row.addWidget(add)
        row.addWidget(remove)
        row.addStretch(1)
        layout.addLayout(row)
        self.external = QCheckBox("Also list models from the Hugging Face cache, LM Studio and GPT4All", page)
        self.external.setChecked(bool(self.settings.get("scan_external_libraries")))
        layout.addWidget(self.external)
        return page

    def _defaults_tab(self) -> QWidget:
        page = QWidget(self)
        form = QFormLayout(page)
        self.default_prompt = QPlainTextEdit(page)
        self.default_prompt.setPlainText(self.settings.get("default_system_prompt"))
        self.default_prompt.setFixedHeight(80)
        form.addRow("System prompt", self.default_prompt)
        self.default_preset = QComboBox(page)
        for name in PRESETS:
            self.default_preset.addItem(preset_label(name), name)
        self.default_preset.setCurrentIndex(
            max(0, self.default_preset.findData(canonical_preset_name(self.settings.get("default_sampling_preset"))))
        )
        form.addRow("Sampling preset", self.default_preset)
        self.load_defaults = add_rows(form, LOAD_FIELDS, page)
        for field in LOAD_FIELDS:
            self.load_defaults[field.name].set_value(self.settings.get(DEFAULT_SETTING[field.name]))
        cache = OPTIONS_BY_NAME["conversation_cache_mib"]
        self.conversation_cache = QSpinBox(page)
        self.conversation_cache.setRange(int(cache.minimum or 0), int(cache.maximum or 1 << 20))
        self.conversation_cache.setSuffix(" MiB")
        self.conversation_cache.setSpecialValueText("off")
        self.conversation_cache.setValue(int(self.settings.get("conversation_cache_mib")))
        self.conversation_cache.setToolTip(cache.help)
        form.addRow("Conversation cache", self.conversation_cache)
        return page

    def _hub_tab(self) -> QWidget:
        page = QWidget(self)
        form = QFormLayout(page)
        self.token = QLineEdit(page)
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("hf_… (needed for gated models only)")
        row = QHBoxLayout()
        row.addWidget(self.token, 1)
        save = QPushButton("Save token", page)
        save.clicked.connect(self._on_save_token)
        clear = QPushButton("Forget", page)
        clear.clicked.connect(self.token_clear_requested)
        row.addWidget(save)
        row.addWidget(clear)
        form.addRow("Access token", row)
        self.token_status = plain(QLabel("Checking…", page))
        self.token_status.setObjectName("Muted")
        self.token_status.setWordWrap(True)
        form.addRow("", self.token_status)
        self.endpoint = QLineEdit(page)
        self.endpoint.setPlaceholderText("https://huggingface.co (or a mirror)")
        self.endpoint.setText(self.settings.get("hub_endpoint"))
        form.addRow("Endpoint", self.endpoint)
        note = QLabel("The token is kept in your system's keyring, never in a file.", page)
        note.setObjectName("Muted")
        note.setWordWrap(True)
        form.addRow("", note)
        return page

    def _server_tab(self) -> QWidget:
        page = QWidget(self)
        form = QFormLayout(page)
        get = self.settings.get
        intro = QLabel(
            "Other apps (editors, scripts, agents) can use the model loaded here through an OpenAI-compatible "
            "API. Requests are answered together with your chats.",
            page,
        )
        intro.setWordWrap(True)
        intro.setObjectName("Muted")
        form.addRow(intro)
        self.server_enabled = QCheckBox("Serve the loaded model to other apps", page)
        self.server_enabled.setChecked(bool(get("server_enabled")))
        form.addRow(self.server_enabled)
        self.server_port = QSpinBox(page)
        self.server_port.setRange(1, 65535)
        self.server_port.setValue(int(get("server_port")))
        form.addRow("Port", self.server_port)
        self.server_key = QLineEdit(page)
        self.server_key.setText(get("server_api_key"))
        self.server_key.setPlaceholderText("none: any app on this computer may call")
        self.server_generate = QPushButton("Generate", page)
        self.server_generate.clicked.connect(self._on_generate_key)
        key_row = QHBoxLayout()
        key_row.addWidget(self.server_key, 1)
        key_row.addWidget(self.server_generate)
        form.addRow("API key", key_row)
        self.server_network = QCheckBox("Allow other devices on my network (needs an API key)", page)
        self.server_network.setChecked(bool(get("server_allow_network")))
        form.addRow(self.server_network)
        self.server_history = QCheckBox("Save conversations from other apps to the history", page)
        self.server_history.setChecked(bool(get("server_save_history")))
        form.addRow(self.server_history)
        self.server_cors = QLineEdit(page)
        self.server_cors.setText(" ".join(get("server_cors_origins")))
        self.server_cors.setPlaceholderText("none; e.g. http://localhost:3000")
        form.addRow("Web pages allowed", self.server_cors)
        self.server_url = QLabel(page)
        self.server_url.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.server_copy = QPushButton("Copy URL", page)
        self.server_copy.clicked.connect(self._on_copy_url)
        url_row = QHBoxLayout()
        url_row.addWidget(self.server_url, 1)
        url_row.addWidget(self.server_copy)
        form.addRow("URL", url_row)
        self.server_status = QLabel("Off", page)
        self.server_status.setObjectName("Muted")
        self.server_status.setWordWrap(True)
        form.addRow("Status", self.server_status)
        for signal in (self.server_port.valueChanged, self.server_network.toggled):
            signal.connect(self._update_server_url)
        self._update_server_url()
        return page

    def add_page(self, title: str, page: QWidget) -> None:
        """Another tab (e.g. Tools); page.apply() -> '' or why it refused, called by OK after the settings."""
        self.pages.append(page)
        self.tabs.addTab(page, title)

    # ---- actions ---------------------------------------------------------------------------------------------
    def set_server_status(self, text: str) -> None:
        self.server_status.setText(text)

    def server_values(self) -> dict[str, Any]:
        origins = self.server_cors.text().replace(",", " ").split()
        return {
            "server_enabled": self.server_enabled.isChecked(),
            "server_port": self.server_port.value(),
            "server_api_key": self.server_key.text().strip(),
            "server_allow_network": self.server_network.isChecked(),
            "server_save_history": self.server_history.isChecked(),
            "server_cors_origins": origins,
        }

    def server_url_text(self) -> str:
        config = config_from_settings(self.server_values().__getitem__)
        return config.url(host=lan_address() if config.host == "0.0.0.0" else None)

    def _update_server_url(self) -> None:
        self.server_url.setText(self.server_url_text())

    def _on_copy_url(self) -> None:
        QGuiApplication.clipboard().setText(self.server_url_text())
        self.server_status.setText(f"Copied {self.server_url_text()}")

    def _on_generate_key(self) -> None:
        self.server_key.setText(f"hearth-{secrets.token_urlsafe(24)}")

    def set_token_status(self, text: str) -> None:
        self.token_status.setText(text)

    def _on_save_token(self) -> None:
        if self.token.text().strip():
            self.token_status.setText("Saving…")
            self.token_save_requested.emit(self.token.text())
            self.token.clear()

    def _on_add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a models folder")
        if folder and not self.folders.findItems(folder, Qt.MatchFlag.MatchExactly):
            self.folders.addItem(folder)

    def _on_remove_folder(self) -> None:
        for item in self.folders.selectedItems():
            self.folders.takeItem(self.folders.row(item))

    def values(self) -> dict[str, Any]:
        return {
            "theme": self.theme.currentData(),
            "model_folders": [self.folders.item(i).text() for i in range(self.folders.count())],
            "scan_external_libraries": self.external.isChecked(),
            "default_system_prompt": self.default_prompt.toPlainText(),
            "default_sampling_preset": self.default_preset.currentData(),
            "conversation_cache_mib": self.conversation_cache.value(),
            **{DEFAULT_SETTING[name]: editor.value() for name, editor in self.load_defaults.items()},
            "hub_endpoint": self.endpoint.text().strip(),
            **self.server_values(),
        }

    def apply(self) -> str:
        """Save every value; '' on success, else the first refusal (earlier values are already saved; the
        server's settings are checked together first, so a refused server setup saves none of them)."""
        server = self.server_values()
        if server["server_enabled"] or server["server_allow_network"]:
            try:
                config_from_settings(server.__getitem__).validate()
            except ConfigError as exc:
                return f"Local server: {exc}"
        for name, value in self.values().items():
            try:
                self.settings.set(name, value)
            except SettingsError as exc:
                return str(exc)
        for page in self.pages:
            problem = page.apply()
            if problem:
                return str(problem)
        return ""

    def _on_accept(self) -> None:
        problem = self.apply()
        if problem:
            self.error.setText(problem)
            self.error.show()
            return
        self.accept()
