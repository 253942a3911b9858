"""Tool calls in a model's reply: found while the reply streams, then checked against the tools' schemas.

Each template family teaches its model one way of writing calls (see template_families.GENERIC_TOOL_SYNTAX):
  hermes     <tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>  (several blocks allowed)
  llama-3.1  {"name": ..., "parameters": {...}}, after <|python_tag|> or as the reply (several joined by ";");
             also the built-in form <|python_tag|>name.call(key="value")
  mistral    [TOOL_CALLS] [{"name": ..., "arguments": {...}, "id": ...}, ...]
llama.cpp hides control tokens, so <|python_tag|> and [TOOL_CALLS] may be missing from the text: the bare
JSON forms are recognised too, anywhere in the reply (models often write a sentence first).

ToolCallStream works on streamed text: feed() returns the prose that is safe to show now and holds back
anything that may be the start of a call, so a call's text never flashes up as prose; in_call says that a
call has started (the chat shows "calling a tool" instead). finish() checks every call: it must be JSON, name
a known tool and fit the tool's JSON schema. A call that fails is never run: its text stays in the reply's
content and a note says why. A JSON object without an explicit marker that does not look like a call
({"name": ...} without arguments) is ordinary prose and stays so, silently.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from app.core.messages import ToolCall
from app.core.tools import ToolSpec

_ID_ALPHABET = string.ascii_letters + string.digits
_MAX_GAP = 16  # whitespace allowed between the pieces of a JSON marker such as {"name":


def new_call_id() -> str:
    """A fresh call id: 9 letters and digits, the form Mistral's template insists on (fine for all others)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(9))


@dataclass(frozen=True)
class _Marker:
    pieces: tuple[str, ...]  # matched in order, whitespace allowed between them
    explicit: bool  # a dedicated call marker (anything after it is a call attempt) vs. a JSON opening
    kind: str  # how the block that follows is delimited and parsed


_MARKERS: dict[str, tuple[_Marker, ...]] = {
    "hermes": (_Marker(("<tool_call>",), True, "hermes"),),
    "llama-3.1": (_Marker(("<|python_tag|>",), True, "python_tag"), _Marker(("{", '"name"', ":"), False, "json")),
    "mistral": (_Marker(("[TOOL_CALLS]",), True, "tool_calls"), _Marker(("[", "{", '"name"', ":"), False, "json")),
}
SYNTAXES = tuple(_MARKERS)


@dataclass(frozen=True)
class RejectedCall:
    """A call that will not run: what the model wrote, and why (one line for the user)."""

    text: str
    reason: str


@dataclass(frozen=True)
class ParsedReply:
    """A finished reply: its text without the calls that will run, those calls, and the refused ones."""

    content: str  # the prose, with the text of refused calls left where the model wrote them
    calls: tuple[ToolCall, ...]
    rejected: tuple[RejectedCall, ...] = ()

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(f"A tool call was not run: {r.reason}." for r in self.rejected)

    @property
    def rejected_text(self) -> str:
        """The refused calls' text: held back while streaming, so a stream sends it last (as content)."""
        return "\n".join(r.text for r in self.rejected)


_FULL, _PARTIAL = "full", "partial"


def _match(buffer: str, start: int, pieces: tuple[str, ...]) -> tuple[str | None, int]:
    """(_FULL, end) when the marker is at start; (_PARTIAL, 0) when the buffer ends inside a possible match."""
    pos = start
    for index, piece in enumerate(pieces):
        if index:
            gap = pos
            while pos < len(buffer) and buffer[pos].isspace():
                pos += 1
            if pos - gap > _MAX_GAP:
                return None, 0
        chunk = buffer[pos : pos + len(piece)]
        if chunk != piece:
            return (_PARTIAL, 0) if len(chunk) < len(piece) and piece.startswith(chunk) else (None, 0)
        pos += len(piece)
    return _FULL, pos


def _json_end(text: str, start: int) -> int | None:
    """Index just after the JSON object/array that opens at start; None while it is unfinished."""
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


