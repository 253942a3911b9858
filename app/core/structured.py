"""Structured output: GBNF grammars for JSON mode, a JSON schema, or a user's own grammar."""

from __future__ import annotations

import json
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
    # The converter also asserts on schemas it does not recognise (e.g. {"type": 7}).
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
