"""Every load and sampling setting declared once: name, type, range or choices, label, help and CLI flag.

The settings dialog, the chat-settings panel (app/ui/field_editors.py) and the `hearth` command line flags
(app/cli/flags.py) are all built from these declarations, and app.core.settings derives its "default_*"
options from them, so a range, a choice or a special value ("auto", "all") is spelled in one place.

A field has a *stored* form (what settings.json, conversations and the CLI use: "auto"/"on"/"off" for flash
attention, -2 for auto GPU layers) and a *value* form (what LoadConfig / SamplingSettings hold: None/True/
False). Most fields store their value unchanged; choices map between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from app.core.errors import ConfigError
from app.core.load_config import (
    AUTO_LAYERS,
    CTX_GRANULARITY,
    KV_CACHE_TYPES,
    MAX_CTX,
    MAX_GPU_LAYERS,
    MAX_PARALLEL,
    LoadConfig,
)
from app.core.sampling import RANGES, SamplingSettings


@dataclass(frozen=True)
class Choice:
    """One allowed value: as stored, as shown, and as the config object holds it."""

    stored: Any
    label: str
    value: Any = None


@dataclass(frozen=True)
class Field:
    """One setting. Numeric fields have a range (and named special values); others have choices."""

    name: str  # the LoadConfig / SamplingSettings attribute
    label: str
    kind: type  # int, float or str (the stored form)
    default: Any  # stored form
    help: str
    minimum: float | None = None
    maximum: float | None = None
    step: float = 1
    decimals: int = 0
    choices: tuple[Choice, ...] = ()
    special: tuple[Choice, ...] = ()  # numbers with a name: -2 = "auto" GPU layers, 0 = "the model's own"
    multiple_of: int = 0  # e.g. the context must be a multiple of 256 (0 = any)
    optional: bool = False  # None allowed (an unset seed)
    flag: str = ""  # the CLI flag, e.g. "--ctx"
    panel: bool = True  # shown in the chat-settings panel

    def to_value(self, stored: Any) -> Any:
        """Stored form -> the config object's value."""
        for choice in self.choices:
            if choice.stored == stored:
                return choice.value
        return stored

    def to_stored(self, value: Any) -> Any:
        """The config object's value -> stored form."""
        for choice in self.choices:
            if choice.value == value and type(choice.value) is type(value):
                return choice.stored
        return value

    def validate(self, stored: Any) -> Any:
        """Return the stored value (ints accepted for floats) or raise ConfigError saying what is allowed."""
        if stored is None and self.optional:
            return None
        if self.choices:
            if stored not in [c.stored for c in self.choices]:
                allowed = ", ".join(str(c.stored) for c in self.choices)
                raise ConfigError(f"{self.label.lower()} must be one of {allowed}; got {stored!r}")
            return stored
        if self.kind is float and isinstance(stored, int) and not isinstance(stored, bool):
            stored = float(stored)
        if isinstance(stored, bool) or not isinstance(stored, (int, float)) or not isinstance(stored, self.kind):
            kind = "a whole number" if self.kind is int else "a number"
            raise ConfigError(f"{self.label.lower()} must be {kind}, not {stored!r}")
        if stored in [c.stored for c in self.special]:
            return stored
        number = float(stored)
        low = self.minimum if self.minimum is not None else float("-inf")
        high = self.maximum if self.maximum is not None else float("inf")
        if number != number or not low <= number <= high:  # NaN fails too
            raise ConfigError(f"{self.label.lower()} must be {self.range_text()}; got {stored!r}")
        if self.multiple_of and int(number) % self.multiple_of:
            lower = max(self.multiple_of, int(number) // self.multiple_of * self.multiple_of)
            raise ConfigError(
                f"{self.label.lower()} {stored} is not a multiple of {self.multiple_of}; use {lower} or "
                f"{lower + self.multiple_of}"
            )
        return stored

    def range_text(self) -> str:
        names = [f"{c.stored} ({c.label.lower()})" for c in self.special]
        number = (lambda x: f"{int(x)}") if self.kind is int else (lambda x: f"{x:g}")
        span = f"{number(self.minimum)} to {number(self.maximum)}"
        return ", ".join([*names, span]) if names else span

    def parse(self, text: str) -> Any:
        """A CLI argument -> stored form: a special value's name ("auto", "all"), a choice, or a number."""
        text = text.strip()
        for choice in (*self.special, *self.choices):
            if text.lower() in (str(choice.stored).lower(), choice.label.lower()):
                return choice.stored
        if self.choices:
            return text  # validate() names the allowed ones
        try:
            number = self.kind(text)
        except ValueError:
            names = ", ".join(c.label.lower() for c in self.special)
            also = f" or {names}" if names else ""
            raise ConfigError(f"{self.flag or self.name}: {text!r} is not a number{also}") from None
        return number


def _sampling_field(
    name: str, label: str, flag: str, *, step: float = 1, decimals: int = 0, panel: bool = True
) -> Field:
    limits = RANGES[name]
    default = getattr(SamplingSettings(), name)
    kind = float if decimals else int
    return Field(
        name,
        label,
        kind,
        default,
        limits.help,
        minimum=limits.low,
        maximum=limits.high,
        step=step,
        decimals=decimals,
        optional=name == "seed",
        flag=flag,
        panel=panel,
    )


LOAD_FIELDS: tuple[Field, ...] = (
    Field(
        "n_ctx",
        "Context",
        int,
        4096,
        "Context size in tokens (a multiple of 256); bigger needs more memory.",
        minimum=CTX_GRANULARITY,
        maximum=MAX_CTX,
        step=CTX_GRANULARITY,
        special=(Choice(0, "Model's own"),),
        multiple_of=CTX_GRANULARITY,
        flag="--ctx",
    ),
    Field(
        "n_gpu_layers",
        "GPU layers",
        int,
        AUTO_LAYERS,
        "Layers offloaded to the GPU: auto = as many as fit in free VRAM, all = every layer, 0 = CPU only.",
        minimum=0,
        maximum=MAX_GPU_LAYERS,
        special=(Choice(AUTO_LAYERS, "Auto"), Choice(-1, "All")),
        flag="--ngl",
    ),
    Field(
        "n_threads",
        "CPU threads",
        int,
        0,
        "Generation threads; auto = the number of physical cores.",
        minimum=1,
        maximum=1024,
        special=(Choice(0, "Auto"),),
        flag="--threads",
    ),
    Field(
        "flash_attention",
        "Flash attention",
        str,
        "auto",
        "Auto: on with a GPU where llama.cpp supports it, off on the CPU (it slows long chats there).",
        choices=(Choice("auto", "Auto", None), Choice("on", "On", True), Choice("off", "Off", False)),
        flag="--flash-attn",
    ),
    Field(
        "kv_cache_type",
        "KV cache",
        str,
        "f16",
        "Precision of the KV cache; q8_0 and q4_0 save memory and need flash attention.",
        choices=tuple(Choice(name, name, name) for name in KV_CACHE_TYPES),
        flag="--kv",
    ),
    Field(
        "n_parallel",
        "Parallel sequences",
        int,
        4,
        "Sequences decoded together (local server streams, cached conversations); they share the context.",
        minimum=1,
        maximum=MAX_PARALLEL,
        flag="--parallel",
        panel=False,
    ),
)

SAMPLING_FIELDS: tuple[Field, ...] = (
    _sampling_field("temperature", "Temperature", "--temperature", step=0.05, decimals=2),
    _sampling_field("top_k", "Top k", "--top-k"),
    _sampling_field("top_p", "Top p", "--top-p", step=0.01, decimals=2),
    _sampling_field("min_p", "Min p", "--min-p", step=0.01, decimals=2),
    _sampling_field("typical_p", "Typical p", "--typical-p", step=0.01, decimals=2, panel=False),
    _sampling_field("repeat_penalty", "Repeat penalty", "--repeat-penalty", step=0.01, decimals=2),
    _sampling_field("repeat_last_n", "Repeat last n", "--repeat-last-n", step=16, panel=False),
    _sampling_field("presence_penalty", "Presence penalty", "--presence-penalty", step=0.05, decimals=2),
    _sampling_field("frequency_penalty", "Frequency penalty", "--frequency-penalty", step=0.05, decimals=2),
    _sampling_field("mirostat", "Mirostat", "--mirostat", panel=False),
    _sampling_field("mirostat_tau", "Mirostat tau", "--mirostat-tau", step=0.1, decimals=2, panel=False),
    _sampling_field("mirostat_eta", "Mirostat eta", "--mirostat-eta", step=0.01, decimals=3, panel=False),
    _sampling_field("max_tokens", "Max tokens", "--max-tokens", step=64),
    _sampling_field("seed", "Seed", "--seed"),
)

LOAD = {f.name: f for f in LOAD_FIELDS}
# The settings that hold each load field's default for new loads (names older than these declarations).
DEFAULT_SETTING = {
    "n_ctx": "default_n_ctx",
    "n_gpu_layers": "default_n_gpu_layers",
    "n_threads": "default_threads",
    "flash_attention": "default_flash_attention",
    "kv_cache_type": "default_kv_cache_type",
    "n_parallel": "default_n_parallel",
}
SAMPLING = {f.name: f for f in SAMPLING_FIELDS}


def load_values(config: LoadConfig) -> dict[str, Any]:
    """A LoadConfig's declared fields in stored form (what settings and the panel keep)."""
    return {f.name: f.to_stored(getattr(config, f.name)) for f in LOAD_FIELDS}


def apply_load_values(config: LoadConfig, values: dict[str, Any]) -> LoadConfig:
    """config with the declared fields in `values` (stored form) applied, each validated; unknown keys are
    ignored (written by a newer Hearth). Raises ConfigError naming the first bad value."""
    changes = {}
    for name, stored in values.items():
        declared = LOAD.get(name)
        if declared is not None:
            changes[name] = declared.to_value(declared.validate(stored))
    return replace(config, **changes)


def apply_sampling_values(settings: SamplingSettings, values: dict[str, Any]) -> SamplingSettings:
    """settings with the declared fields in `values` applied, each validated."""
    known = {f.name for f in fields(SamplingSettings)}
    changes = {name: SAMPLING[name].validate(v) for name, v in values.items() if name in SAMPLING and name in known}
    return replace(settings, **changes).validate()