class ToolCallStream:
    """Split a streamed reply into prose (shown as it comes) and tool calls (checked at the end).

    Not thread-safe: one reply, one thread (the one reading the engine's stream).
    """

    def __init__(self, syntax: str, tools: Sequence[ToolSpec]) -> None:
        if syntax not in _MARKERS:
            raise ValueError(f"unknown tool-call syntax {syntax!r}")
        self.syntax = syntax
        self._markers = _MARKERS[syntax]
        self._tools = {tool.name: tool for tool in tools}
        self._pending = ""  # text not yet classified: a possible marker start, or the call being written
        self._block: _Marker | None = None  # set while inside a call
        self._segments: list[tuple[str, _Marker | None]] = []  # (text, marker of the call it is, or None)
        self._finished: ParsedReply | None = None

    @property
    def in_call(self) -> bool:
        """A tool call has started and its text is being held back."""
        return self._block is not None

    def feed(self, text: str) -> str:
        """Add streamed text; return the prose that is now safe to show (possibly "")."""
        if self._finished is not None:
            raise RuntimeError("the reply is already finished")
        self._pending += text
        shown: list[str] = []
        while True:
            if self._block is None:
                prose, progressed = self._scan_prose()
                shown.append(prose)
                if not progressed:
                    break
            elif not self._close_block(shown):
                break
        return "".join(shown)

    def _scan_prose(self) -> tuple[str, bool]:
        """Emit prose up to the first marker; (prose, True) when a call starts, else hold a possible start."""
        buffer = self._pending
        for start in range(len(buffer)):
            for marker in self._markers:
                if buffer[start] != marker.pieces[0][0]:
                    continue
                found, _end = _match(buffer, start, marker.pieces)
                if found == _FULL:
                    self._add_prose(buffer[:start])
                    self._pending, self._block = buffer[start:], marker
                    return buffer[:start], True
                if found == _PARTIAL:
                    self._add_prose(buffer[:start])
                    self._pending = buffer[start:]
                    return buffer[:start], False
        self._add_prose(buffer)
        self._pending = ""
        return buffer, False

    def _close_block(self, shown: list[str]) -> bool:
        """When the call being written is complete, store it and go back to prose; False while it is not."""
        marker, buffer = self._block, self._pending
        assert marker is not None
        end = self._block_end(marker, buffer)
        if end is None:
            return False
        block, self._pending, self._block = buffer[:end], buffer[end:], None
        if not marker.explicit and not _looks_like_call(block):
            self._add_prose(block)  # JSON in prose, not a call: it was held back, show it now
            shown.append(block)
        else:
            self._segments.append((block, marker))
        return True

    def _block_end(self, marker: _Marker, buffer: str) -> int | None:
        if marker.kind == "hermes":
            opening = len(marker.pieces[0])
            closing = buffer.find("</tool_call>", opening)
            following = buffer.find("<tool_call>", opening)  # a block left open: the next one ends it
            if following >= 0 and (closing < 0 or following < closing):
                return following
            return closing + len("</tool_call>") if closing >= 0 else None
        if marker.kind == "python_tag":
            return None  # the rest of the reply (it ends at <|eom_id|>)
        start = len(marker.pieces[0]) if marker.kind == "tool_calls" else 0
        while start < len(buffer) and buffer[start].isspace():
            start += 1
        if start >= len(buffer):
            return None
        if buffer[start] not in "[{":
            return start  # a marker with no JSON after it: refused at the end
        return _json_end(buffer, start)

    def _add_prose(self, text: str) -> None:
        if not text:
            return
        if self._segments and self._segments[-1][1] is None:
            self._segments[-1] = (self._segments[-1][0] + text, None)
        else:
            self._segments.append((text, None))

    def finish(self) -> ParsedReply:
        """The reply is complete: check its calls. Idempotent."""
        if self._finished is not None:
            return self._finished
        if self._block is not None:  # a call still open at the end (no closing tag, cut-off JSON ...)
            self._segments.append((self._pending, self._block))
            self._block = None
        else:
            self._add_prose(self._pending)
        self._pending = ""
        calls: list[ToolCall] = []
        rejected: list[RejectedCall] = []
        parts: list[str] = []
        for text, marker in self._segments:
            if marker is None:
                parts.append(text)
                continue
            for raw, call, reason in self._calls_in(text, marker):
                if call is not None:
                    calls.append(call)
                else:
                    rejected.append(RejectedCall(raw, reason))
                    parts.append(raw + "\n")  # refused calls one per line, where the model wrote them
        had_calls = any(marker is not None for _text, marker in self._segments)
        content = _join_prose(parts) if had_calls else "".join(parts)  # no call: exactly the streamed text
        self._finished = ParsedReply(content, tuple(calls), tuple(rejected))
        return self._finished

    # ---- one block -> calls ------------------------------------------------------------------------------

    def _calls_in(self, block: str, marker: _Marker) -> Iterator[tuple[str, ToolCall | None, str]]:
        """(raw text, call or None, reason) for each call a block holds."""
        body = _block_body(block, marker)
        if marker.kind == "python_tag" and body.strip() and body.strip()[0] not in "[{":
            yield from self._builtin_form(block, body.strip())
            return
        values, error = _json_values(body)
        if error or not values:
            yield block, None, error or "the call is empty"
            return
        if len(values) == 1 and isinstance(values[0][0], list):  # [TOOL_CALLS] [ {...}, {...} ]
            array = values[0][0]
            raw = (lambda item: block) if len(array) == 1 else (lambda item: json.dumps(item, ensure_ascii=False))
            items = [(item, raw(item)) for item in array]
        elif len(values) == 1:
            items = [(values[0][0], block)]
        else:
            items = [(value, body[start:end]) for value, start, end in values]
        for value, raw in items:
            call, reason = self._check(value)
            yield raw, call, reason

    def _builtin_form(self, block: str, body: str) -> Iterator[tuple[str, ToolCall | None, str]]:
        """Llama 3.1's built-in tool form: name.call(key="value", ...) (read with ast, never evaluated)."""
        match = re.fullmatch(r"([A-Za-z_][\w.-]*)\.call\((.*)\)", body, re.S)
        if not match:
            yield block, None, "the call after <|python_tag|> is neither JSON nor name.call(...)"
            return
        try:
            node = ast.parse(f"f({match.group(2)})", mode="eval").body
            assert isinstance(node, ast.Call) and not node.args
            arguments = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        except (SyntaxError, ValueError, AssertionError, RecursionError):
            yield block, None, "the arguments of the built-in call cannot be read"
            return
        call, reason = self._check({"name": match.group(1), "arguments": arguments})
        yield block, call, reason

    def _check(self, value: Any) -> tuple[ToolCall | None, str]:
        """A ToolCall when the value names a known tool with arguments that fit its schema; else the reason."""
        if isinstance(value, dict) and isinstance(value.get("function"), dict):  # OpenAI's own shape
            value = {**value["function"], "id": value.get("id")}
        if not isinstance(value, dict) or "name" not in value:
            return None, "a call must be a JSON object with a name"
        name = value["name"]
        if not isinstance(name, str):
            return None, "the tool name is not text"
        arguments = value.get("arguments", value.get("parameters", {}))
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                return None, f"the arguments for {name} are not valid JSON"
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self._tools)) or "none"
            return None, f"the model called an unknown tool {name!r} (available: {known})"
        if not isinstance(arguments, dict):
            return None, f"the arguments for {name} are not a JSON object"
        problem = schema_problem(tool, arguments)
        if problem:
            return None, f"the arguments for {name} do not fit its schema: {problem}"
        call_id = value.get("id")
        if not (isinstance(call_id, str) and re.fullmatch(r"[A-Za-z0-9]{9}", call_id)):
            call_id = new_call_id()
        return ToolCall(call_id, name, json.dumps(arguments, ensure_ascii=False)), ""


