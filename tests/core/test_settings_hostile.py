"""A hand-edited or hostile settings.json never stops Hearth: bad values fall back with a warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from app.core.errors import SettingsError
from app.core.settings import OPTIONS_BY_NAME, Settings


def settings_with(tmp_path: Path, values: dict | str) -> Settings:
    path = tmp_path / "settings.json"
    path.write_text(values if isinstance(values, str) else json.dumps(values))
    return Settings(path)


def test_a_deeply_nested_file_is_moved_aside(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, '{"theme": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert settings.get("theme") == "system"
    assert list(tmp_path.glob("settings.json.broken-*"))


def test_deep_structure_in_an_unknown_key_is_dropped_not_kept_forever(tmp_path: Path, caplog) -> None:
    deep: object = 1
    for _ in range(200):
        deep = [deep]
    with caplog.at_level(logging.WARNING, "hearth.settings"):
        settings = settings_with(tmp_path, {"from_the_future": deep, "other_future_key": [1, 2]})
    settings.set("theme", "dark")
    saved = json.loads((tmp_path / "settings.json").read_text())
    assert "from_the_future" not in saved and saved["other_future_key"] == [1, 2]
    assert "from_the_future" in caplog.text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("last_conversation", 10**20),  # past SQLite's integers: crashed opening the conversation
        ("last_conversation", 1e20),
        ("default_n_ctx", float("nan")),
        ("model_overrides", {"x.gguf": 5}),
        ("model_overrides", []),
        ("model_folders", "not a list"),
        ("default_system_prompt", "x" * 2_000_000),
        ("last_model", "/m/\x00.gguf"),
    ],
)
def test_bad_values_fall_back_with_a_warning(tmp_path: Path, caplog, name: str, value: object) -> None:
    with caplog.at_level(logging.WARNING, "hearth.settings"):
        settings = settings_with(tmp_path, {name: value})
    assert settings.get(name) == OPTIONS_BY_NAME[name].default
    assert name in caplog.text
    with pytest.raises(SettingsError):
        settings.set(name, value)


def test_bad_entries_inside_containers_are_dropped_the_rest_kept(tmp_path: Path, caplog) -> None:
    overrides = {
        "good.gguf": {"template": "chatml", "load": {"n_ctx": 8192, "kv_cache_type": "q8_0"}},
        "number.gguf": 5,
        "bad-load.gguf": {"load": {"n_ctx": "lots", "n_threads": 10**30, "n_gpu_layers": 12}},
        "bad-template.gguf": {"template": 7},
        "\x00.gguf": {"template": "chatml"},
    }
    folders = ["/models", 5, "", "/a\x00b", "/more"]
    with caplog.at_level(logging.WARNING, "hearth.settings"):
        settings = settings_with(tmp_path, {"model_overrides": overrides, "model_folders": folders})
    assert settings.get("model_folders") == ["/models", "/more"]
    assert settings.model_override("good.gguf") == overrides["good.gguf"]
    assert settings.model_override("number.gguf") == {}
    assert settings.model_override("bad-load.gguf") == {"load": {"n_gpu_layers": 12}}
    assert settings.model_override("bad-template.gguf") == {}
    assert "\x00.gguf" not in settings.get("model_overrides")
    assert caplog.text.count("ignoring") >= 5


def test_overrides_the_gui_writes_still_validate(tmp_path: Path) -> None:
    settings = Settings(tmp_path / "s.json")
    load = {"n_ctx": 4096, "n_gpu_layers": -2, "n_threads": 0, "flash_attention": "auto", "kv_cache_type": "f16"}
    settings.set_model_override("m.gguf", "load", load)
    settings.set_model_override("m.gguf", "template", "embedded:tool_use")
    assert Settings(tmp_path / "s.json").model_override("m.gguf") == {"load": load, "template": "embedded:tool_use"}
    with pytest.raises(SettingsError, match="n_ctx"):
        settings.set_model_override("m.gguf", "load", {"n_ctx": -5})
