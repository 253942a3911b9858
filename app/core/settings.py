"""User settings, declared once as data (type, default, range, help), validated, migrated, saved as JSON.

A bad or hand-edited settings file never stops Hearth: unreadable files are moved aside, invalid values fall
back to their defaults (and are logged). Observers get the name of each changed setting; the GUI bridges
that to a Qt signal, the core never imports Qt.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from app.core.errors import ConfigError, SettingsError
from app.core.fields import DEFAULT_SETTING, LOAD_FIELDS, Field
from app.core.remote_servers import servers_problem

log = logging.getLogger("hearth.settings")

SCHEMA_VERSION = 1


def _http_url_problem(url: str) -> str | None:
    """Empty (the default endpoint) or an http(s) URL with a host."""
    parsed = urlparse(url.strip())
    if url.strip() and (parsed.scheme not in ("http", "https") or not parsed.netloc):
        return f"the endpoint must be an http(s) URL like https://huggingface.co; got {url!r}"
    return None


MAX_TEXT = 1_000_000  # any string setting (a system prompt is the longest real one)
MAX_DEPTH = 16  # nesting of a list or dict setting
MAX_INT = 2**63 - 1  # what SQLite ids and every consumer can hold


def _json_problem(value: Any, depth: int = 0) -> str | None:
    """Why value is not plain bounded JSON (nested too deep, a non-finite number, a huge integer)."""
    if depth > MAX_DEPTH:
        return f"nested more than {MAX_DEPTH} levels deep"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return "has a key that is not text"
            if problem := _json_problem(item, depth + 1):
                return problem
    elif isinstance(value, list):
        for item in value:
            if problem := _json_problem(item, depth + 1):
                return problem
    elif isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not a finite number"
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        return "holds a number too large"
    elif isinstance(value, str) and len(value) > MAX_TEXT:
        return f"holds a text of more than {MAX_TEXT:,} characters"
    elif not isinstance(value, (dict, list, str, int, float, bool)) and value is not None:
        return f"holds a {type(value).__name__}"
    return None


def _path_problem(text: str) -> str | None:
    """A file or folder path: not empty, no NUL (every file API refuses it), of a sane length."""
    if not text.strip():
        return "an empty path"
    if "\x00" in text:
        return "a path with a NUL character"
    if len(text) > 4096:
        return "a path of more than 4,096 characters"
    return None


@dataclass(frozen=True)
class Option:
    """One setting: its JSON type, default, allowed range or choices, and a sentence for the UI.

    items checks each element of a list or each (key, value) of a dict and returns the element to keep
    (or raises SettingsError): a bad element read from the file is dropped with a warning, the rest kept.
    """

    name: str
    kind: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None  # a further rule: the problem in words, or None
    items: Callable[[Any, Any, bool], Any] | None = None  # (key or index, element, strict) -> element to keep

    def validate(self, value: Any) -> Any:
        """Return the value (ints accepted for floats) or raise SettingsError saying what is allowed."""
        return self.clean(value, strict=True)[0]

    def clean(self, value: Any, *, strict: bool = False) -> tuple[Any, list[str]]:
        """(value, problems): strict raises on any problem; otherwise bad elements of a list or dict are
        dropped and listed, and only a bad whole value raises."""
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            raise SettingsError(f"{self.name} must be {self.kind.__name__}, not {type(value).__name__}")
        if self.items is None and (problem := _json_problem(value)):
            raise SettingsError(f"{self.name} {problem}")
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            raise SettingsError(f"{self.name} must be one of {allowed}; got {value!r}")
        checked: Any = value  # of self.kind now (isinstance against a type held in a field: mypy loses it)
        minimum = self.minimum if self.minimum is not None else (-MAX_INT if self.kind is int else None)
        maximum = self.maximum if self.maximum is not None else (MAX_INT if self.kind is int else None)
        if minimum is not None and checked < minimum:
            raise SettingsError(f"{self.name} must be at least {minimum}; got {value}")
        if maximum is not None and checked > maximum:
            raise SettingsError(f"{self.name} must be at most {maximum}; got {_brief(value)}")
        if self.kind is list and not all(isinstance(v, str) for v in checked) and self.items is None:
            raise SettingsError(f"{self.name} must be a list of strings")
        problems: list[str] = []
        if self.items is not None:
            value = self._clean_items(value, strict, problems)
        if self.check is not None and (problem := self.check(value)):
            raise SettingsError(f"{self.name}: {problem}")
        return value, problems

    def _clean_items(self, value: Any, strict: bool, problems: list[str]) -> Any:
        assert self.items is not None
        pairs = value.items() if isinstance(value, dict) else enumerate(value)
        kept: list[tuple[Any, Any]] = []
        for key, item in pairs:
            try:
                item = self.items(key, item, strict)
                if problem := _json_problem(item, 1):
                    raise SettingsError(f"{_brief(key)} {problem}")
                kept.append((key, item))
            except SettingsError as exc:
                if strict:
                    raise SettingsError(f"{self.name}: {exc}") from None
                problems.append(f"{self.name}: {exc}")
        return dict(kept) if isinstance(value, dict) else [item for _, item in kept]


def _brief(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 30 else text[:27] + "..."


def _folder(_index: Any, value: Any, _strict: bool) -> str:
    if not isinstance(value, str):
        raise SettingsError(f"must be a list of strings; {_brief(value)!r} is not one")
    if problem := _path_problem(value):
        raise SettingsError(f"{problem}: {value[:80]!r}")
    return value


def _model_override(model_key: Any, entry: Any, strict: bool) -> dict[str, Any]:
    """One model's overrides: {"template": name, "load": {setting: value}}; load values are checked by the
    matching default_* option (one place for their ranges), other keys must be plain JSON."""
    if not isinstance(model_key, str) or (problem := _path_problem(model_key)):
        raise SettingsError(f"a model file name that is {problem or 'not text'}")
    if not isinstance(entry, dict):
        raise SettingsError(f"{model_key[:80]!r} must map to an object, not {type(entry).__name__}")
    cleaned: dict[str, Any] = {}
    for key, value in entry.items():
        if key == "template":
            if not isinstance(value, str) or len(value) > 200:
                raise SettingsError(f"{model_key[:80]!r}: template must be a name, not {_brief(value)!r}")
        elif key == "load":
            value = _load_overrides(model_key, value, strict)
        cleaned[key] = value
    return cleaned


def _load_overrides(model_key: str, load: Any, strict: bool) -> dict[str, Any]:
    if not isinstance(load, dict):
        raise SettingsError(f"{model_key[:80]!r}: load must be an object")
    cleaned: dict[str, Any] = {}
    for key, value in load.items():
        option = OPTIONS_BY_NAME.get(DEFAULT_SETTING.get(key, ""))  # checked like the default it overrides
        if option is not None:
            try:
                value = option.validate(value)
            except SettingsError as exc:
                if strict:
                    raise SettingsError(f"{model_key[:80]!r}: load setting {key}: {exc}") from None
                log.warning("ignoring %s's load setting %s: %s", model_key[:80], key, exc)
                continue
        elif problem := _json_problem(value, 2):  # others (the adapters list ...): their readers check them
            if strict:
                raise SettingsError(f"{model_key[:80]!r}: load setting {key} {problem}")
            log.warning("ignoring %s's load setting %s: %s", model_key[:80], key, problem)
            continue
        cleaned[key] = value
    return cleaned


def _from_field(name: str, declared: Field) -> Option:
    """A "default_*" option for a declared load field: same type, default, rules and help."""

    def problem(value: Any) -> str | None:
        try:
            declared.validate(value)
        except ConfigError as exc:
            return str(exc)
        return None

    return Option(name, declared.kind, declared.default, f"Default for new loads. {declared.help}", check=problem)


OPTIONS: tuple[Option, ...] = (
    Option("model_folders", list, [], "Extra folders scanned (recursively) for GGUF files.", items=_folder),
    Option(
        "scan_external_libraries",
        bool,
        True,
        "Also list GGUF files from the Hugging Face cache and the LM Studio and GPT4All model folders.",
    ),
    Option("theme", str, "system", "Colour theme.", choices=("system", "light", "dark")),
    Option(
        "hub_endpoint",
        str,
        "",
        "Hugging Face Hub endpoint for mirrors; empty means HF_ENDPOINT or the Hub.",
        check=lambda url: _http_url_problem(url),
    ),
    *(_from_field(DEFAULT_SETTING[field.name], field) for field in LOAD_FIELDS),
    Option(
        "conversation_cache_mib",
        int,
        2048,
        "Disk space for conversations' saved KV caches, so they reopen without re-reading (0 = off).",
        0,
        1 << 20,
    ),
    Option("default_sampling_preset", str, "balanced", "Sampling preset for new conversations."),
    Option("default_system_prompt", str, "", "System prompt for new conversations."),
    Option(
        "last_model",
        str,
        "",
        "The model loaded last time (path).",
        check=lambda path: _path_problem(path) if path else None,
    ),
    Option(
        "embedding_model",
        str,
        "",
        "GGUF embedding model for document search (path); empty means keyword (BM25) search only.",
    ),
    Option("last_conversation", int, 0, "The conversation open last time (id).", 0, MAX_INT),
    Option("window_geometry", str, "", "Main window geometry (base64 of Qt's saveGeometry)."),
    Option("window_state", str, "", "Main window splitter and panel state (base64)."),
    Option(
        "model_overrides",
        dict,
        {},
        "Per-model settings keyed by model file name: template, load settings.",
        items=_model_override,
    ),
    Option(
        "remote_servers",
        dict,
        {},
        "OpenAI-compatible servers by name: base URL and key policy (keys live in the OS keyring).",
        check=servers_problem,
    ),
    # The local OpenAI-compatible server (app/core/server); the app starts it when server_enabled is on.
    Option("server_enabled", bool, False, "Serve the loaded model to other apps over an OpenAI-compatible API."),
    Option("server_port", int, 8080, "Port of the local server.", 1, 65535),
    Option("server_api_key", str, "", "Key API clients must send (Authorization: Bearer KEY); empty: none."),
    Option(
        "server_allow_network",
        bool,
        False,
        "Let other devices on your network use the server (listens on every address; needs an API key).",
    ),
    Option("server_save_history", bool, False, "Save conversations from API clients to the history."),
    Option("server_cors_origins", list, [], "Web pages (origins) allowed to call the server from a browser."),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


def _migrate(data: dict[str, Any], version: int) -> dict[str, Any]:
    """Bring a settings dict from an older schema version to SCHEMA_VERSION (one step per version)."""
    # Version 1 is the first schema; future renames/conversions go here as `if version < N: ...`.
    return data


class Settings:
    """The settings file, loaded once; `set` validates, saves atomically and notifies observers."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._values: dict[str, Any] = {}
        self._observers: list[Callable[[str], None]] = []
        self._load()

    def _load(self) -> None:
        raw: dict[str, Any] = {}
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                if not isinstance(raw, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
                exc = exc if not isinstance(exc, RecursionError) else ValueError("nested too deep")
                aside = self.path.with_name(f"{self.path.name}.broken-{int(time.time())}")
                log.warning("settings file %s unreadable (%s); moved to %s, using defaults", self.path, exc, aside)
                try:
                    os.replace(self.path, aside)
                except OSError:
                    pass
                raw = {}
        version = raw.pop("schema_version", SCHEMA_VERSION) if raw else SCHEMA_VERSION
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            log.warning(
                "settings schema %r is newer than this Hearth (%d); unknown keys kept",
                version,
                SCHEMA_VERSION,
            )
            version = SCHEMA_VERSION
        raw = _migrate(raw, version)
        for name, value in raw.items():
            option = OPTIONS_BY_NAME.get(name)
            if option is None:
                if problem := _json_problem(value):  # kept verbatim, so it must stay plain, bounded JSON
                    log.warning("ignoring unknown setting %s: %s", name[:80], problem)
                else:
                    self._values[name] = value  # keep what a newer version wrote; never lose user data
                continue
            try:
                self._values[name], problems = option.clean(value)
            except SettingsError as exc:
                log.warning("ignoring invalid setting: %s", exc)
                continue
            for problem in problems:
                log.warning("ignoring part of a setting: %s", problem)

    def get(self, name: str) -> Any:
        option = OPTIONS_BY_NAME.get(name)
        if option is None:
            raise SettingsError(f"unknown setting {name!r}")
        value = self._values.get(name, option.default)
        return json.loads(json.dumps(value)) if isinstance(value, (list, dict)) else value

    def set(self, name: str, value: Any) -> None:
        option = OPTIONS_BY_NAME.get(name)
        if option is None:
            raise SettingsError(f"unknown setting {name!r}")
        value = option.validate(value)
        if self._values.get(name, option.default) == value:
            return
        self._values[name] = value
        self.save()
        for observer in list(self._observers):
            observer(name)

    def subscribe(self, observer: Callable[[str], None]) -> Callable[[], None]:
        """Call observer(name) after each change; returns a function that unsubscribes."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def model_override(self, model_key: str) -> dict[str, Any]:
        """Per-model settings (e.g. {"template": "chatml"}); empty when the user never changed any."""
        return dict(self.get("model_overrides").get(model_key, {}))

    def set_model_override(self, model_key: str, name: str, value: Any) -> None:
        """Set (or with value None, clear) one per-model setting."""
        overrides = self.get("model_overrides")
        entry = overrides.setdefault(model_key, {})
        if value is None:
            entry.pop(name, None)
            if not entry:
                overrides.pop(model_key)
        else:
            entry[name] = value
        self.set("model_overrides", overrides)

    def save(self) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a settings file."""
        data = {"schema_version": SCHEMA_VERSION, **self._values}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".json", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise SettingsError(f"cannot save settings to {self.path}: {exc.strerror or exc}") from exc
