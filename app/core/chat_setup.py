"""ChatSetup: what one conversation runs with (an assistant applied), and how a conversation stores it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import ConfigError, HearthError
from app.core.load_config import LoadConfig, LoraAdapter
from app.core.messages import ChatMessage
from app.core.sampling import PRESETS, SamplingSettings, canonical_preset_name
from app.core.structured import ReplyFormat

if TYPE_CHECKING:
    from app.core.store import Conversation

log = logging.getLogger("hearth.assistants")

CUSTOM_PRESET = "custom"
MAX_LORAS = 8


@dataclass(frozen=True)
class LoadOverrides:
    """The load settings an assistant decides; None leaves the app's (or the command line's) own value."""

    n_ctx: int | None = None
    n_gpu_layers: int | None = None
    loras: tuple[LoraAdapter, ...] = ()

    @property
    def empty(self) -> bool:
        return self.n_ctx is None and self.n_gpu_layers is None and not self.loras

    def validate(self) -> LoadOverrides:
        """Ranges only: the LoRA files are checked against the model when it loads (they may live elsewhere
        by then, and a missing one is reported there with its path)."""
        probe = LoadConfig(
            n_ctx=4096 if self.n_ctx is None else self.n_ctx,
            n_gpu_layers=0 if self.n_gpu_layers is None else self.n_gpu_layers,
        )
        probe.validate()
        if len(self.loras) > MAX_LORAS:
            raise ConfigError(f"at most {MAX_LORAS} LoRA adapters; got {len(self.loras)}")
        for adapter in self.loras:
            if not str(adapter.path).strip():
                raise ConfigError("a LoRA adapter needs a file path")
            adapter.check_scale()
        return self

    def apply(self, base: LoadConfig) -> LoadConfig:
        """base with this assistant's choices in it (its adapters replace base's)."""
        changes: dict[str, Any] = {}
        if self.n_ctx is not None:
            changes["n_ctx"] = self.n_ctx
        if self.n_gpu_layers is not None:
            changes["n_gpu_layers"] = self.n_gpu_layers
        if self.loras:
            changes["loras"] = self.loras
        return replace(base, **changes) if changes else base

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_ctx": self.n_ctx,
            "n_gpu_layers": self.n_gpu_layers,
            "loras": [{"path": str(a.path), "scale": a.scale} for a in self.loras],
        }

    @classmethod
    def from_dict(cls, data: Any) -> LoadOverrides:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError("load settings must be an object")
        loras = data.get("loras") or []
        if not isinstance(loras, list) or not all(
            isinstance(a, dict) and isinstance(a.get("path"), str) for a in loras
        ):
            raise ConfigError('LoRA adapters must be a list of {"path": "FILE.gguf", "scale": 1.0}')
        adapters = tuple(
            LoraAdapter(Path(a["path"]).expanduser(), _number(a.get("scale", 1.0), "LoRA scale")) for a in loras
        )
        return cls(
            _whole(data.get("n_ctx"), "context"), _whole(data.get("n_gpu_layers"), "GPU layers"), adapters
        ).validate()


def _whole(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be a whole number or null; got {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a number; got {value!r}")
    return float(value)


def sampling_column(preset: str, sampling: SamplingSettings) -> dict[str, Any]:
    """A conversation's sampling column: the preset's name and every value (as the chat session stores it)."""
    return {"preset": preset, **sampling.to_dict()}


def sampling_from_column(stored: dict[str, Any], fallback_preset: str = "balanced") -> tuple[str, SamplingSettings]:
    """(preset name, settings) from a sampling column; invalid or missing values fall back to the preset."""
    preset = canonical_preset_name(str(stored.get("preset") or fallback_preset))
    values = {k: v for k, v in stored.items() if k != "preset"}
    default = PRESETS.get(preset, SamplingSettings())
    if not values:
        return preset, default
    try:
        return preset, SamplingSettings.from_dict(values)
    except (HearthError, TypeError, ValueError) as exc:
        log.warning("stored sampling settings unusable (%s); using the %s preset", exc, preset)
        return preset, default


@dataclass(frozen=True)
class ChatSetup:
    """What a conversation runs with: a system prompt (variables already filled), template, sampling, reply
    format, load settings, tools and documents, and the assistant it came from (a snapshot, or None)."""

    system_prompt: str = ""
    template: str = ""  # "" = automatic
    preset: str = "balanced"
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    reply_format: ReplyFormat = field(default_factory=ReplyFormat)
    load: LoadOverrides = field(default_factory=LoadOverrides)
    tools: tuple[str, ...] = ()
    documents: tuple[str, ...] = ()
    assistant: dict[str, Any] | None = None  # Assistant.snapshot(values): the assistant as used, id and name

    @property
    def assistant_id(self) -> str | None:
        return self.assistant.get("id") if self.assistant else None

    @property
    def assistant_name(self) -> str | None:
        return self.assistant.get("name") if self.assistant else None

    @property
    def values(self) -> dict[str, str]:
        """The variable values the assistant's system prompt was filled with."""
        return dict(self.assistant.get("values", {})) if self.assistant else {}

    def grammar(self) -> str | None:
        """The grammar for every reply in this conversation (None: free text). Raises ConfigError."""
        return self.reply_format.grammar()

    def system_messages(self) -> list[ChatMessage]:
        """The system message a conversation starts with ([] when the prompt is blank)."""
        return [ChatMessage("system", self.system_prompt)] if self.system_prompt.strip() else []

    def load_config(self, base: LoadConfig) -> LoadConfig:
        return self.load.apply(base)

    def conversation_fields(self, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Keyword arguments for Store.create_conversation(**fields) or update_conversation(id, **fields).

        The system prompt, template and sampling go to their own columns; the rest to the conversation's meta
        (merged into `meta`, the conversation's current meta, so other keys survive): "assistant" (the
        snapshot), "reply_format", "load", "tools", "documents".
        """
        merged = dict(meta or {})
        merged.update(
            {
                "assistant": self.assistant,
                "reply_format": self.reply_format.to_dict(),
                "load": self.load.to_dict(),
                "tools": list(self.tools),
                "documents": list(self.documents),
            }
        )
        if self.assistant is None:
            merged.pop("assistant")
        return {
            "system_prompt": self.system_prompt,
            "template": self.template,
            "sampling": sampling_column(self.preset, self.sampling),
            "meta": merged,
        }

    def create_args(self, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Keyword arguments for app.core.reply.create_conversation(store, model_path=..., load_settings=...,
        **args): the same columns and meta as conversation_fields()."""
        return {
            "system_prompt": self.system_prompt,
            "template_override": self.template,
            "preset": self.preset,
            "sampling": self.sampling,
            "meta": self.conversation_fields(meta)["meta"],
        }

    def request_args(self) -> dict[str, Any]:
        """Keyword arguments for ReplyRequest(messages=..., **args): sampling, template override and grammar
        for the local engine, and the reply format in meta (a remote backend turns it into response_format).
        Raises ConfigError for an unusable schema."""
        return {
            "sampling": self.sampling,
            "template_override": self.template or None,
            "grammar": self.grammar(),
            "meta": {"reply_format": self.reply_format.to_dict()},
        }

    @classmethod
    def from_conversation(cls, conversation: Conversation, fallback_preset: str = "balanced") -> ChatSetup:
        """The setup a stored conversation runs with. Never raises: a damaged part falls back to its default
        (and is logged), so a conversation always opens."""
        meta = conversation.meta if isinstance(conversation.meta, dict) else {}
        preset, sampling = sampling_from_column(conversation.sampling or {}, fallback_preset)
        try:
            reply_format = ReplyFormat.from_dict(meta.get("reply_format"))
        except HearthError as exc:
            log.warning("conversation %s: reply format unusable (%s); using text", conversation.id, exc)
            reply_format = ReplyFormat()
        try:
            load = LoadOverrides.from_dict(meta.get("load"))
        except HearthError as exc:
            log.warning("conversation %s: load settings unusable (%s); ignored", conversation.id, exc)
            load = LoadOverrides()
        assistant = meta.get("assistant")
        return cls(
            system_prompt=conversation.system_prompt or "",
            template=conversation.template or "",
            preset=preset,
            sampling=sampling,
            reply_format=reply_format,
            load=load,
            tools=_names(meta.get("tools")),
            documents=_names(meta.get("documents")),
            assistant=assistant if isinstance(assistant, dict) else None,
        )


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(dict.fromkeys(v.strip() for v in value if isinstance(v, str) and v.strip()))
