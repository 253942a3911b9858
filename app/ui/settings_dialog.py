"""The Settings dialog over app.core.settings: theme, model folders, defaults for new chats and loads,
the Hugging Face token (kept in the OS keyring) and endpoint, remote servers (app/ui/servers_tab.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
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
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.core.errors import SettingsError
from app.core.fields import DEFAULT_SETTING, LOAD_FIELDS
from app.core.sampling import PRESETS, canonical_preset_name, preset_label
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
        tabs = QTabWidget(self)
        tabs.addTab(self._general_tab(), "General")
        tabs.addTab(self._models_tab(), "Models")
        tabs.addTab(self._defaults_tab(), "Defaults")
        tabs.addTab(self._hub_tab(), "Hugging Face")
        self.servers = ServersTab(settings, self)  # saved at once, not by OK (keys go to the keyring)
        tabs.addTab(self.servers, "Servers")
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

    # ---- actions ---------------------------------------------------------------------------------------------
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
            **{DEFAULT_SETTING[name]: editor.value() for name, editor in self.load_defaults.items()},
            "hub_endpoint": self.endpoint.text().strip(),
        }

    def apply(self) -> str:
        """Save every value; '' on success, else the first refusal (earlier values are already saved)."""
        for name, value in self.values().items():
            try:
                self.settings.set(name, value)
            except SettingsError as exc:
                return str(exc)
        return ""

    def _on_accept(self) -> None:
        problem = self.apply()
        if problem:
            self.error.setText(problem)
            self.error.show()
            return
        self.accept()
