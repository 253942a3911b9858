"""The collapsible panel beside the chat: assistant, system prompt, template (with why), reply format, sampling,
load settings and LoRA adapters."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.core.errors import HearthError
from app.core.fields import LOAD_FIELDS, SAMPLING_FIELDS
from app.core.sampling import PRESET_HELP, PRESETS, SamplingSettings, canonical_preset_name, preset_label
from app.core.structured import JSON_SCHEMA, REPLY_FORMATS
from app.ui.assistant_section import AssistantSection
from app.ui.documents_section import DocumentsSection
from app.ui.field_editors import add_rows
from app.ui.lora_section import LoraSection
from app.ui.reply_format_editor import ReplyFormatEditor
from app.ui.tool_panel import ToolsSection
from app.ui.untrusted import plain

if TYPE_CHECKING:
    from app.ui.workers import TaskRunner

CUSTOM = "custom"


def _title(text: str, parent: QWidget) -> QLabel:
    label = QLabel(text.upper(), parent)
    label.setObjectName("SectionTitle")
    return label


class SettingsPanel(QWidget):
    """Signals:
    load_settings_changed(object dict), reload_requested(), system_prompt_changed(str),
    template_changed(str: '' = automatic), sampling_changed(str preset, object SamplingSettings).
    """

    load_settings_changed = Signal(object)
    reload_requested = Signal()
    system_prompt_changed = Signal(str)
    template_changed = Signal(str)
    sampling_changed = Signal(str, object)

    def __init__(self, parent: QWidget | None = None, tasks: TaskRunner | None = None) -> None:
        super().__init__(parent)
        self._tasks = tasks  # checks a reply schema off the GUI thread
        self.setObjectName("SettingsPanel")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setMinimumWidth(300)
        self._quiet = False
        self._sampling = SamplingSettings()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer.addWidget(scroll)
        body = QWidget(scroll)
        body.setObjectName("SettingsPanel")
        body.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        scroll.setWidget(body)
        self.layout_ = QVBoxLayout(body)
        self.layout_.setContentsMargins(16, 14, 16, 14)
        self.layout_.setSpacing(8)
        self.layout_.addWidget(_title("Assistant", body))
        self.assistant = AssistantSection(body)  # filled and wired by app.ui.chat_workflows
        self.layout_.addWidget(self.assistant)
        self.layout_.addSpacing(6)
        self._build_prompt(body)
        self.layout_.addSpacing(6)
        self.documents = DocumentsSection(body)  # what this chat answers from (its signals go to app.py)
        self.layout_.addWidget(self.documents)
        self._build_template(body)
        self.layout_.addSpacing(6)
        self.layout_.addWidget(_title("Reply format", body))
        self.reply_format = ReplyFormatEditor(body, self._tasks)  # wired by app.ui.chat_workflows
        schema = self.reply_format.buttons[JSON_SCHEMA]  # the panel is narrow: a short label, the full one on hover
        schema.setText("JSON schema")
        schema.setToolTip(REPLY_FORMATS[JSON_SCHEMA])
        self.reply_format.status.setWordWrap(True)  # "✓ The schema is valid …" wraps instead of widening it
        self.layout_.addWidget(self.reply_format)
        self.layout_.addWidget(_title("Tools", body))
        self.tools = ToolsSection(body)  # filled and wired by the app (app.ui.tool_replies)
        self.layout_.addWidget(self.tools)
        self._build_sampling(body)
        self._build_load(body)
        self.layout_.addStretch(1)
        self._prompt_timer = QTimer(self)
        self._prompt_timer.setSingleShot(True)
        self._prompt_timer.setInterval(400)
        self._prompt_timer.timeout.connect(self._emit_prompt)

    # ---- sections --------------------------------------------------------------------------------------------
    def _build_prompt(self, body: QWidget) -> None:
        self.layout_.addWidget(_title("System prompt", body))
        self.system_prompt = QPlainTextEdit(body)
        self.system_prompt.setPlaceholderText("For example: You are a concise, friendly assistant.")
        self.system_prompt.setFixedHeight(96)
        self.system_prompt.textChanged.connect(self._on_prompt_edited)
        self.layout_.addWidget(self.system_prompt)

    def _build_template(self, body: QWidget) -> None:
        self.layout_.addSpacing(6)
        self.layout_.addWidget(_title("Chat template", body))
        self.template = QComboBox(body)
        self.template.addItem("Automatic", "")
        self.template.currentIndexChanged.connect(self._on_template)
        self.layout_.addWidget(self.template)
        # The reason names the model and the warning quotes the template's own error text: plain text.
        self.template_reason = plain(QLabel("Load a model to see which template it uses.", body))
        self.template_reason.setObjectName("Muted")
        self.template_reason.setWordWrap(True)
        self.layout_.addWidget(self.template_reason)
        self.template_warning = plain(QLabel(body))
        self.template_warning.setObjectName("Error")
        self.template_warning.setWordWrap(True)
        self.template_warning.hide()
        self.layout_.addWidget(self.template_warning)

    def _build_sampling(self, body: QWidget) -> None:
        self.layout_.addSpacing(6)
        self.layout_.addWidget(_title("Sampling", body))
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.preset = QComboBox(body)
        # Long preset names ("Mistral 7B Instruct (community)") must not widen the narrow panel: they elide.
        self.preset.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.preset.setMinimumContentsLength(8)
        for name in PRESETS:
            self.preset.addItem(preset_label(name), name)
            self.preset.setItemData(self.preset.count() - 1, PRESET_HELP.get(name, ""), Qt.ItemDataRole.ToolTipRole)
        self.preset.addItem("Custom", CUSTOM)
        self.preset.currentIndexChanged.connect(self._on_preset)
        form.addRow("Preset", self.preset)
        self.sampling_fields = add_rows(form, tuple(f for f in SAMPLING_FIELDS if f.panel), body)
        for editor in self.sampling_fields.values():
            editor.changed.connect(self._on_sampling_field)
        self.layout_.addLayout(form)

    def _build_load(self, body: QWidget) -> None:
        self.layout_.addSpacing(6)
        self.layout_.addWidget(_title("Model loading", body))
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.load_fields = add_rows(form, tuple(f for f in LOAD_FIELDS if f.panel), body)
        for editor in self.load_fields.values():
            editor.changed.connect(self._on_load_field)
        self.layout_.addLayout(form)
        self.loras = LoraSection(body)  # the selected model's adapters (app.ui.chat_workflows)
        self.layout_.addWidget(self.loras)
        self.reload = QPushButton("Reload model with these settings", body)
        self.reload.setEnabled(False)
        self.reload.clicked.connect(self.reload_requested)
        self.layout_.addWidget(self.reload)

    # ---- filling in (no signals) ------------------------------------------------------------------------------
    def set_system_prompt(self, text: str) -> None:
        self._quiet = True
        self._prompt_timer.stop()
        self.system_prompt.setPlainText(text)
        self._quiet = False

    def set_templates(self, names: list[str], override: str, label: str, reason: str, warning: str | None) -> None:
        """The choices for this model, the override in force ('' = automatic) and why the template is used."""
        self._quiet = True
        self.template.clear()
        self.template.addItem(f"Automatic ({label})" if label else "Automatic", "")
        for name in names:
            self.template.addItem(name, name)
        index = self.template.findData(override)
        self.template.setCurrentIndex(max(0, index))
        self._quiet = False
        self.template_reason.setText(reason)
        self.template_warning.setText(warning or "")
        self.template_warning.setVisible(bool(warning))

    def set_sampling(self, preset: str, settings: SamplingSettings) -> None:
        self._quiet = True
        self._sampling = settings
        preset = canonical_preset_name(preset)  # conversations saved by an older Hearth use older names
        index = self.preset.findData(preset if preset in PRESETS else CUSTOM)
        self.preset.setCurrentIndex(index)
        for name, editor in self.sampling_fields.items():
            editor.set_value(getattr(settings, name))
        self._quiet = False

    def set_load_settings(self, values: dict[str, Any]) -> None:
        """Show a model's load settings (stored form, as app.core.load_policy.model_load_values gives them)."""
        for name, editor in self.load_fields.items():
            editor.set_value(values.get(name, editor.field.default))

    def set_reload_enabled(self, enabled: bool) -> None:
        self.reload.setEnabled(enabled)

    def load_settings(self) -> dict[str, Any]:
        return {name: editor.value() for name, editor in self.load_fields.items()}

    def sampling(self) -> tuple[str, SamplingSettings]:
        return str(self.preset.currentData()), self._sampling

    # ---- edits ------------------------------------------------------------------------------------------------
    def _on_prompt_edited(self) -> None:
        if not self._quiet:
            self._prompt_timer.start()

    def _emit_prompt(self) -> None:
        self.system_prompt_changed.emit(self.system_prompt.toPlainText())

    def flush_prompt(self) -> None:
        """Send a pending system prompt edit now (before a message is sent)."""
        if self._prompt_timer.isActive():
            self._prompt_timer.stop()
            self._emit_prompt()

    def _on_template(self) -> None:
        if not self._quiet:
            self.template_changed.emit(str(self.template.currentData() or ""))

    def _on_preset(self) -> None:
        name = str(self.preset.currentData())
        if self._quiet or name == CUSTOM:
            return
        self.set_sampling(name, PRESETS[name])
        self.sampling_changed.emit(name, PRESETS[name])

    def _on_sampling_field(self) -> None:
        if self._quiet:
            return
        values = {name: editor.value() for name, editor in self.sampling_fields.items()}
        try:
            settings = replace(self._sampling, **values).validate()
        except HearthError:
            return  # the editors keep values in range; a value being typed is not one yet
        if settings == self._sampling:
            return
        self._sampling = settings
        preset = next((name for name, p in PRESETS.items() if p == settings), CUSTOM)
        self._quiet = True
        self.preset.setCurrentIndex(self.preset.findData(preset))
        self._quiet = False
        self.sampling_changed.emit(preset, settings)

    def _on_load_field(self) -> None:
        if not self._quiet:
            self.load_settings_changed.emit(self.load_settings())
