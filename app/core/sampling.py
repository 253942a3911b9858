"""Sampling settings: declared with their ranges, validated before use, with named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from app.core.errors import ConfigError

MAX_SEED = 2**32 - 2  # 0xFFFFFFFF is llama.cpp's "random seed" marker


@dataclass(frozen=True)
class Range:
    """The allowed interval of one numeric setting and a sentence for the UI."""

    low: float
    high: float
    help: str


RANGES: dict[str, Range] = {
    "temperature": Range(0.0, 5.0, "Randomness; 0 always picks the most likely token."),
    "top_k": Range(0, 1000, "Keep only the k most likely tokens (0 = off)."),
    "top_p": Range(0.0, 1.0, "Keep the smallest set of tokens whose probabilities add up to p (1 = off)."),
    "min_p": Range(0.0, 1.0, "Drop tokens less likely than min_p times the most likely one (0 = off)."),
    "typical_p": Range(0.0, 1.0, "Locally typical sampling (1 = off)."),
    "repeat_penalty": Range(0.1, 5.0, "Penalise tokens seen recently (1 = off)."),
    "repeat_last_n": Range(-1, 1 << 20, "How many recent tokens the penalties look at (-1 = whole context)."),
    "presence_penalty": Range(-2.0, 2.0, "Penalise any token already present (0 = off)."),
    "frequency_penalty": Range(-2.0, 2.0, "Penalise tokens by how often they appeared (0 = off)."),
    "mirostat": Range(0, 2, "Mirostat version (0 = off); replaces top-k/top-p/min-p when on."),
    "mirostat_tau": Range(0.0, 20.0, "Mirostat target entropy."),
    "mirostat_eta": Range(0.0, 1.0, "Mirostat learning rate."),
    "seed": Range(0, MAX_SEED, "Fixed seed for reproducible replies (empty = a fresh seed per reply)."),
    "max_tokens": Range(1, 1 << 20, "Longest reply in tokens."),
}


@dataclass(frozen=True)
class SamplingSettings:
    """How the next token is chosen. Defaults follow llama.cpp's own, but for a light repetition penalty
    (1.1; llama.cpp's is 1.0 = off) and a finite reply length."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    seed: int | None = None
    max_tokens: int = 1024
    # (token id, bias) pairs added to the logits before sampling, as in OpenAI's API: -100 bans a token,
    # a large positive bias forces it. For scripts and tests; the GUI does not expose it.
    logit_bias: tuple[tuple[int, float], ...] = ()

    def validate(self) -> SamplingSettings:
        """Return self, or raise ConfigError naming the first setting out of range."""
        for token, bias in self.logit_bias:
            if not isinstance(token, int) or token < 0 or not -100.0 <= bias <= 100.0:
                raise ConfigError(f"logit bias needs a token id >= 0 and a bias from -100 to 100; got {token}, {bias}")
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "logit_bias" or (item.name == "seed" and value is None):
                continue
            limits = RANGES[item.name]
            integral = item.type in ("int", "int | None")
            if isinstance(value, bool) or not isinstance(value, int if integral else (int, float)):
                kind = "a whole number" if integral else "a number"
                raise ConfigError(f"{item.name} must be {kind}, not {value!r}")
            if value != value or not limits.low <= value <= limits.high:  # NaN fails too
                raise ConfigError(f"{item.name} must be between {limits.low:g} and {limits.high:g}; got {value!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingSettings:
        """Build from stored JSON, ignoring unknown keys (written by a newer Hearth); validates."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["logit_bias"] = tuple((int(t), float(b)) for t, b in values.get("logit_bias", ()))
        return cls(**values).validate()

    def request_seed(self) -> int:
        """The seed for one reply: the fixed one, else fresh randomness (llama.cpp's default seed
        gives the same reply in every process)."""
        import secrets  # here: the declared fields (every CLI flag) import this module, rarely a seed

        return self.seed if self.seed is not None else secrets.randbelow(MAX_SEED + 1)


# Hearth's own starting points, then the published configurations they copy, each named after its source.
# A model card's generation_config.json is applied by Hugging Face Transformers on top of its own defaults
# (top_k 50, top_p 1.0, temperature 1.0, repetition_penalty 1.0, no min-p), so a card preset sets those
# defaults for the fields its card leaves out, and min_p 0 (Transformers has no min-p by default).
PRESETS: dict[str, SamplingSettings] = {
    "balanced": SamplingSettings(),
    "precise": SamplingSettings(temperature=0.2, top_k=40, top_p=0.9, min_p=0.05, repeat_penalty=1.05),
    "creative": SamplingSettings(temperature=1.1, top_k=0, top_p=0.98, min_p=0.02, repeat_penalty=1.05),
    "deterministic": SamplingSettings(temperature=0.0, top_k=1, repeat_penalty=1.0, seed=0),
    # llama.cpp's common/common.h (vendored in llama-cpp-python 0.3.36): temp 0.80, top_k 40, top_p 0.95,
    # min_p 0.05, typ_p 1.00, penalty_last_n 64, penalty_repeat 1.00 (off).
    "llama-cpp-defaults": SamplingSettings(repeat_penalty=1.0),
    # meta-llama/Meta-Llama-3-8B-Instruct (and Llama-3.1-8B-Instruct) generation_config.json:
    # do_sample true, temperature 0.6, top_p 0.9.
    "llama-3-instruct-card": SamplingSettings(temperature=0.6, top_k=50, top_p=0.9, min_p=0.0, repeat_penalty=1.0),
    # Qwen/Qwen2.5-7B-Instruct generation_config.json: temperature 0.7, top_p 0.8, top_k 20,
    # repetition_penalty 1.05.
    "qwen2.5-instruct-card": SamplingSettings(temperature=0.7, top_k=20, top_p=0.8, min_p=0.0, repeat_penalty=1.05),
    # google/gemma-3-4b-it generation_config.json: do_sample true, top_k 64, top_p 0.95 (temperature unset:
    # Transformers' 1.0).
    "gemma-3-card": SamplingSettings(temperature=1.0, top_k=64, top_p=0.95, min_p=0.0, repeat_penalty=1.0),
    # mistralai/Mistral-Nemo-Instruct-2407 model card: "Mistral Nemo requires smaller temperatures. We
    # recommend to use a temperature of 0.3."
    "mistral-nemo-card": SamplingSettings(temperature=0.3, top_k=50, top_p=1.0, min_p=0.0, repeat_penalty=1.0),
    # The setup widely passed around for Mistral-7B-Instruct (temperature 0.9, top_k 55, top_p 0.93,
    # repetition_penalty 1.2, max_new_tokens 2048). Not Mistral's own: the v0.1 card samples with
    # Transformers' defaults (max_new_tokens 1000) and the v0.2 card's widget sets only temperature 0.7.
    "mistral-7b-instruct-community": SamplingSettings(
        temperature=0.9, top_k=55, top_p=0.93, min_p=0.0, repeat_penalty=1.2, max_tokens=2048
    ),
}
PRESET_HELP: dict[str, str] = {
    "balanced": "Hearth's default: llama.cpp's defaults with a light repetition penalty (1.1).",
    "precise": "Low temperature: factual answers, code, extraction.",
    "creative": "High temperature: stories, brainstorming.",
    "deterministic": "Always the most likely token: the same reply every time.",
    "llama-cpp-defaults": "llama.cpp's own defaults: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05.",
    "llama-3-instruct-card": "Meta's Llama 3 Instruct generation config: temperature 0.6, top-p 0.9.",
    "qwen2.5-instruct-card": "Qwen2.5 Instruct generation config: temperature 0.7, top-p 0.8, top-k 20, "
    "repetition penalty 1.05.",
    "gemma-3-card": "Google's Gemma 3 generation config: temperature 1.0, top-k 64, top-p 0.95.",
    "mistral-nemo-card": "Mistral Nemo's model card: temperature 0.3.",
    "mistral-7b-instruct-community": "A widely shared Mistral-7B-Instruct setup: temperature 0.9, top-k 55, "
    "top-p 0.93, repetition penalty 1.2, up to 2,048 tokens (not from Mistral's own card).",
}
PRESET_LABELS: dict[str, str] = {
    "balanced": "Balanced",
    "precise": "Precise",
    "creative": "Creative",
    "deterministic": "Deterministic",
    "llama-cpp-defaults": "llama.cpp defaults",
    "llama-3-instruct-card": "Llama 3 Instruct (model card)",
    "qwen2.5-instruct-card": "Qwen2.5 Instruct (model card)",
    "gemma-3-card": "Gemma 3 (model card)",
    "mistral-nemo-card": "Mistral Nemo (model card)",
    "mistral-7b-instruct-community": "Mistral 7B Instruct (community)",
}
# Names presets had before (stored conversations and settings still carry them) -> their names now.
PRESET_ALIASES: dict[str, str] = {"mistral-tutorial": "mistral-7b-instruct-community"}


def canonical_preset_name(name: str) -> str:
    """The current name of a preset named as an older Hearth stored it (unknown names come back unchanged)."""
    return PRESET_ALIASES.get(name, name)


def preset_label(name: str) -> str:
    """The name a person reads in a menu ("Qwen2.5 Instruct (model card)")."""
    name = canonical_preset_name(name)
    return PRESET_LABELS.get(name, name.replace("-", " ").capitalize())


def preset(name: str, **changes: Any) -> SamplingSettings:
    """A named preset, optionally with some fields changed; validated."""
    try:
        base = PRESETS[canonical_preset_name(name)]
    except KeyError:
        raise ConfigError(f"unknown sampling preset {name!r}; choose from {', '.join(PRESETS)}") from None
    return replace(base, **changes).validate() if changes else base
