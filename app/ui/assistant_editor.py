"""The form that edits every field of one assistant: prompt and variables, sampling, reply format, model
(template, context, GPU layers, LoRA adapters), tools and documents."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QIntValidator
from PySide6.QtWidgets import (
    QAbstractItemView,
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.core.assistants import Assistant
from app.core.chat_setup import CUSTOM_PRESET, LoadOverrides
from app.core.errors import ConfigError
from app.core.load_config import AUTO_LAYERS, LoraAdapter
from app.core.placeholders import variables
from app.core.sampling import PRESET_HELP, PRESETS, RANGES, SamplingSettings, preset_label
from app.core.template_families import FAMILIES
from app.core.templates import EMBEDDED
from app.ui.reply_format_editor import ReplyFormatEditor
from app.ui.untrusted import plain, tooltip

if TYPE_CHECKING:
    from app.ui.workers import TaskRunner

# Every sampling field but the seed (a line edit: empty = random) and logit_bias (not for the GUI), with
# (step, decimals); 0 decimals = a whole number.
SAMPLING_STEPS: dict[str, tuple[float, int]] = {
    "temperature": (0.05, 2),
    "top_k": (1, 0),
    "top_p": (0.01, 2),
    "min_p": (0.01, 2),
    "typical_p": (0.01, 2),
    "repeat_penalty": (0.01, 2),
    "repeat_last_n": (16, 0),
    "presence_penalty": (0.05, 2),
    "frequency_penalty": (0.05, 2),
    "mirostat": (1, 0),
    "mirostat_tau": (0.1, 2),
    "mirostat_eta": (0.01, 2),
    "max_tokens": (64, 0),
}
LABELS = {"top_k": "Top-k", "top_p": "Top-p", "min_p": "Min-p", "typical_p": "Typical-p"}
CTX_STEP = 256


def _names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


class AssistantEditor(QWidget):
    """Edits one assistant. `assistant()` builds it from the fields (validated: raises HearthError saying
    what to fix); `set_assistant()` shows one without emitting `edited`.

    Signals:
        edited(): the user changed a field.
    """

    edited = Signal()

    def __init__(self, parent: QWidget | None = None, tasks: TaskRunner | None = None) -> None:
        super().__init__(parent)
        self._tasks = tasks
        self._quiet = False
        self._current: Assistant | None = None
        self._defaults: dict[str, str] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self._prompt_tab(), "Prompt")
        self.tabs.addTab(self._sampling_tab(), "Sampling")
        self.tabs.addTab(self._reply_tab(), "Reply format")
        self.tabs.addTab(self._model_tab(), "Model")
        self.tabs.addTab(self._tools_tab(), "Tools && documents")
        layout.addWidget(self.tabs)
        self._variables_timer = QTimer(self)
        self._variables_timer.setSingleShot(True)
        self._variables_timer.setInterval(300)
        self._variables_timer.timeout.connect(self._rebuild_variables)

    # ---- tabs -------------------------------------------------------------------------------------------------
    def _prompt_tab(self) -> QWidget:
        page = QWidget(self)
        outer = QVBoxLayout(page)
        form = QFormLayout()
        outer.addLayout(form)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.name = QLineEdit(page)
        self.name.setMaxLength(80)
        self.name.textEdited.connect(self._on_edited)
        form.addRow("Name", self.name)
        self.description = QLineEdit(page)
        self.description.setPlaceholderText("What it is for, in a line")
        self.description.textEdited.connect(self._on_edited)
        form.addRow("Description", self.description)
        self.system_prompt = QPlainTextEdit(page)
        self.system_prompt.setPlaceholderText(
            "For example: Translate what the user sends into {{language}}. Reply with the translation only."
        )
        self.system_prompt.setMinimumHeight(120)
        self.system_prompt.setMaximumHeight(240)  # the variables below stay in view
        self.system_prompt.textChanged.connect(self._on_prompt_edited)
        form.addRow("System prompt", self.system_prompt)
        hint = QLabel("Write {{name}} for a value given in each new chat; a default below is used when none is.")
        hint.setObjectName("Muted")
        hint.setWordWrap(True)
        form.addRow("", hint)
        self.variables_box = QWidget(page)
        self.variables_form = QFormLayout(self.variables_box)
        self.variables_form.setContentsMargins(0, 0, 0, 0)
        self.variable_edits: dict[str, QLineEdit] = {}
        form.addRow("Variables", self.variables_box)
        outer.addStretch(1)  # fields at the top, not spread over the page
        return page

    def _sampling_tab(self) -> QWidget:
        page = QWidget(self)
        outer = QVBoxLayout(page)
        form = QFormLayout()
        outer.addLayout(form)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.preset = QComboBox(page)
        for name in PRESETS:
            self.preset.addItem(preset_label(name), name)
            self.preset.setItemData(self.preset.count() - 1, PRESET_HELP[name], Qt.ItemDataRole.ToolTipRole)
        self.preset.addItem("Custom", CUSTOM_PRESET)
        self.preset.currentIndexChanged.connect(self._on_preset)
        form.addRow("Preset", self.preset)
        self.preset_help = plain(QLabel(page))
        self.preset_help.setObjectName("Muted")
        self.preset_help.setWordWrap(True)
        form.addRow("", self.preset_help)
        self.sampling_fields: dict[str, QAbstractSpinBox] = {}
        for name, (step, decimals) in SAMPLING_STEPS.items():
            limits = RANGES[name]
            box: QAbstractSpinBox
            if decimals:
                box = QDoubleSpinBox(page)
                box.setDecimals(decimals)
                box.setRange(limits.low, limits.high)
                box.setSingleStep(step)
            else:
                box = QSpinBox(page)
                box.setRange(int(limits.low), min(int(limits.high), 1 << 30))
                box.setSingleStep(int(step))
            box.valueChanged.connect(self._on_sampling_field)
            box.setToolTip(limits.help)
            self.sampling_fields[name] = box
            form.addRow(LABELS.get(name, name.replace("_", " ").capitalize()), box)
        self.seed = QLineEdit(page)
        self.seed.setPlaceholderText("random")
        self.seed.setValidator(QIntValidator(0, 2_147_483_647, self.seed))
        self.seed.setToolTip(RANGES["seed"].help)
        self.seed.textEdited.connect(self._on_sampling_field)
        form.addRow("Seed", self.seed)
        outer.addStretch(1)  # fields at the top, not spread over the page
        return page

    def _reply_tab(self) -> QWidget:
        page = QWidget(self)
        layout = QVBoxLayout(page)
        self.reply_format = ReplyFormatEditor(page, self._tasks)
        self.reply_format.format_changed.connect(self._on_edited)
        self.reply_format.validity_changed.connect(self._on_edited)
        layout.addWidget(self.reply_format)
        return page

    def _model_tab(self) -> QWidget:
        page = QWidget(self)
        outer = QVBoxLayout(page)
        form = QFormLayout()
        outer.addLayout(form)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.template = QComboBox(page)
        self.template.addItem("Automatic (the model's own, else detected)", "")
        self.template.addItem("The model's own (embedded)", EMBEDDED)
        for name, family in FAMILIES.items():
            self.template.addItem(f"{name}  ({family.title})", name)
        self.template.currentIndexChanged.connect(self._on_edited)
        form.addRow("Chat template", self.template)
        self.set_ctx = QCheckBox("Set the context size", page)
        self.n_ctx = QSpinBox(page)
        self.n_ctx.setRange(0, 1 << 20)
        self.n_ctx.setSingleStep(CTX_STEP)
        self.n_ctx.setSpecialValueText("The model's own")
        self.n_ctx.setValue(4096)
        self.n_ctx.editingFinished.connect(self._round_ctx)
        form.addRow(self.set_ctx, self.n_ctx)
        self.set_layers = QCheckBox("Set the GPU layers", page)
        self.gpu_layers = QSpinBox(page)
        self.gpu_layers.setRange(AUTO_LAYERS, 999)
        self.gpu_layers.setSpecialValueText("Auto")
        self.gpu_layers.setToolTip("Auto = as many as fit; -1 = all; 0 = CPU only")
        form.addRow(self.set_layers, self.gpu_layers)
        for check, box in ((self.set_ctx, self.n_ctx), (self.set_layers, self.gpu_layers)):
            check.toggled.connect(box.setEnabled)
            check.toggled.connect(self._on_edited)
            box.valueChanged.connect(self._on_edited)
            box.setEnabled(False)
        unset = QLabel("Unset: the app's own settings (or the command line's) are used.", page)
        unset.setObjectName("Muted")
        form.addRow("", unset)
        self.loras = QTableWidget(0, 2, page)
        self.loras.setHorizontalHeaderLabels(["LoRA adapter (GGUF)", "Scale"])
        self.loras.verticalHeader().hide()
        self.loras.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.loras.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.loras.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.loras.setMinimumHeight(110)
        self.loras.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # keep the file name in view
        form.addRow("Adapters", self.loras)
        row = QHBoxLayout()
        self.add_lora = QPushButton("Add adapter…", page)
        self.add_lora.clicked.connect(self._on_add_lora)
        self.remove_lora = QPushButton("Remove", page)
        self.remove_lora.clicked.connect(self._on_remove_lora)
        row.addWidget(self.add_lora)
        row.addWidget(self.remove_lora)
        row.addStretch(1)
        form.addRow("", row)
        outer.addStretch(1)  # fields at the top, not spread over the page
        return page

    def _tools_tab(self) -> QWidget:
        page = QWidget(self)
        outer = QVBoxLayout(page)
        form = QFormLayout()
        outer.addLayout(form)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.tools = QLineEdit(page)
        self.tools.setPlaceholderText("for example: time, filesystem")
        self.tools.textEdited.connect(self._on_edited)
        form.addRow("Tools", self.tools)
        self.documents = QLineEdit(page)
        self.documents.setPlaceholderText("for example: contracts, handbook")
        self.documents.textEdited.connect(self._on_edited)
        form.addRow("Documents", self.documents)
        hint = QLabel(
            "Names separated by commas: the tools (or MCP servers) switched on in this assistant's "
            "chats, and the document collections it searches.",
            page,
        )
        hint.setObjectName("Muted")
        hint.setWordWrap(True)
        form.addRow("", hint)
        outer.addStretch(1)  # fields at the top, not spread over the page
        return page

    # ---- showing ----------------------------------------------------------------------------------------------
    def set_assistant(self, assistant: Assistant) -> None:
        self._quiet = True
        self._current = assistant
        self.name.setText(assistant.name)
        self.description.setText(assistant.description)
        self._defaults = dict(assistant.defaults)
        self.system_prompt.setPlainText(assistant.system_prompt)
        self._rebuild_variables(keep_typed=False)
        self._show_sampling(assistant.preset, assistant.sampling)
        self.reply_format.set_value(assistant.reply_format)
        self.template.setCurrentIndex(max(0, self.template.findData(assistant.template)))
        load = assistant.load
        self.set_ctx.setChecked(load.n_ctx is not None)
        self.n_ctx.setValue(4096 if load.n_ctx is None else load.n_ctx)
        self.set_layers.setChecked(load.n_gpu_layers is not None)
        self.gpu_layers.setValue(AUTO_LAYERS if load.n_gpu_layers is None else load.n_gpu_layers)
        self.loras.setRowCount(0)
        for adapter in load.loras:
            self._add_lora_row(str(adapter.path), adapter.scale)
        self.tools.setText(", ".join(assistant.tools))
        self.documents.setText(", ".join(assistant.documents))
        self._quiet = False

    def _show_sampling(self, preset: str, sampling: SamplingSettings) -> None:
        quiet, self._quiet = self._quiet, True
        self.preset.setCurrentIndex(max(0, self.preset.findData(preset if preset in PRESETS else CUSTOM_PRESET)))
        self.preset_help.setText(PRESET_HELP.get(preset, "Your own values."))
        for name, box in self.sampling_fields.items():
            box.setValue(getattr(sampling, name))  # type: ignore[attr-defined]
        self.seed.setText("" if sampling.seed is None else str(sampling.seed))
        self._quiet = quiet

    def set_read_only(self, read_only: bool) -> None:
        for widget in (self.name, self.description, self.seed, self.tools, self.documents):
            widget.setReadOnly(read_only)
        self.system_prompt.setReadOnly(read_only)
        for edit in self.variable_edits.values():
            edit.setReadOnly(read_only)
        for widget in (self.preset, self.template, self.set_ctx, self.set_layers, self.add_lora, self.remove_lora):
            widget.setEnabled(not read_only)
        for box in self.sampling_fields.values():
            box.setReadOnly(read_only)
        self.n_ctx.setEnabled(not read_only and self.set_ctx.isChecked())
        self.gpu_layers.setEnabled(not read_only and self.set_layers.isChecked())
        self.loras.setEnabled(not read_only)
        self.reply_format.set_read_only(read_only)

    # ---- reading ----------------------------------------------------------------------------------------------
    def sampling(self) -> tuple[str, SamplingSettings]:
        values: dict[str, Any] = {name: box.value() for name, box in self.sampling_fields.items()}  # type: ignore[attr-defined]
        seed = self.seed.text().strip()
        values["seed"] = int(seed) if seed else None
        known = {f.name for f in fields(SamplingSettings)}
        base = self._current.sampling if self._current else SamplingSettings()
        settings = replace(base, **{k: v for k, v in values.items() if k in known})
        preset = next((name for name, p in PRESETS.items() if p == settings), CUSTOM_PRESET)
        chosen = str(self.preset.currentData())
        if chosen in PRESETS and PRESETS[chosen] == settings:
            preset = chosen
        return preset, settings

    def assistant(self) -> Assistant:
        """The assistant as edited, validated (raises HearthError saying what to fix)."""
        base = self._current or Assistant(id="", name="")
        reply_format = self.reply_format.value()
        if reply_format is None:
            raise ConfigError(f"the reply schema is unusable: {self.reply_format.problem()}")
        preset, sampling = self.sampling()
        loras = []
        for row in range(self.loras.rowCount()):
            path = self.loras.item(row, 0).text().strip()
            scale = self.loras.cellWidget(row, 1)
            assert isinstance(scale, QDoubleSpinBox)
            if path:
                loras.append(LoraAdapter(Path(path).expanduser(), scale.value()))
        self._round_ctx()
        load = LoadOverrides(
            n_ctx=self.n_ctx.value() if self.set_ctx.isChecked() else None,
            n_gpu_layers=self.gpu_layers.value() if self.set_layers.isChecked() else None,
            loras=tuple(loras),
        )
        prompt = self.system_prompt.toPlainText()
        defaults = {name: edit.text() for name, edit in self.variable_edits.items() if edit.text()}
        return replace(
            base,
            name=self.name.text().strip(),
            description=self.description.text().strip(),
            system_prompt=prompt,
            defaults=defaults,
            template=str(self.template.currentData() or ""),
            preset=preset,
            sampling=sampling,
            reply_format=reply_format,
            load=load,
            tools=_names(self.tools.text()),
            documents=_names(self.documents.text()),
            builtin=False,
        ).validate()

    # ---- events -----------------------------------------------------------------------------------------------
    def _on_edited(self, *_args: object) -> None:
        if not self._quiet:
            self.edited.emit()

    def _on_prompt_edited(self) -> None:
        self._variables_timer.start()
        self._on_edited()

    def _rebuild_variables(self, keep_typed: bool = True) -> None:
        """One default field per {{variable}} of the system prompt (typed defaults survive the rebuild)."""
        self._variables_timer.stop()
        names = variables(self.system_prompt.toPlainText())
        if keep_typed:
            for name, edit in self.variable_edits.items():
                self._defaults[name] = edit.text()
            if names == tuple(self.variable_edits):
                return
        while self.variables_form.rowCount():
            self.variables_form.removeRow(0)
        self.variable_edits = {}
        for name in names:
            edit = QLineEdit(self.variables_box)
            edit.setPlaceholderText("no default: asked in each new chat")
            edit.setText(self._defaults.get(name, ""))
            edit.setReadOnly(self.system_prompt.isReadOnly())
            edit.textEdited.connect(self._on_edited)
            self.variable_edits[name] = edit
            self.variables_form.addRow(f"{{{{{name}}}}}", edit)
        if not names:
            none = QLabel("none", self.variables_box)
            none.setObjectName("Muted")
            self.variables_form.addRow(none)

    def _on_preset(self) -> None:
        name = str(self.preset.currentData())
        self.preset_help.setText(PRESET_HELP.get(name, "Your own values."))
        if self._quiet or name == CUSTOM_PRESET:
            return
        self._show_sampling(name, PRESETS[name])
        self._on_edited()

    def _on_sampling_field(self) -> None:
        if self._quiet:
            return
        preset, _ = self.sampling()
        quiet, self._quiet = self._quiet, True
        self.preset.setCurrentIndex(self.preset.findData(preset))
        self.preset_help.setText(PRESET_HELP.get(preset, "Your own values."))
        self._quiet = quiet
        self._on_edited()

    def _round_ctx(self) -> None:
        value = self.n_ctx.value()
        if value % CTX_STEP:
            self.n_ctx.setValue(max(CTX_STEP, round(value / CTX_STEP) * CTX_STEP))

    def _add_lora_row(self, path: str, scale: float) -> None:
        row = self.loras.rowCount()
        self.loras.insertRow(row)
        item = QTableWidgetItem(path)
        item.setToolTip(tooltip(path))
        self.loras.setItem(row, 0, item)
        box = QDoubleSpinBox(self.loras)
        box.setRange(-10.0, 10.0)
        box.setSingleStep(0.1)
        box.setDecimals(2)
        box.setValue(scale)
        box.setReadOnly(self.system_prompt.isReadOnly())
        box.valueChanged.connect(self._on_edited)
        self.loras.setCellWidget(row, 1, box)

    def ask_lora_path(self) -> str:
        """The adapter file the user picks ('' when cancelled). Tests replace this."""
        path, _ = QFileDialog.getOpenFileName(self, "Add a LoRA adapter", str(Path.home()), "GGUF files (*.gguf)")
        return path

    def _on_add_lora(self) -> None:
        path = self.ask_lora_path()
        if path:
            self._add_lora_row(path, 1.0)
            self._on_edited()

    def _on_remove_lora(self) -> None:
        rows = sorted({index.row() for index in self.loras.selectedIndexes()}, reverse=True)
        for row in rows:
            self.loras.removeRow(row)
        if rows:
            self._on_edited()
