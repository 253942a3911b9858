"""The chat-level backend seam: conversation messages + sampling -> a prepared prompt -> a streamed reply.

The local llama.cpp engine is the first backend (templates and context trimming through ChatRunner); a
remote OpenAI-compatible server is another (it takes messages, applies its own template, has no GGUF to
inspect). The host runs local replies on its engine thread, interleaved by its scheduler; other backends
stream on a thread of their own.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Protocol

from app.core.conversation import ChatRunner
from app.core.engine import Engine, Event, PromptRequest
from app.core.errors import GenerationError
from app.core.reply import PreparedReply, ReplyRequest


class ChatBackend(Protocol):
    """A backend the host can send a conversation to."""

    name: str

    def prepare(self, request: ReplyRequest) -> PreparedReply:
        """The exact input for this reply (raises HearthError when it cannot be sent: no model, too long)."""
        ...

    def stream(self, prepared: PreparedReply, cancel: threading.Event) -> Iterator[Event]:
        """TextChunk events, then exactly one GenerationStats; cancel ends it within a token (or closes the
        connection). Failures end in finish_reason "error" with the reason, after the text received."""
        ...


class LocalBackend:
    """The model loaded in the engine: Hearth's template choice, context trimming, the engine's stream."""

    name = "local"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.runner = ChatRunner(engine)

    def prepare(self, request: ReplyRequest) -> PreparedReply:
        model = self.engine.model
        if model is None:
            raise GenerationError("no model is loaded; load one first")
        prepared = self.runner.prepare(
            list(request.messages),
            request.sampling,
            override=request.template_override,
            conversation=request.cache_key,
        )
        rendered = prepared.rendered
        choice = rendered.choice
        payload = PromptRequest(
            text=rendered.text,
            stop=tuple(dict.fromkeys(rendered.stop + request.stop)),
            sampling=dataclasses.replace(request.sampling, max_tokens=max(1, prepared.reply_budget)),
            grammar=request.grammar,
        )
        return PreparedReply(
            prompt_text=rendered.text,
            template=choice.name,
            template_label=choice.label,
            template_reason=choice.reason,
            template_warning=choice.warning,
            dropped=prepared.dropped,
            prompt_tokens=prepared.prompt_tokens,
            model_name=model.path.name,
            payload=payload,
            load_settings=model.config.to_dict(),
            key=request.cache_key,
        )

    def stream(self, prepared: PreparedReply, cancel: threading.Event) -> Iterator[Event]:
        if cancel.is_set():
            self.engine.cancel()
        yield from self.engine.generate(prepared.payload, key=prepared.key)

    def forget(self, key: object) -> None:
        self.runner.forget(key)
