"""Tool use for templates that have none: tools, calls and results written into ordinary turns (Hermes style).

Gemma, Phi-3, ChatML, Llama 3.0 ... and embedded templates that never mention `tools` cannot show a model
its tools. Hearth then writes them the way Qwen2.5 and the Hermes models were trained to read them: the tool
list and calling instructions appended to the system prompt, each call as a <tool_call> JSON block after the
reply's text, each result as a user turn of <tool_response> blocks. The family then renders those turns as
usual (folding the system prompt where it has no system role), and app.core.tool_calls parses the
<tool_call> blocks back. Also here: which syntax an embedded template with tool use expects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from app.core.messages import ChatMessage
from app.core.tool_families import hermes_call, hermes_tool_block

# Where a model has begun to write a tool's answer itself: never part of a reply.
TOOL_STOPS: dict[str, tuple[str, ...]] = {"hermes": ("<tool_response>",)}

_USES_TOOLS = re.compile(r"\btools\b")
_SYNTAX_MARKERS = (("[TOOL_CALLS]", "mistral"), ("<tool_call>", "hermes"), ("<|python_tag|>", "llama-3.1"))


def uses_tools(source: str) -> bool:
    """Whether a Jinja chat template reads the `tools` variable (else the generic tool prompt is used)."""
    return bool(_USES_TOOLS.search(source))


def embedded_tool_syntax(source: str, family_syntax: str | None) -> str:
    """The call syntax an embedded template teaches its model: from the markers it writes, else the family it
    renders like, else Hermes (the most common)."""
    for marker, syntax in _SYNTAX_MARKERS:
        if marker in source:
            return syntax
    if "ipython" in source:
        return "llama-3.1"
    return family_syntax or "hermes"


def fold_tools(messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None) -> list[ChatMessage]:
    """The conversation with tools, calls and results as plain system/user/assistant turns."""
    result: list[ChatMessage] = []
    block = hermes_tool_block(tools) if tools else ""
    if block:
        if messages and messages[0].role == "system":
            result.append(ChatMessage("system", messages[0].content + block))
            messages = messages[1:]
        else:
            result.append(ChatMessage("system", block.lstrip("\n")))
    pending: list[str] = []  # consecutive results share one user turn, as Qwen2.5's template writes them
    for message in messages:
        if message.role == "tool":
            pending.append(f"<tool_response>\n{message.content}\n</tool_response>")
            continue
        if pending:
            result.append(ChatMessage("user", "\n".join(pending)))
            pending = []
        if message.role == "assistant" and message.tool_calls:
            calls = "\n".join(hermes_call(c.name, c.arguments) for c in message.tool_calls)
            result.append(ChatMessage("assistant", f"{message.content}\n{calls}" if message.content else calls))
        else:
            result.append(ChatMessage(message.role, message.content))
    if pending:
        result.append(ChatMessage("user", "\n".join(pending)))
    return result
