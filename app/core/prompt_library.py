"""The prompt library: reusable prompts with {{variables}} (built-ins for translating, summarising and
extracting, and the user's own, one JSON file each), search for the `/` picker, import and export as JSON."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.core.errors import HearthError, PromptError
from app.core.json_folder import JsonFolder, NewerFormatError, slug
from app.core.paths import AppPaths
from app.core.placeholders import fill, variables

FORMAT = "hearth-prompts"
VERSION = 1
MAX_NAME = 80
MAX_TEXT = 100_000
MAX_IMPORT = 1000


@dataclass(frozen=True)
class Prompt:
    """A reusable prompt. `defaults` gives default values for some of its {{variables}}."""

    id: str
    name: str
    text: str
    description: str = ""
    defaults: dict[str, str] = field(default_factory=dict)
    builtin: bool = False

    @property
    def variables(self) -> tuple[str, ...]:
        return variables(self.text)

    def render(self, values: Mapping[str, str] | None = None) -> str:
        """The text with its variables filled in (values, else defaults). Raises MissingValueError naming
        every variable left without a value."""
        return fill(self.text, values, self.defaults)

    def validate(self) -> Prompt:
        name = self.name.strip() if isinstance(self.name, str) else ""
        if not name or len(name) > MAX_NAME or "\n" in name:
            raise PromptError(f"a prompt needs a one-line name of 1 to {MAX_NAME} characters")
        if not isinstance(self.text, str) or not self.text.strip() or len(self.text) > MAX_TEXT:
            raise PromptError(f"prompt {name!r} needs text (at most {MAX_TEXT} characters)")
        if not isinstance(self.description, str) or len(self.description) > MAX_TEXT:
            raise PromptError(f"prompt {name!r}: the description must be text")
        if not isinstance(self.defaults, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.defaults.items()
        ):
            raise PromptError(
                f'prompt {name!r}: defaults must be an object of text values, like {{"language": "French"}}'
            )
        return self

    def matches(self, query: str) -> int:
        """How well the prompt matches what was typed after `/`: 3 name starts with it, 2 a word of the name
        does, 1 the name or description contains it, 0 no match. An empty query matches everything (1)."""
        query = query.strip().lower()
        if not query:
            return 1
        name = self.name.lower()
        if name.startswith(query):
            return 3
        if any(word.startswith(query) for word in name.replace("-", " ").split()):
            return 2
        return 1 if query in name or query in self.description.lower() else 0

    def to_dict(self, *, with_id: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id} if with_id else {}
        data.update({"name": self.name, "description": self.description, "text": self.text})
        if self.defaults:
            data["defaults"] = dict(self.defaults)
        return data

    @classmethod
    def from_dict(cls, data: Any, *, prompt_id: str | None = None) -> Prompt:
        """From a prompt file or an export entry; validated (PromptError naming the problem)."""
        if not isinstance(data, dict):
            raise PromptError("a prompt must be a JSON object with a name and a text")
        version = data.get("version", VERSION)
        if not isinstance(version, int) or version > VERSION:
            raise NewerFormatError(f"prompt format version {version!r} is newer than this Hearth's ({VERSION})")
        item_id = prompt_id or data.get("id")
        if not isinstance(item_id, str) or not item_id:
            raise PromptError("a prompt needs an id")
        for key in ("name", "text", "description"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise PromptError(f"a prompt's {key} must be text, not {type(data[key]).__name__}")
        defaults = data.get("defaults") or {}
        return cls(
            id=item_id,
            name=str(data.get("name") or "").strip(),
            text=str(data.get("text") or ""),
            description=str(data.get("description") or ""),
            defaults=dict(defaults) if isinstance(defaults, dict) else defaults,
        ).validate()


def new_id(name: str) -> str:
    return f"{slug(name)}-{uuid.uuid4().hex[:8]}"


BUILTINS: tuple[Prompt, ...] = (
    Prompt(
        id="translate",
        name="Translate",
        description="Translate a text into another language.",
        text=(
            "Translate the following text into {{language}}. Keep the meaning, tone and formatting; reply with "
            "the translation only.\n\n{{text}}"
        ),
        defaults={"language": "English"},
        builtin=True,
    ),
    Prompt(
        id="summarise",
        name="Summarise",
        description="Summarise a text, keeping the facts.",
        text=(
            "Summarise the following text in {{length}}. Keep the key facts, names and numbers; add nothing that "
            "is not in it.\n\n{{text}}"
        ),
        defaults={"length": "three bullet points"},
        builtin=True,
    ),
    Prompt(
        id="extract",
        name="Extract as JSON",
        description="Pull chosen fields out of a text as a JSON object.",
        text=(
            "Extract {{fields}} from the following text. Reply with one JSON object with exactly those keys; "
            "use null for anything the text does not say.\n\n{{text}}"
        ),
        defaults={"fields": "the names, dates and amounts"},
        builtin=True,
    ),
    Prompt(
        id="explain",
        name="Explain simply",
        description="Explain a passage or a concept in plain words.",
        text="Explain {{topic}} in plain words for {{audience}}, with one short example.",
        defaults={"audience": "someone new to the subject"},
        builtin=True,
    ),
)
BUILTIN_IDS = frozenset(p.id for p in BUILTINS)


class PromptLibrary:
    """The built-in prompts and the user's, saved under `folder` (paths.prompts_dir)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._files = JsonFolder(self.folder, "prompt", self._parse, PromptError)

    @classmethod
    def default(cls, paths: AppPaths | None = None) -> PromptLibrary:
        return cls((paths or AppPaths.default()).prompts_dir)

    @property
    def problems(self) -> list[str]:
        return list(self._files.problems)

    def _parse(self, data: dict[str, Any]) -> Prompt:
        prompt = Prompt.from_dict(data)
        if prompt.id in BUILTIN_IDS:
            raise PromptError(f"the id {prompt.id!r} belongs to a built-in prompt")
        return prompt

    def user_prompts(self) -> list[Prompt]:
        found: dict[str, Prompt] = {}
        for loaded in self._files.read_all():
            prompt = loaded.item if loaded.path.stem == loaded.item.id else replace(loaded.item, id=loaded.path.stem)
            found[prompt.id] = prompt
        return sorted(found.values(), key=lambda p: p.name.lower())

    def all(self) -> list[Prompt]:
        """The built-ins first, then the user's by name."""
        return [*BUILTINS, *self.user_prompts()]

    def search(self, query: str) -> list[Prompt]:
        """Prompts matching what was typed after `/`, best first (the library order among equals)."""
        scored = [(p.matches(query), index, p) for index, p in enumerate(self.all())]
        return [p for score, _, p in sorted(scored, key=lambda t: (-t[0], t[1])) if score > 0]

    def find(self, name_or_id: str) -> Prompt | None:
        wanted = name_or_id.strip()
        everyone = self.all()
        for prompt in everyone:
            if prompt.id == wanted:
                return prompt
        return next((p for p in everyone if p.name.lower() == wanted.lower()), None)

    def get(self, name_or_id: str) -> Prompt:
        prompt = self.find(name_or_id)
        if prompt is None:
            names = ", ".join(p.name for p in self.all())
            raise PromptError(f"no prompt named {name_or_id!r}; there are: {names}")
        return prompt

    def save(self, prompt: Prompt) -> Prompt:
        """Create or update a user prompt (validated; names are unique). Built-ins cannot be changed."""
        if prompt.builtin or prompt.id in BUILTIN_IDS:
            raise PromptError(f"{prompt.name} is built in and cannot be changed; save a copy under another name")
        if not prompt.id or slug(prompt.id, limit=60) != prompt.id:
            prompt = replace(prompt, id=new_id(prompt.name))
        prompt = replace(prompt, name=prompt.name.strip()).validate()
        clash = self.find(prompt.name)
        if clash is not None and clash.id != prompt.id:
            raise PromptError(f"there is already a prompt named {clash.name!r}; choose another name")
        self._files.write(prompt.id, prompt.to_dict())
        return prompt

    def delete(self, name_or_id: str) -> Prompt:
        prompt = self.get(name_or_id)
        if prompt.builtin:
            raise PromptError(f"{prompt.name} is built in and cannot be deleted")
        self._files.remove(prompt.id)
        return prompt

    def unique_name(self, name: str, taken: set[str] | None = None) -> str:
        taken = taken if taken is not None else {p.name.lower() for p in self.all()}
        candidate, number = name.strip(), 2
        while candidate.lower() in taken:
            candidate = f"{name.strip()} ({number})"
            number += 1
        return candidate

    # ---- import / export ----------------------------------------------------------------------------------
    def export_text(self, names_or_ids: list[str] | None = None) -> str:
        """A JSON document of the named prompts (default: all the user's own; a built-in when named)."""
        prompts = [self.get(n) for n in names_or_ids] if names_or_ids else self.user_prompts()
        document = {"format": FORMAT, "version": VERSION, "prompts": [p.to_dict(with_id=False) for p in prompts]}
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"

    def import_data(self, data: Any) -> list[Prompt]:
        """Save every prompt of an export (or a list of prompts, or one prompt) as new prompts.

        All entries are checked first: one bad entry refuses the whole import, naming it, and saves nothing.
        A name already taken gets " (2)".
        """
        entries = _entries(data)
        parsed: list[Prompt] = []
        for index, entry in enumerate(entries, 1):
            try:
                parsed.append(Prompt.from_dict(entry, prompt_id="import"))
            except NewerFormatError as exc:
                raise PromptError(f"{exc}; update Hearth to import it") from None
            except PromptError as exc:
                label = entry.get("name") if isinstance(entry, dict) and isinstance(entry.get("name"), str) else ""
                raise PromptError(f"prompt {index}{f' ({label})' if label else ''}: {exc}") from None
        taken = {p.name.lower() for p in self.all()}
        saved = []
        for prompt in parsed:
            name = self.unique_name(prompt.name, taken)
            taken.add(name.lower())
            saved.append(self.save(replace(prompt, id=new_id(name), name=name)))
        return saved

    def import_file(self, path: Path) -> list[Prompt]:
        path = Path(path).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text)
        except FileNotFoundError:
            raise PromptError(f"{path}: no such file") from None
        except json.JSONDecodeError as exc:
            raise PromptError(
                f"{path.name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PromptError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            return self.import_data(data)
        except HearthError as exc:
            raise PromptError(f"{path.name}: {exc}") from None


def _entries(data: Any) -> list[Any]:
    if isinstance(data, dict) and "prompts" in data:
        if data.get("format", FORMAT) != FORMAT:
            raise PromptError(f"not a Hearth prompt file (format {data.get('format')!r})")
        version = data.get("version", VERSION)
        if not isinstance(version, int) or version > VERSION:
            raise PromptError(f"prompt file version {version!r} is newer than this Hearth's ({VERSION}); update Hearth")
        data = data["prompts"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise PromptError('expected {"prompts": [{"name": ..., "text": ...}, ...]}, a list of prompts, or one prompt')
    if len(data) > MAX_IMPORT:
        raise PromptError(f"at most {MAX_IMPORT} prompts per file; this one has {len(data)}")
    return data
