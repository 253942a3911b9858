"""Structured output: reply formats (text, JSON, JSON schema), their GBNF grammars, schema checks as the user
types, and JSON replies formatted for display."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from app.core.errors import ConfigError


def json_grammar(schema: dict[str, Any] | str | None = None) -> str:
    """GBNF that only admits JSON (any value when schema is None, else documents matching the schema).

    llama.cpp constrains sampling with it, so the output parses even from a model that was never trained
    to write JSON. The schema converter is llama-cpp-python's port of llama.cpp's json-schema-to-grammar.
    """
    from llama_cpp import llama_grammar  # lazy: loads native libraries

    if schema is None:
        return llama_grammar.JSON_GBNF
    text = schema if isinstance(schema, str) else json.dumps(schema)
    try:
        json.loads(text)
        grammar = llama_grammar.json_schema_to_gbnf(text)
    # The converter asserts on schema keywords it does not know ({'not': ...}): a user error, not a bug.
    except (ValueError, KeyError, TypeError, NotImplementedError, RecursionError, AssertionError) as exc:
        raise ConfigError(f"unusable JSON schema: {exc}") from None
    return _strict_json_chars(grammar)


# llama-cpp-python 0.3.36's converter lets string characters be any byte but '"' and '\\', so a model can
# put raw control characters (e.g. \x14) inside a JSON string and the "JSON" fails to parse. llama.cpp's
# own converter excludes them; apply the same rule (a no-op once the binding is fixed).
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def _strict_json_chars(grammar: str) -> str:
    return grammar.replace(_LOOSE_CHAR, _STRICT_CHAR)


# ---- reply formats --------------------------------------------------------------------------------------

TEXT, JSON_ANY, JSON_SCHEMA = "text", "json", "json_schema"
REPLY_FORMATS: dict[str, str] = {
    TEXT: "Text",
    JSON_ANY: "JSON",
    JSON_SCHEMA: "JSON matching a schema",
}
_JSON_TYPES = "string, number, integer, boolean, object, array or null"


@dataclass(frozen=True)
class ReplyFormat:
    """What a reply must be: free text, any JSON, or JSON that matches a schema (a JSON object)."""

    kind: str = TEXT
    schema: dict[str, Any] | None = None

    def validate(self) -> ReplyFormat:
        """Return self, or raise ConfigError saying what is wrong (an unknown kind, an unusable schema)."""
        if self.kind not in REPLY_FORMATS:
            raise ConfigError(f"reply format must be one of {', '.join(REPLY_FORMATS)}; got {self.kind!r}")
        if self.kind == JSON_SCHEMA:
            if self.schema is None:
                raise ConfigError("a JSON-schema reply format needs a schema")
            problem = schema_problem(json.dumps(self.schema))
            if problem:
                raise ConfigError(f"the reply schema is unusable: {problem}")
        elif self.schema is not None and not isinstance(self.schema, dict):
            raise ConfigError("a reply format's schema must be a JSON object")
        return self

    def grammar(self) -> str | None:
        """The GBNF grammar that constrains sampling to this format; None for text."""
        if self.kind == JSON_ANY:
            return json_grammar()
        if self.kind == JSON_SCHEMA:
            return json_grammar(self.schema)
        return None

    @property
    def is_json(self) -> bool:
        return self.kind in (JSON_ANY, JSON_SCHEMA)

    @property
    def label(self) -> str:
        return REPLY_FORMATS.get(self.kind, self.kind)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind}
        if self.kind == JSON_SCHEMA and self.schema is not None:
            data["schema"] = self.schema
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ReplyFormat:
        """From stored JSON ({"kind", "schema"}); validated (ConfigError)."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError('a reply format must be an object like {"kind": "json"}')
        schema = data.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise ConfigError("a reply format's schema must be a JSON object")
        kind = data.get("kind", TEXT)
        return cls(kind, schema if kind == JSON_SCHEMA else None).validate()


