"""Sampling presets: each copies its published source's values, has a label and help, and old names load."""

from __future__ import annotations

import pytest

from app.core.errors import ConfigError
from app.core.sampling import (
    PRESET_ALIASES,
    PRESET_HELP,
    PRESET_LABELS,
    PRESETS,
    SamplingSettings,
    canonical_preset_name,
    preset,
    preset_label,
)


def test_every_preset_is_valid_labelled_and_explained():
    for name, settings in PRESETS.items():
        assert settings.validate() is settings
        assert PRESET_HELP[name] and PRESET_LABELS[name]
    assert set(PRESET_HELP) == set(PRESETS) == set(PRESET_LABELS)


@pytest.mark.parametrize(
    ("name", "values"),
    [
        # llama.cpp common/common.h: temp 0.80, top_k 40, top_p 0.95, min_p 0.05, penalty_repeat 1.00
        ("llama-cpp-defaults", {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0}),
        # Meta-Llama-3-8B-Instruct generation_config.json
        ("llama-3-instruct-card", {"temperature": 0.6, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.0}),
        # Qwen2.5-7B-Instruct generation_config.json
        ("qwen2.5-instruct-card", {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repeat_penalty": 1.05}),
        # gemma-3 generation_config.json
        ("gemma-3-card", {"temperature": 1.0, "top_k": 64, "top_p": 0.95, "min_p": 0.0}),
        ("mistral-nemo-card", {"temperature": 0.3}),
        (
            "mistral-7b-instruct-community",
            {"temperature": 0.9, "top_k": 55, "top_p": 0.93, "repeat_penalty": 1.2, "max_tokens": 2048},
        ),
    ],
)
def test_presets_copy_their_sources(name: str, values: dict[str, float]):
    settings = PRESETS[name]
    assert {key: getattr(settings, key) for key in values} == values


def test_old_names_still_load():
    assert PRESET_ALIASES == {"mistral-tutorial": "mistral-7b-instruct-community"}
    assert preset("mistral-tutorial") == PRESETS["mistral-7b-instruct-community"]
    assert canonical_preset_name("mistral-tutorial") == "mistral-7b-instruct-community"
    assert canonical_preset_name("no-such") == "no-such"
    assert preset_label("mistral-tutorial") == "Mistral 7B Instruct (community)"
    with pytest.raises(ConfigError, match="unknown sampling preset 'no-such'"):
        preset("no-such")


def test_balanced_says_honestly_what_it_is():
    assert PRESETS["balanced"] == SamplingSettings()
    assert PRESETS["balanced"].repeat_penalty == 1.1 != PRESETS["llama-cpp-defaults"].repeat_penalty
    assert "1.1" in PRESET_HELP["balanced"]
