"""LoRA adapters attached to a model in the settings: stored in its load override, applied by configured_load
(the app, `hearth chat` and the fit estimate all load through it), kept when other load settings change, and a
damaged entry skipped without stopping the load."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.errors import ConfigError
from app.core.load_config import LoadConfig, LoraAdapter
from app.core.load_policy import configured_load, model_loras, save_model_load
from app.core.paths import AppPaths
from app.core.settings import Settings


@pytest.fixture
def settings(hearth_home: AppPaths) -> Settings:
    return Settings(hearth_home.ensure().settings_file)


def test_adapters_are_stored_per_model_and_applied(settings: Settings, hearth_home: AppPaths) -> None:
    adapters = (LoraAdapter(Path("/m/style.gguf"), 0.8), LoraAdapter(Path("/m/facts.gguf"), -0.5))
    save_model_load(settings, "base.gguf", loras=adapters)
    save_model_load(settings, "base.gguf", values={"n_ctx": 8192})  # other settings keep the adapters
    assert configured_load(settings, "base.gguf").loras == adapters
    assert configured_load(settings, "base.gguf").n_ctx == 8192
    assert configured_load(settings, "other.gguf").loras == ()
    assert configured_load(settings, "base.gguf", loras=()).loras == ()  # a caller may replace them
    reread = Settings(hearth_home.settings_file)  # written to the settings file
    assert model_loras(reread, "base.gguf") == adapters
    assert reread.model_override("base.gguf")["load"]["loras"][0] == {"path": "/m/style.gguf", "scale": 0.8}
    save_model_load(settings, "base.gguf", loras=())
    assert "loras" not in settings.model_override("base.gguf")["load"]


def test_a_damaged_entry_is_skipped(settings: Settings) -> None:
    settings.set_model_override(
        "base.gguf",
        "load",
        {"loras": [{"path": "/m/good.gguf", "scale": 1}, {"path": 3}, "x.gguf", {"path": "/m/hot.gguf", "scale": 99}]},
    )
    assert configured_load(settings, "base.gguf").loras == (LoraAdapter(Path("/m/good.gguf"), 1.0),)


def test_lora_adapter_dict_form_round_trips_and_refuses_bad_values() -> None:
    adapter = LoraAdapter(Path("/m/a.gguf"), 0.25)
    assert LoraAdapter.from_dict(adapter.to_dict()) == adapter
    config = LoadConfig(loras=(adapter,))
    assert LoadConfig.from_dict(config.to_dict()) == config
    for bad, pattern in (
        ({"path": ""}, "must be stored as"),
        ({"path": "a.gguf", "scale": "1"}, "scale must be a number"),
        ({"path": "a.gguf", "scale": 11}, "between -10 and 10"),
        (["a.gguf"], "must be stored as"),
    ):
        with pytest.raises(ConfigError, match=pattern):
            LoraAdapter.from_dict(bad)
