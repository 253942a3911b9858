"""The collapsible panel beside the chat: load settings, system prompt, template (with why), sampling."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QIntValidator
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.core.sampling import PRESET_HELP, PRESETS, RANGES, SamplingSettings
from app.ui.untrusted import plain

CUSTOM = "custom"
AUTO_LAYERS = -2
CTX_STEP = 256
# The sampling fields the panel offers (the rest keep their preset values).
SAMPLING_FIELDS: dict[str, tuple[float, int]] = {  # name -> (step, decimals; 0 decimals = integer)
    "temperature": (0.05, 2),
    "top_k": (1, 0),
    "top_p": (0.01, 2),
    "min_p": (0.01, 2),
    "repeat_penalty": (0.01, 2),
    "max_tokens": (64, 0),
}
DEFAULT_LOAD: dict[str, Any] = {
    "n_ctx": 4096,
    "n_gpu_layers": AUTO_LAYERS,
    "n_threads": 0,
    "flash_attention": "auto",
    "kv_cache_type": "f16",
}


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

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("SettingsPanel")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setMinimumWidth(280)
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
        self._build_prompt(body)
        self._build_template(body)
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
        for name in PRESETS:
            self.preset.addItem(name.replace("-", " ").capitalize(), name)
            self.preset.setItemData(self.preset.count() - 1, PRESET_HELP.get(name, ""), Qt.ItemDataRole.ToolTipRole)
        self.preset.addItem("Custom", CUSTOM)
        self.preset.currentIndexChanged.connect(self._on_preset)
        form.addRow("Preset", self.preset)
        self.sampling_fields: dict[str, QAbstractSpinBox] = {}
        for name, (step, decimals) in SAMPLING_FIELDS.items():
            limits = RANGES[name]
            box: QAbstractSpinBox
            if decimals:
                box = QDoubleSpinBox(body)
                box.setDecimals(decimals)
                box.setRange(limits.low, limits.high)
                box.setSingleStep(step)
                box.valueChanged.connect(self._on_sampling_field)
            else:
                box = QSpinBox(body)
                box.setRange(int(limits.low), min(int(limits.high), 1 << 30))
                box.setSingleStep(int(step))
                box.valueChanged.connect(self._on_sampling_field)
            box.setToolTip(limits.help)
            self.sampling_fields[name] = box
            form.addRow(name.replace("_", " ").capitalize(), box)
        self.seed = QLineEdit(body)
        self.seed.setPlaceholderText("random")
        self.seed.setValidator(QIntValidator(0, 2_147_483_647, self.seed))
        self.seed.setToolTip(RANGES["seed"].help)
        self.seed.editingFinished.connect(self._on_sampling_field)
        form.addRow("Seed", self.seed)
        self.layout_.addLayout(form)

    def _build_load(self, body: QWidget) -> None:
        self.layout_.addSpacing(6)
        self.layout_.addWidget(_title("Model loading", body))
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.n_ctx = QSpinBox(body)
        self.n_ctx.setRange(0, 1 << 20)
        self.n_ctx.setSingleStep(CTX_STEP)
        self.n_ctx.setSpecialValueText("Model's own")
        self.n_ctx.setToolTip("Context size in tokens (a multiple of 256); bigger needs more memory.")
        self.n_ctx.editingFinished.connect(self._round_ctx)
        form.addRow("Context", self.n_ctx)
        self.gpu_layers = QSpinBox(body)
        self.gpu_layers.setRange(AUTO_LAYERS, 999)
        self.gpu_layers.setSpecialValueText("Auto")
        self.gpu_layers.setToolTip("Layers offloaded to the GPU: Auto = as many as fit, -1 = all, 0 = CPU only.")
        form.addRow("GPU layers", self.gpu_layers)
        self.threads = QSpinBox(body)
        self.threads.setRange(0, 1024)
        self.threads.setSpecialValueText("Auto")
        form.addRow("CPU threads", self.threads)
        self.flash = QComboBox(body)
        for label, value in (("Auto", "auto"), ("On", "on"), ("Off", "off")):
            self.flash.addItem(label, value)
        form.addRow("Flash attention", self.flash)
        self.kv_type = QComboBox(body)
        for value in ("f16", "q8_0", "q4_0"):
            self.kv_type.addItem(value, value)
        self.kv_type.setToolTip("Quantized KV caches save memory and need flash attention.")
        form.addRow("KV cache", self.kv_type)
        self.layout_.addLayout(form)
        for widget in (self.n_ctx, self.gpu_layers, self.threads):
            widget.valueChanged.connect(self._on_load_field)
        for combo in (self.flash, self.kv_type):
            combo.currentIndexChanged.connect(self._on_load_field)
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
        index = self.preset.findData(preset if preset in PRESETS else CUSTOM)
        self.preset.setCurrentIndex(index)
        for name, box in self.sampling_fields.items():
            box.setValue(getattr(settings, name))  # type: ignore[attr-defined]
        self.seed.setText("" if settings.seed is None else str(settings.seed))
        self._quiet = False

    def set_load_settings(self, values: dict[str, Any]) -> None:
        self._quiet = True
        merged = {**DEFAULT_LOAD, **values}
        self.n_ctx.setValue(int(merged["n_ctx"]))
        self.gpu_layers.setValue(int(merged["n_gpu_layers"]))
        self.threads.setValue(int(merged["n_threads"]))
        self.flash.setCurrentIndex(max(0, self.flash.findData(merged["flash_attention"])))
        self.kv_type.setCurrentIndex(max(0, self.kv_type.findData(merged["kv_cache_type"])))
        self._quiet = False

    def set_reload_enabled(self, enabled: bool) -> None:
        self.reload.setEnabled(enabled)

    def load_settings(self) -> dict[str, Any]:
        return {
            "n_ctx": self.n_ctx.value(),
            "n_gpu_layers": self.gpu_layers.value(),
            "n_threads": self.threads.value(),
            "flash_attention": self.flash.currentData(),
            "kv_cache_type": self.kv_type.currentData(),
        }

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
        values = {name: box.value() for name, box in self.sampling_fields.items()}  # type: ignore[attr-defined]
        seed_text = self.seed.text().strip()
        values["seed"] = int(seed_text) if seed_text else None
        known = {f.name for f in fields(SamplingSettings)}
        settings = replace(self._sampling, **{k: v for k, v in values.items() if k in known})
        if settings == self._sampling:
            return
        self._sampling = settings
        preset = next((name for name, p in PRESETS.items() if p == settings), CUSTOM)
        self._quiet = True
        self.preset.setCurrentIndex(self.preset.findData(preset))
        self._quiet = False
        self.sampling_changed.emit(preset, settings)

    def _round_ctx(self) -> None:
        value = self.n_ctx.value()
        if value % CTX_STEP:
            self.n_ctx.setValue(max(CTX_STEP, round(value / CTX_STEP) * CTX_STEP))

    def _on_load_field(self) -> None:
        if not self._quiet:
            self.load_settings_changed.emit(self.load_settings())
