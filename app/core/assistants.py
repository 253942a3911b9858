"""Assistants: saved chat setups (a system prompt with {{variables}}, template, sampling, reply format, load
settings, tools, documents). Built-ins for common tasks live here, read-only; the user's own are one JSON
file each in the data folder's assistants/ folder."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.core.chat_setup import CUSTOM_PRESET, ChatSetup, LoadOverrides
from app.core.errors import AssistantError, HearthError
from app.core.json_folder import JsonFolder, NewerFormatError, read_json_object, slug
from app.core.paths import AppPaths
from app.core.placeholders import fill, variables
from app.core.sampling import PRESETS, SamplingSettings, canonical_preset_name
from app.core.structured import JSON_SCHEMA, ReplyFormat
from app.core.template_families import FAMILIES
from app.core.templates import EMBEDDED

FORMAT = "hearth-assistant"
VERSION = 1
MAX_NAME = 80
MAX_TEXT = 100_000


@dataclass(frozen=True)
class Assistant:
    """A saved chat setup. `defaults` holds default values for the system prompt's {{variables}}."""

    id: str
    name: str
    description: str = ""
    system_prompt: str = ""
    defaults: dict[str, str] = field(default_factory=dict)
    template: str = ""  # "" = automatic; a family name, or "embedded"
    preset: str = "balanced"  # the preset the sampling came from, or "custom"
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    reply_format: ReplyFormat = field(default_factory=ReplyFormat)
    load: LoadOverrides = field(default_factory=LoadOverrides)
    tools: tuple[str, ...] = ()  # names of tools / MCP servers switched on
    documents: tuple[str, ...] = ()  # names of document collections to search
    builtin: bool = False

    @property
    def variables(self) -> tuple[str, ...]:
        """The {{variables}} of the system prompt, in order."""
        return variables(self.system_prompt)

    @property
    def missing_values(self) -> tuple[str, ...]:
        """The variables that have no default: a conversation must be given a value for each."""
        return tuple(name for name in self.variables if name not in self.defaults)

    def validate(self) -> Assistant:
        """Return self, or raise AssistantError (or ConfigError for sampling/format/load) saying what to fix."""
        name = self.name.strip() if isinstance(self.name, str) else ""
        if not name or len(name) > MAX_NAME or "\n" in name:
            raise AssistantError(f"an assistant needs a one-line name of 1 to {MAX_NAME} characters")
        for what in ("description", "system_prompt"):
            value = getattr(self, what)
            if not isinstance(value, str) or len(value) > MAX_TEXT:
                raise AssistantError(f"{what.replace('_', ' ')} must be text of at most {MAX_TEXT} characters")
        if not isinstance(self.defaults, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.defaults.items()
        ):
            raise AssistantError('variable defaults must be an object of text values, like {"language": "French"}')
        if not template_ok(self.template):
            raise AssistantError(
                f"unknown chat template {self.template!r}; use automatic (empty), {EMBEDDED} or one of "
                f"{', '.join(FAMILIES)}"
            )
        if self.preset != CUSTOM_PRESET and self.preset not in PRESETS:
            raise AssistantError(f"unknown sampling preset {self.preset!r}; choose from {', '.join(PRESETS)} or custom")
        self.sampling.validate()
        self.reply_format.validate()
        self.load.validate()
        for kind, names in (("tool", self.tools), ("document collection", self.documents)):
            if not all(isinstance(n, str) and n.strip() for n in names):
                raise AssistantError(f"every {kind} needs a name")
        return self

    # ---- use ------------------------------------------------------------------------------------------------
    def snapshot(self, values: Mapping[str, str] | None = None) -> dict[str, Any]:
        """What a conversation keeps of its assistant: everything, with its id and name, and the values."""
        data = self.to_dict(with_id=True)
        data["builtin"] = self.builtin
        data["values"] = dict(values or {})
        return json.loads(json.dumps(data))  # exactly what the history will hand back (lists, not tuples)

    def setup(self, values: Mapping[str, str] | None = None) -> ChatSetup:
        """The assistant applied to a new conversation: its system prompt filled in with values (else the
        defaults). Raises MissingValueError (a PromptError) naming every variable left without a value."""
        values = {k: v for k, v in (values or {}).items() if k in self.variables}
        return ChatSetup(
            system_prompt=fill(self.system_prompt, values, self.defaults),
            template=self.template,
            preset=self.preset,
            sampling=self.sampling,
            reply_format=self.reply_format,
            load=self.load,
            tools=self.tools,
            documents=self.documents,
            assistant=self.snapshot(values),
        )

    def copy(self, name: str | None = None) -> Assistant:
        """An editable copy (a new id, not built-in) named `name` or "NAME (copy)"."""
        return replace(self, id=new_id(name or self.name), name=name or f"{self.name} (copy)", builtin=False)

    # ---- JSON -----------------------------------------------------------------------------------------------
    def to_dict(self, *, with_id: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        if with_id:
            data["id"] = self.id
        data.update(
            {
                "name": self.name,
                "description": self.description,
                "system_prompt": self.system_prompt,
                "defaults": dict(self.defaults),
                "template": self.template,
                "preset": self.preset,
                "sampling": self.sampling.to_dict(),
                "reply_format": self.reply_format.to_dict(),
                "load": self.load.to_dict(),
                "tools": list(self.tools),
                "documents": list(self.documents),
            }
        )
        return data

    @classmethod
    def from_dict(cls, data: Any, *, assistant_id: str | None = None) -> Assistant:
        """From an assistant file or an export; validated. Unknown keys (from a newer Hearth) are ignored.

        Raises AssistantError/ConfigError naming the first problem; NewerFormatError for a newer version.
        """
        if not isinstance(data, dict):
            raise AssistantError("an assistant must be a JSON object")
        if data.get("format", FORMAT) != FORMAT:
            raise AssistantError(f"not a Hearth assistant (format {data.get('format')!r})")
        version = data.get("version", VERSION)
        if not isinstance(version, int) or version > VERSION:
            raise NewerFormatError(f"assistant format version {version!r} is newer than this Hearth's ({VERSION})")
        item_id = assistant_id or data.get("id")
        if not isinstance(item_id, str) or not item_id:
            raise AssistantError("an assistant needs an id")
        preset = canonical_preset_name(_text(data, "preset", "balanced"))
        sampling_data = data.get("sampling")
        if sampling_data is None:
            sampling = PRESETS.get(preset, SamplingSettings())
        elif isinstance(sampling_data, dict):
            try:
                sampling = SamplingSettings.from_dict(sampling_data)
            except (TypeError, ValueError) as exc:
                raise AssistantError(f"sampling settings unusable: {exc}") from None
        else:
            raise AssistantError("sampling must be an object of settings")
        defaults = data.get("defaults") or {}
        return cls(
            id=item_id,
            name=_text(data, "name", "").strip(),
            description=_text(data, "description", ""),
            system_prompt=_text(data, "system_prompt", ""),
            defaults=dict(defaults) if isinstance(defaults, dict) else defaults,
            template=_text(data, "template", ""),
            preset=preset,
            sampling=sampling,
            reply_format=ReplyFormat.from_dict(data.get("reply_format")),
            load=LoadOverrides.from_dict(data.get("load")),
            tools=_names(data, "tools"),
            documents=_names(data, "documents"),
        ).validate()


def _text(data: dict[str, Any], key: str, default: str) -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise AssistantError(f"{key.replace('_', ' ')} must be text, not {type(value).__name__}")
    return value


def _names(data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise AssistantError(f"{key} must be a list of names")
    return tuple(dict.fromkeys(v.strip() for v in value))


def template_ok(template: str) -> bool:
    return isinstance(template, str) and (
        template in ("", EMBEDDED) or template in FAMILIES or template.startswith(EMBEDDED + ":")
    )


def new_id(name: str) -> str:
    """A file-name-safe id that never collides with a built-in's (those have no hex suffix)."""
    return f"{slug(name)}-{uuid.uuid4().hex[:8]}"


# ---- built-ins ------------------------------------------------------------------------------------------

EXTRACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "description": "one sentence"},
        "people": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "role": {"type": ["string", "null"]}},
                "required": ["name", "role"],
                "additionalProperties": False,
            },
        },
        "organisations": {"type": "array", "items": {"type": "string"}},
        "places": {"type": "array", "items": {"type": "string"}},
        "dates": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["summary", "people", "organisations", "places", "dates"],
    "additionalProperties": False,
}
CLASSIFICATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"category": {"type": "string"}, "reason": {"type": "string"}},
    "required": ["category", "reason"],
    "additionalProperties": False,
}
_PRECISE = PRESETS["precise"]