@dataclass(frozen=True)
class SchemaProblem:
    """Why a schema text is unusable, and the line (1-based) the problem is on when it can be told."""

    message: str
    line: int | None = None

    def __str__(self) -> str:
        return self.message


def find_schema_problem(text: str) -> SchemaProblem | None:
    """What is wrong with a JSON schema as typed, or None: JSON syntax (line and column), then JSON Schema's
    own metaschema, then whether llama.cpp's grammar converter accepts it. Fast enough to run on each
    keystroke (a millisecond or two for a typical schema, after a first call that imports the converter)."""
    if not text.strip():
        return SchemaProblem('write a JSON schema, for example {"type": "object", "properties": {...}}', 1)
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        return SchemaProblem(f"line {exc.lineno}, column {exc.colno}: {exc.msg}", exc.lineno)
    if not isinstance(schema, dict):
        return SchemaProblem('a JSON schema is an object: {"type": ...}', 1)
    problem = _metaschema_problem(schema, text)
    if problem is not None:
        return problem
    try:
        json_grammar(schema)
    except ConfigError as exc:
        return SchemaProblem(f"llama.cpp cannot turn this schema into a grammar: {_converter_reason(exc)}")
    return None


def schema_problem(text: str) -> str | None:
    """find_schema_problem as one line of text (None when the schema is usable)."""
    problem = find_schema_problem(text)
    return None if problem is None else problem.message


def _metaschema_problem(schema: dict[str, Any], text: str) -> SchemaProblem | None:
    import jsonschema  # lazy: only the schema editor and structured replies need it
    from jsonschema import validators

    checker = validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        checker.check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = [str(part) for part in exc.path]
        where = " → ".join(path) if path else "the top level"
        if path and path[-1] == "type":
            message = f"{exc.instance!r} is not a JSON type (use {_JSON_TYPES})"
        else:
            message = exc.message
        return SchemaProblem(f"at {where}: {message}", _line_of_path(text, path))
    return None


def _line_of_path(text: str, path: list[str]) -> int | None:
    """The line of the last key of path, found by following the keys through the text (good enough to point
    at a mistake; a key that also appears earlier as a value may mislead it)."""
    position = 0
    for key in path:
        if key.isdigit():
            continue
        found = text.find(json.dumps(key), position)
        if found < 0:
            return None
        position = found
    return text.count("\n", 0, position) + 1 if path else None


def _converter_reason(exc: ConfigError) -> str:
    reason = str(exc).removeprefix("unusable JSON schema: ")
    if reason.startswith("Fetching remote schemas"):  # the converter's hint (--allow-fetch) is for its own CLI
        return 'a "$ref" points outside the schema; put what it refers to under "$defs" and use "#/$defs/NAME"'
    missing = re.match(r"Error resolving ref \S*?(#\S*):", reason)
    if missing:
        return f'"$ref": "{missing.group(1)}" points to nothing in this schema'
    if reason.startswith("Unrecognized schema: "):
        return f"it does not support {reason.removeprefix('Unrecognized schema: ')}"
    return reason


def format_json_reply(text: str) -> str | None:
    """A JSON reply pretty-printed for display (keys in the order sent), or None when it is not JSON.
    The reply itself is stored exactly as the model wrote it."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return json.dumps(value, indent=2, ensure_ascii=False)


def reply_problem(text: str, reply_format: ReplyFormat) -> str | None:
    """Why a reply does not meet its format (not JSON, or not matching the schema), or None."""
    if not reply_format.is_json:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"the reply is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    if reply_format.kind != JSON_SCHEMA or reply_format.schema is None:
        return None
    import jsonschema
    from jsonschema import validators

    checker = validators.validator_for(reply_format.schema, default=jsonschema.Draft202012Validator)
    error = jsonschema.exceptions.best_match(checker(reply_format.schema).iter_errors(value))
    if error is None:
        return None
    where = " → ".join(str(p) for p in error.path) or "the top level"
    return f"the reply does not match the schema at {where}: {error.message}"