def schema_problem(tool: ToolSpec, arguments: dict[str, Any]) -> str:
    """ "" when the arguments fit the tool's JSON schema, else the most relevant error in one line."""
    import jsonschema

    validator = jsonschema.validators.validator_for(tool.parameters)(tool.parameters)
    error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    if error is None:
        return ""
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def _looks_like_call(block: str) -> bool:
    """A JSON object/array found in prose (no call marker) is a call only with a name and arguments."""
    try:
        value = json.loads(block)
    except ValueError:
        return True  # broken JSON that opened like a call: report it rather than hide it
    items = value if isinstance(value, list) else [value]
    return bool(items) and all(
        isinstance(item, dict) and "name" in item and ("arguments" in item or "parameters" in item) for item in items
    )


def _block_body(block: str, marker: _Marker) -> str:
    """The JSON part of a block, without its marker and closing tag."""
    if marker.kind == "hermes":
        body = block[len("<tool_call>") :]
        return body[: -len("</tool_call>")] if body.endswith("</tool_call>") else body
    return block[len(marker.pieces[0]) :] if marker.explicit else block


def _json_values(body: str) -> tuple[list[tuple[Any, int, int]], str]:
    """The JSON values in a body (one, or several separated by whitespace, ',' or ';'), with their spans."""
    decoder = json.JSONDecoder()
    values: list[tuple[Any, int, int]] = []
    pos = 0
    while True:
        while pos < len(body) and (body[pos].isspace() or body[pos] in ",;"):
            pos += 1
        if pos >= len(body):
            return values, ""
        try:
            value, end = decoder.raw_decode(body, pos)
        except ValueError as exc:
            return values, f"the call is not valid JSON ({exc.msg} at character {exc.pos})"
        values.append((value, pos, end))
        pos = end


def _join_prose(parts: list[str]) -> str:
    """The reply's text once calls are taken out: separators left between calls (";", ",") dropped."""
    return "".join(p for p in parts if p.strip(" \t\r\n;,")).strip()


def parse_tool_calls(text: str, syntax: str, tools: Sequence[ToolSpec]) -> ParsedReply:
    """A whole reply at once (the same rules as streaming it)."""
    stream = ToolCallStream(syntax, tools)
    stream.feed(text)
    return stream.finish()


def openai_message(parsed: ParsedReply) -> dict[str, Any]:
    """A chat completion's message: content (null when the reply is only calls) and tool_calls."""
    message: dict[str, Any] = {"role": "assistant", "content": parsed.content or (None if parsed.calls else "")}
    if parsed.calls:
        message["tool_calls"] = openai_tool_calls(parsed.calls)
    return message


def openai_tool_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """message.tool_calls of a chat completion."""
    return [call.to_openai() for call in calls]


def openai_tool_call_deltas(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """delta.tool_calls of a streamed chat completion chunk (each call whole, with its index)."""
    return [{"index": index, **call.to_openai()} for index, call in enumerate(calls)]