BUILTINS: tuple[Assistant, ...] = (
    Assistant(
        id="translator",
        name="Translator",
        description="Translates what you send into the language you choose.",
        system_prompt=(
            "You are a translator. Translate the text the user sends into {{target language}}. Keep its "
            "meaning, tone and formatting (Markdown, line breaks, names, numbers). Reply with the translation "
            "only: no notes, no explanations, no quotation marks around it."
        ),
        defaults={"target language": "English"},
        preset="precise",
        sampling=replace(_PRECISE, max_tokens=2048),
        builtin=True,
    ),
    Assistant(
        id="summariser",
        name="Summariser",
        description="Summarises the text you send, keeping facts, names and numbers.",
        system_prompt=(
            "Summarise the text the user sends in {{length}}. Keep the key facts, names and numbers; add nothing "
            "that is not in the text. Write in the language of the text."
        ),
        defaults={"length": "a short paragraph"},
        preset="precise",
        sampling=_PRECISE,
        builtin=True,
    ),
    Assistant(
        id="json-extractor",
        name="Text to JSON",
        description="Pulls people, organisations, places and dates out of a text as JSON.",
        system_prompt=(
            "Extract facts from the text the user sends as JSON: a one-sentence summary, the people (name and "
            "role, null when the text gives none), organisations, places and dates. Use only what the text "
            "says; an empty list when it names none."
        ),
        preset="deterministic",
        sampling=replace(PRESETS["deterministic"], max_tokens=2048),
        reply_format=ReplyFormat(JSON_SCHEMA, EXTRACTION_SCHEMA),
        builtin=True,
    ),
    Assistant(
        id="classifier",
        name="Classifier",
        description="Puts the text you send into one of your categories, with a reason.",
        system_prompt=(
            "Classify the text the user sends into exactly one of these categories: {{categories}}. Reply with "
            "JSON: the category, written exactly as listed, and a short reason."
        ),
        defaults={"categories": "positive, negative, neutral"},
        preset="deterministic",
        sampling=replace(PRESETS["deterministic"], max_tokens=256),
        reply_format=ReplyFormat(JSON_SCHEMA, CLASSIFICATION_SCHEMA),
        builtin=True,
    ),
)
BUILTIN_IDS = frozenset(a.id for a in BUILTINS)


