"""The messages of a conversation as templates and backends see them, in OpenAI's chat shapes.

A ChatMessage is what a prompt is rendered from (and what an OpenAI-compatible server receives): a role,
its text, and for tool use the assistant's tool calls or the tool result's call id. The history store has
its own row type (app.core.store.StoredMessage) with ids, branches and statistics; the two are converted at
the edge (StoredMessage.to_chat()).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ToolCall:
    """One function call the assistant made: OpenAI's {"id", "type": "function", "function": {...}}.

    arguments is the JSON text as the model wrote it (OpenAI sends a string too); arguments_dict() parses it.
    """

    id: str
    name: str
    arguments: str = "{}"

    def arguments_dict(self) -> dict[str, Any]:
        """The arguments as an object ({} when the text is not a JSON object)."""
        try:
            value = json.loads(self.arguments)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    @classmethod
    def from_openai(cls, data: dict[str, Any]) -> ToolCall:
        function = data.get("function") or {}
        arguments = function.get("arguments", "{}")
        if not isinstance(arguments, str):  # some clients send the object itself
            arguments = json.dumps(arguments, ensure_ascii=False)
        return cls(id=str(data.get("id") or ""), name=str(function.get("name") or ""), arguments=arguments)


@dataclass(frozen=True)
class ChatMessage:
    """One turn: role "system" | "user" | "assistant" | "tool".

    tool_calls: an assistant turn's calls (its content may be empty); tool_call_id and name: a tool
    result's call and function.
    """

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = field(default_factory=tuple)
    tool_call_id: str | None = None
    name: str | None = None

    def to_openai(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            data["name"] = self.name
        return data

    def to_template(self) -> dict[str, Any]:
        """The dict a Jinja chat template receives: OpenAI's shape, with call arguments as objects (the
        published Llama-3.1, Qwen2.5 and Mistral templates apply `tojson` to them)."""
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_dict()}}
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            data["name"] = self.name
        return data
