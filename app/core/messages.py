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

from app.core.errors import ConfigError

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


def messages_from_openai(data: Any) -> list[ChatMessage]:
    """A JSON list of messages in OpenAI's chat shapes (content may be null beside tool_calls, or a list of
    text parts; "developer" is read as "system"); ConfigError naming the first message that is wrong."""
    if not isinstance(data, list) or not data:
        raise ConfigError("the messages must be a non-empty JSON list")
    messages = []
    for index, item in enumerate(data):
        where = f"message {index}"
        if not isinstance(item, dict) or not isinstance(item.get("role"), str):
            raise ConfigError(f"{where} needs a string 'role'")
        role = "system" if item["role"] == "developer" else item["role"]
        if role not in ROLES:
            raise ConfigError(f"{where} has role {role!r}; use system, user, assistant or tool")
        content = _content_text(item.get("content"), where, optional=role == "assistant" and "tool_calls" in item)
        raw_calls = item.get("tool_calls") or []
        if role != "assistant" and raw_calls:
            raise ConfigError(f"{where}: only assistant messages have tool_calls")
        if not isinstance(raw_calls, list) or not all(
            isinstance(c, dict) and isinstance(c.get("function"), dict) and c["function"].get("name") for c in raw_calls
        ):
            raise ConfigError(f"{where}: tool_calls must be a list of {{'id', 'function': {{'name', 'arguments'}}}}")
        call_id = item.get("tool_call_id")
        if role == "tool" and not isinstance(call_id, str):
            raise ConfigError(f"{where}: a tool result needs the 'tool_call_id' of the call it answers")
        name = item.get("name")
        messages.append(
            ChatMessage(
                role,
                content,
                tuple(ToolCall.from_openai(c) for c in raw_calls),
                call_id if role == "tool" else None,
                name if isinstance(name, str) and role == "tool" else None,
            )
        )
    return messages


def _content_text(content: Any, where: str, *, optional: bool) -> str:
    if content is None and optional:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise ConfigError(f"{where} needs string 'content' (or a list of text parts)")