# ---- the library ----------------------------------------------------------------------------------------


class AssistantLibrary:
    """The built-in assistants and the user's, saved under `folder` (paths.assistants_dir).

    Files are read afresh on each listing (a few small files), so two windows or the CLI never disagree.
    An unreadable or invalid file is moved aside (NAME.json.broken-TIME) and reported in `problems`.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._files = JsonFolder(self.folder, "assistant", self._parse, AssistantError)

    @classmethod
    def default(cls, paths: AppPaths | None = None) -> AssistantLibrary:
        return cls((paths or AppPaths.default()).assistants_dir)

    @property
    def problems(self) -> list[str]:
        """What was wrong with the files at the last listing (each moved aside, or skipped if newer)."""
        return list(self._files.problems)

    def _parse(self, data: dict[str, Any]) -> Assistant:
        assistant = Assistant.from_dict(data)
        if assistant.id in BUILTIN_IDS:
            raise AssistantError(f"the id {assistant.id!r} belongs to a built-in assistant")
        return assistant

    def user_assistants(self) -> list[Assistant]:
        found: dict[str, Assistant] = {}
        for loaded in self._files.read_all():
            if loaded.path.stem != loaded.item.id:  # a copied file: its name decides, so ids stay unique
                loaded = replace(loaded, item=replace(loaded.item, id=loaded.path.stem))
            found[loaded.item.id] = loaded.item
        return sorted(found.values(), key=lambda a: a.name.lower())

    def all(self) -> list[Assistant]:
        """The built-ins first, then the user's by name."""
        return [*BUILTINS, *self.user_assistants()]

    def find(self, name_or_id: str) -> Assistant | None:
        """By id, else by name (case-insensitive)."""
        wanted = name_or_id.strip()
        everyone = self.all()
        for assistant in everyone:
            if assistant.id == wanted:
                return assistant
        return next((a for a in everyone if a.name.lower() == wanted.lower()), None)

    def get(self, name_or_id: str) -> Assistant:
        assistant = self.find(name_or_id)
        if assistant is None:
            names = ", ".join(a.name for a in self.all())
            raise AssistantError(f"no assistant named {name_or_id!r}; there are: {names}")
        return assistant

    def save(self, assistant: Assistant) -> Assistant:
        """Create or update a user assistant (validated; names are unique). Built-ins cannot be changed."""
        if assistant.builtin or assistant.id in BUILTIN_IDS:
            raise AssistantError(f"{assistant.name} is built in and cannot be changed; duplicate it first")
        if not assistant.id or not _id_ok(assistant.id):
            assistant = replace(assistant, id=new_id(assistant.name))
        assistant = replace(assistant, name=assistant.name.strip()).validate()
        clash = self.find(assistant.name)
        if clash is not None and clash.id != assistant.id:
            raise AssistantError(f"there is already an assistant named {clash.name!r}; choose another name")
        self._files.write(assistant.id, assistant.to_dict())
        return assistant

    def duplicate(self, name_or_id: str, new_name: str | None = None) -> Assistant:
        """Save an editable copy of any assistant (a built-in included), named uniquely."""
        original = self.get(name_or_id)
        return self.save(original.copy(self.unique_name(new_name or f"{original.name} (copy)")))

    def delete(self, name_or_id: str) -> Assistant:
        assistant = self.get(name_or_id)
        if assistant.builtin:
            raise AssistantError(f"{assistant.name} is built in and cannot be deleted")
        self._files.remove(assistant.id)
        return assistant

    def unique_name(self, name: str) -> str:
        """name, or "name (2)", "name (3)" ... whichever is free."""
        taken = {a.name.lower() for a in self.all()}
        candidate, number = name.strip(), 2
        while candidate.lower() in taken:
            candidate = f"{name.strip()} ({number})"
            number += 1
        return candidate

    # ---- import / export ----------------------------------------------------------------------------------
    def import_data(self, data: Any) -> Assistant:
        """Save an exported assistant as a new one (a new id; " (2)" added if its name is taken)."""
        if isinstance(data, dict) and isinstance(data.get("assistant"), dict):
            data = data["assistant"]
        try:
            assistant = Assistant.from_dict(data, assistant_id="import")
        except NewerFormatError as exc:
            raise AssistantError(f"{exc}; update Hearth to import it") from None
        assistant = replace(assistant, id=new_id(assistant.name), name=self.unique_name(assistant.name))
        return self.save(assistant)

    def import_file(self, path: Path) -> Assistant:
        """Import an assistant JSON file. Nothing is saved unless the whole file is valid."""
        path = Path(path).expanduser()
        try:
            data = read_json_object(path)
        except FileNotFoundError:
            raise AssistantError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise AssistantError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        except ValueError as exc:
            raise AssistantError(f"{path.name} is {exc}") from None
        try:
            return self.import_data(data)
        except HearthError as exc:
            raise AssistantError(f"{path.name}: {exc}") from None

    def export_text(self, name_or_id: str) -> str:
        """The assistant as a JSON document another Hearth can import (without its local id)."""
        return json.dumps(self.get(name_or_id).to_dict(with_id=False), indent=2, ensure_ascii=False) + "\n"


def _id_ok(item_id: str) -> bool:
    return slug(item_id, limit=60) == item_id and item_id not in BUILTIN_IDS


def load_assistant(name: str, paths: AppPaths | None = None) -> Assistant:
    """The assistant called `name` (or with that id) from the user's data folder or the built-ins.
    Raises AssistantError listing the names there are."""
    return AssistantLibrary.default(paths).get(name)
