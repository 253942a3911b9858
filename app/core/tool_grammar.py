"""tool_choice "required" or a named tool: a GBNF grammar that only lets the model write a valid call.

The call's JSON is built from the tools' schemas with structured.json_grammar (llama.cpp's
json-schema-to-grammar): {"name": <one of the tools>, "arguments": <that tool's schema>} ("parameters" for
Llama 3.1), wrapped in the family's own call syntax. Even a small model that was never trained for tools then
writes a call app.core.tool_calls accepts. Schema keywords the converter cannot express (string formats,
numeric ranges ...) are checked again when the call is parsed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from app.core.errors import ConfigError
from app.core.structured import json_grammar
from app.core.tools import ToolChoice, ToolSpec

# Around the call's JSON, per syntax (see app.core.tool_calls): what comes before and after one call.
_WRAP = {
    "hermes": ('"<tool_call>\\n"', '"\\n</tool_call>"'),
    "llama-3.1": ("", ""),
    "mistral": ('"[TOOL_CALLS] ["', '"]"'),
}


def tool_call_grammar(syntax: str, tools: Sequence[ToolSpec], choice: ToolChoice) -> str | None:
    """The grammar for a reply that must be exactly one call (None when the choice forces nothing)."""
    if not choice.forces_call:
        return None
    if syntax not in _WRAP:
        raise ConfigError(f"unknown tool-call syntax {syntax!r}")
    chosen = [t for t in tools if choice.mode != "named" or t.name == choice.name]
    if not chosen:
        raise ConfigError("tool_choice requires a tool call, but no tools are available")
    key = "parameters" if syntax == "llama-3.1" else "arguments"
    alternatives = [_call_schema(tool, key) for tool in chosen]
    schema = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
    call = _renamed_root(json_grammar(schema), "tool-call")
    before, after = _WRAP[syntax]
    root = " ".join(part for part in (before, "tool-call", after) if part)
    return f"root ::= {root}\n{call}"


def _call_schema(tool: ToolSpec, key: str) -> dict[str, Any]:
    arguments = _convertible(dict(tool.parameters))
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, key: arguments},
        "required": ["name", key],
        "additionalProperties": False,
    }


def _convertible(schema: dict[str, Any]) -> dict[str, Any]:
    """The argument schema, or any JSON object when the converter cannot express it (the parser still
    validates the call against the real schema)."""
    try:
        json_grammar(schema)
        return schema
    except ConfigError:
        return {"type": "object"}


def _renamed_root(grammar: str, name: str) -> str:
    """The converter names its top rule "root"; the call's JSON becomes one rule of the larger grammar."""
    renamed, count = re.subn(r"^root ::=", f"{name} ::=", grammar, count=1, flags=re.M)
    if not count:
        raise ConfigError("the tool schemas could not be turned into a grammar")
    return renamed
