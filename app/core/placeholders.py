"""`{{variables}}` in prompts and system prompts: find them, and fill them in with values or defaults."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from app.core.errors import PromptError

# A name starts with a letter or underscore and may hold letters, digits, spaces, '_' and '-'
# ("{{target language}}"). Anything else between double braces ('{{"a": 1}}' in a JSON example) is text.
PLACEHOLDER_RE = re.compile(r"\{\{\s*([^\W\d][\w\- ]*?)\s*\}\}")
MAX_NAME = 64


@dataclass(frozen=True)
class Placeholder:
    """One `{{name}}` in a text: where it starts and ends (character offsets) and the name inside."""

    start: int
    end: int
    name: str


def placeholders(text: str) -> list[Placeholder]:
    """Every placeholder in text, in order (a name may appear more than once)."""
    return [
        Placeholder(m.start(), m.end(), m.group(1))
        for m in PLACEHOLDER_RE.finditer(text)
        if len(m.group(1)) <= MAX_NAME
    ]


def variables(text: str) -> tuple[str, ...]:
    """The distinct variable names of text, in the order they first appear."""
    return tuple(dict.fromkeys(p.name for p in placeholders(text)))


class MissingValueError(PromptError):
    """One or more variables have neither a value nor a default."""

    def __init__(self, names: tuple[str, ...]) -> None:
        listed = ", ".join(f"{{{{{name}}}}}" for name in names)
        super().__init__(f"fill in {listed}: {'they have' if len(names) > 1 else 'it has'} no value and no default")
        self.names = names


def fill(text: str, values: Mapping[str, str] | None = None, defaults: Mapping[str, str] | None = None) -> str:
    """text with every `{{name}}` replaced by its value, else its default.

    A blank value counts as missing (a translator with an empty target language is a mistake), unless the
    name has a default, which may itself be blank. Raises MissingValueError naming every missing variable.
    """
    values = values or {}
    defaults = defaults or {}
    chosen: dict[str, str] = {}
    missing: list[str] = []
    for name in variables(text):
        value = values.get(name)
        if value is not None and value.strip():
            chosen[name] = value
        elif name in defaults:
            chosen[name] = defaults[name]
        else:
            missing.append(name)
    if missing:
        raise MissingValueError(tuple(missing))
    found = placeholders(text)
    parts: list[str] = []
    position = 0
    for placeholder in found:
        parts.append(text[position : placeholder.start])
        parts.append(chosen[placeholder.name])
        position = placeholder.end
    parts.append(text[position:])
    return "".join(parts)
