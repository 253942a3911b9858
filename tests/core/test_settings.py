"""Settings: declared defaults, validation, atomic persistence, damaged files, observers, per-model values."""

from __future__ import annotations

import json

import pytest

from app.core.errors import SettingsError
from app.core.settings import OPTIONS, SCHEMA_VERSION, Settings


def test_defaults_and_persistence(tmp_path):
    path = tmp_path / "settings.json"
    settings = Settings(path)
    for option in OPTIONS:
        assert settings.get(option.name) == option.default
    settings.set("theme", "dark")
    settings.set("default_n_ctx", 8192)
    again = Settings(path)
    assert again.get("theme") == "dark" and again.get("default_n_ctx") == 8192
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION


@pytest.mark.parametrize(
    ("name", "value", "pattern"),
    [
        ("theme", "purple", "one of system, light, dark"),
        ("default_n_ctx", -1, "must be 0 .model's own., 256 to 1048576; got -1"),
        ("default_n_ctx", "4096", "must be int"),
        ("default_flash_attention", True, "must be str"),
        ("default_kv_cache_type", "q5", "one of f16, q8_0, q4_0"),
        ("default_n_ctx", True, "must be int"),
        ("model_folders", [1, 2], "list of strings"),
        ("no_such_setting", 1, "unknown setting"),
        ("hub_endpoint", "ftp://mirror.example", "http\\(s\\) URL"),
        ("hub_endpoint", "huggingface.co", "http\\(s\\) URL"),
    ],
)
def test_validation(tmp_path, name, value, pattern):
    with pytest.raises(SettingsError, match=pattern):
        Settings(tmp_path / "s.json").set(name, value)


def test_hub_endpoint_accepts_empty_and_http_urls(tmp_path):
    settings = Settings(tmp_path / "s.json")
    for value in ("", "https://hf-mirror.example", "http://127.0.0.1:8080"):
        settings.set("hub_endpoint", value)
        assert Settings(tmp_path / "s.json").get("hub_endpoint") == value


def test_damaged_file_is_moved_aside_never_fatal(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("{ this is not json")
    settings = Settings(path)
    assert settings.get("theme") == "system"
    assert list(tmp_path.glob("settings.json.broken-*"))


def test_invalid_values_fall_back_and_unknown_keys_survive(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"schema_version": 1, "theme": "neon", "from_the_future": [1, 2]}))
    settings = Settings(path)
    assert settings.get("theme") == "system"
    settings.set("theme", "light")
    assert json.loads(path.read_text())["from_the_future"] == [1, 2]


def test_observers_and_model_overrides(tmp_path):
    settings = Settings(tmp_path / "s.json")
    seen: list[str] = []
    unsubscribe = settings.subscribe(seen.append)
    settings.set("theme", "dark")
    settings.set("theme", "dark")  # unchanged: no notification
    settings.set_model_override("gemma.gguf", "template", "gemma")
    assert seen == ["theme", "model_overrides"]
    assert settings.model_override("gemma.gguf") == {"template": "gemma"}
    settings.set_model_override("gemma.gguf", "template", None)
    assert settings.model_override("gemma.gguf") == {}
    unsubscribe()
    settings.set("theme", "light")
    assert seen == ["theme", "model_overrides", "model_overrides"]


def test_returned_containers_are_copies(tmp_path):
    settings = Settings(tmp_path / "s.json")
    settings.get("model_folders").append("/sneaky")
    assert settings.get("model_folders") == []
