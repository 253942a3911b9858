"""How tool calls and tool results read in the chat: the Markdown the delegate renders for them.

An assistant turn that called tools shows its prose, then a "Called name" block with the arguments as JSON;
calls the model wrote badly are named in italics with the reason. A tool result is a collapsible block:
one line while closed (its first line, cut), the whole result as a code block when open. Everything the
model or a tool wrote is escaped or fenced, so it is shown as text, never as Markdown of its own.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.core.messages import ToolCall
    from app.ui.chat_model import MessageItem

SUMMARY_CHARS = 120  # a closed result shows this much of its first line
OUTCOMES = {
    "ran": "result",
    "failed": "error",
    "denied": "denied by you",
    "stopped": "not run (stopped)",
}
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def escape(text: str) -> str:
    """Text shown as itself in Markdown (no emphasis, links, lists or HTML)."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", text)


def fenced(text: str, language: str = "") -> str:
    """A code block holding text exactly: the fence is longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def call_block(call: ToolCall) -> str:
    try:
        shown = json.dumps(json.loads(call.arguments or "{}"), indent=2, ensure_ascii=False)
    except ValueError:
        shown = call.arguments  # as the model wrote it
    return f"Called **{escape(call.name)}**\n\n{fenced(shown, 'json')}"


def header(item: MessageItem) -> str:
    """The small label above a tool result."""
    name = item.tool_name or "tool"
    if item.streaming:
        return f"Tool · {name}"
    return f"Tool · {name} · {OUTCOMES.get(item.tool_outcome, 'result')}"


def result_text(item: MessageItem) -> str:
    if item.status:
        return f"*{escape(item.status)}*"
    content = item.content
    if item.expanded:
        try:
            language = "json" if isinstance(json.loads(content), dict | list) else ""
        except ValueError:
            language = ""
        # A line of text first: a document that starts with a code block loses the block's top margin (Qt
        # drops the first block's), and its frame would be painted over the row's header.
        size = f"{len(content):,} character{'s' if len(content) != 1 else ''}"
        return f"*{size}*\n\n{fenced(content, language or 'text')}"
    lines = content.strip().splitlines()
    first = lines[0] if lines else "(empty)"
    cut = len(first) > SUMMARY_CHARS or len(lines) > 1
    summary = first[:SUMMARY_CHARS].rstrip() + (" …" if cut else "")
    return escape(summary)


def display_text(item: MessageItem) -> str:
    """What the chat shows for a message: its content, plus its tool calls, notes and status."""
    if item.role == "tool":
        return result_text(item)
    if not (item.tool_calls or item.notes or item.status):
        return item.content
    parts = [item.content] if item.content.strip() else []
    parts += [call_block(call) for call in item.tool_calls]
    parts += [f"*{escape(note)}*" for note in item.notes]
    if item.status:
        parts.append(f"*{escape(item.status)}*")
    return "\n\n".join(parts)
