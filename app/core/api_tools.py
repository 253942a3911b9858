"""Tools in Hearth's OpenAI-compatible API: a request's `tools` / `tool_choice` checked, and a reply's text
turned into OpenAI's `tool_calls`, as one message or as streamed deltas.

The client runs its own tools: Hearth only shows them to the model (ReplyRequest.tools / tool_choice, the same
path as the app's replies, so a forced call is grammar-constrained in the template's syntax) and reports the
calls the model wrote, checked against the tools' schemas. A call that fails the check is never reported as a
call: its text stays in the content (what the model wrote is not lost). Usage, for a request `body`:

    api = parse_api_tools(body)                        # ConfigError -> 400, naming the field
    request = ReplyRequest(messages, ..., **api.request_fields())
    # not streamed: the reply's whole text and the syntax ReplyStarted.tool_syntax reported
    message, finish = completion_message(text, syntax, api, finish)
    # streamed: each ReplyChunk's text, then the end
    stream = ToolDeltaStream(syntax, api); deltas = stream.feed(text); deltas, finish = stream.finish(finish)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.core.errors import ConfigError
from app.core.tool_calls import ParsedReply, ToolCallStream, openai_message, openai_tool_call_deltas
from app.core.tools import ToolChoice, ToolSpec, request_tools

TOOL_CALLS = "tool_calls"  # OpenAI's finish_reason when the reply is calls for the client to run


@dataclass(frozen=True)
class ApiTools:
    """A request's tools, checked: as sent (for the prompt), and as specs and a choice (for the parser)."""

    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: Any = None
    specs: tuple[ToolSpec, ...] = ()
    choice: ToolChoice = field(default_factory=ToolChoice)

    @property
    def active(self) -> bool:
        """The model is shown tools (and may call them)."""
        return bool(self.specs) and self.choice.mode != "none"

    def request_fields(self) -> dict[str, Any]:
        """ReplyRequest's tools and tool_choice for this request."""
        return {"tools": self.tools, "tool_choice": self.tool_choice} if self.tools else {}


def parse_api_tools(body: Mapping[str, Any]) -> ApiTools:
    """`tools` and `tool_choice` of a chat completion request (also the deprecated `functions` and
    `function_call`); ConfigError naming what is wrong."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if body.get("functions") is not None:
        if tools is not None:
            raise ConfigError("send either tools or the deprecated functions, not both")
        functions = body["functions"]
        if not isinstance(functions, list):
            raise ConfigError("functions must be a list of {'name', 'description', 'parameters'} objects")
        tools = [{"type": "function", "function": function} for function in functions]
        choice = _function_call(body.get("function_call"))
    if tools is None:
        if choice not in (None, "none", "auto"):
            raise ConfigError("tool_choice needs tools")
        return ApiTools()
    specs, parsed = request_tools(tools, choice)
    return ApiTools(tuple(tools), choice, tuple(specs), parsed)


def _function_call(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {"type": "function", "function": {"name": value.get("name")}}
    return value


def completion_message(text: str, syntax: str | None, api: ApiTools, finish_reason: str) -> tuple[dict[str, Any], str]:
    """A chat completion's message and finish_reason for a whole reply: content, and tool_calls when the model
    called tools (finish_reason "tool_calls", content null when there is no prose)."""
    if not api.active or syntax is None:
        return {"role": "assistant", "content": text}, finish_reason
    stream = ToolCallStream(syntax, api.specs)
    stream.feed(text)
    parsed = stream.finish()
    return openai_message(parsed), TOOL_CALLS if parsed.calls else finish_reason


class ToolDeltaStream:
    """A streamed reply as chat.completion.chunk deltas: prose as it comes ({"content": ...}); a call's text is
    held back while it is written, and the calls are sent whole at the end ({"tool_calls": [...]}, each with
    its index, id, name and arguments), which is what OpenAI's clients accumulate."""

    def __init__(self, syntax: str | None, api: ApiTools) -> None:
        self._parser = ToolCallStream(syntax, api.specs) if api.active and syntax is not None else None
        self._sent: list[str] = []
        self.parsed: ParsedReply | None = None

    def feed(self, text: str) -> list[dict[str, Any]]:
        shown = self._parser.feed(text) if self._parser is not None else text
        if not shown:
            return []
        self._sent.append(shown)
        return [{"content": shown}]

    def finish(self, finish_reason: str) -> tuple[list[dict[str, Any]], str]:
        """The last deltas (prose held back at the end, refused calls' text, the calls) and finish_reason."""
        if self._parser is None:
            return [], finish_reason
        parsed = self.parsed = self._parser.finish()
        deltas: list[dict[str, Any]] = []
        tail = _unsent(parsed, "".join(self._sent))
        if tail:
            deltas.append({"content": tail})
        if parsed.calls:
            deltas.append({"tool_calls": openai_tool_call_deltas(parsed.calls)})
            return deltas, TOOL_CALLS
        return deltas, finish_reason


def _unsent(parsed: ParsedReply, sent: str) -> str:
    """What the final content has that the stream has not sent yet: text held back as a possible call that was
    not one, or a refused call's text."""
    if parsed.content.startswith(sent):
        return parsed.content[len(sent) :]
    if sent.startswith(parsed.content) or sent.strip() == parsed.content.strip():
        return ""  # whitespace around the calls, trimmed from the final content
    return parsed.rejected_text
