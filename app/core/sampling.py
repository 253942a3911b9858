"""Sampling settings: declared with their ranges, validated before use, with named presets."""

from __future__ import annotations

import secrets
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
    """How the next token is chosen. Defaults follow llama.cpp's own defaults."""

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
        return self.seed if self.seed is not None else secrets.randbelow(MAX_SEED + 1)


PRESETS: dict[str, SamplingSettings] = {
    "balanced": SamplingSettings(),
    "precise": SamplingSettings(temperature=0.2, top_k=40, top_p=0.9, min_p=0.05, repeat_penalty=1.05),
    "creative": SamplingSettings(temperature=1.1, top_k=0, top_p=0.98, min_p=0.02, repeat_penalty=1.05),
    "deterministic": SamplingSettings(temperature=0.0, top_k=1, repeat_penalty=1.0, seed=0),
    # The values a popular Mistral-7B-Instruct tutorial recommends (temperature 0.9, top-k 55, top-p 0.93,
    # repetition penalty 1.2, up to 2048 new tokens).
    "mistral-tutorial": SamplingSettings(
        temperature=0.9, top_k=55, top_p=0.93, min_p=0.0, repeat_penalty=1.2, max_tokens=2048
    ),
}
PRESET_HELP: dict[str, str] = {
    "balanced": "llama.cpp's defaults: a good start for chat.",
    "precise": "Low temperature: factual answers, code, extraction.",
    "creative": "High temperature: stories, brainstorming.",
    "deterministic": "Always the most likely token: the same reply every time.",
    "mistral-tutorial": "Temperature 0.9, top-k 55, top-p 0.93, repetition penalty 1.2, up to 2048 tokens.",
}


def preset(name: str, **changes: Any) -> SamplingSettings:
    """A named preset, optionally with some fields changed; validated."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown sampling preset {name!r}; choose from {', '.join(PRESETS)}") from None
    return replace(base, **changes).validate() if changes else base
