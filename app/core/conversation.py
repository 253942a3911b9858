"""From a conversation to a reply: template, context-overflow trimming, then the engine.

Overflow policy: the system prompt and the newest message always stay; the oldest user/assistant pairs are
dropped. Dropping is done in chunks with hysteresis (drop until the conversation fills at most 3/4 of what
it may use, then keep that cut for as long as the conversation still fits), because every change at the
start of the prompt throws away llama.cpp's KV-cache reuse and re-evaluates the whole conversation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass

from app.core.engine import Engine, Event, GenerationStats, PromptRequest
from app.core.errors import ContextOverflowError, GenerationError
from app.core.sampling import SamplingSettings
from app.core.templates import Message, RenderedPrompt, TemplateChoice, choose_template, render_prompt

REFILL_FRACTION = 0.75  # after a cut, the kept conversation fills at most this share of its budget


@dataclass(frozen=True)
class PreparedPrompt:
    """The exact prompt sent for one reply ("show prompt"), and what was left out to make it fit."""

    rendered: RenderedPrompt
    messages: tuple[Message, ...]  # the messages actually rendered
    dropped: int  # how many of the oldest messages were left out
    prompt_tokens: int
    reply_budget: int  # tokens the reply may use at most


class ChatRunner:
    """Turns conversations into engine requests; remembers each conversation's cut between turns."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cuts: dict[Hashable, int] = {}

    def forget(self, conversation: Hashable) -> None:
        self._cuts.pop(conversation, None)

    def choice(self, override: str | None = None) -> TemplateChoice:
        model = self.engine.model
        return choose_template(model.info if model else None, override)

    def prepare(
        self,
        messages: Sequence[Message],
        sampling: SamplingSettings,
        *,
        override: str | None = None,
        conversation: Hashable = None,
    ) -> PreparedPrompt:
        """The prompt that fits the context, old turns dropped if needed. Raises ContextOverflowError."""
        model = self.engine.model
        if model is None:
            raise GenerationError("no model is loaded")
        if not messages or messages[-1].role != "user":
            raise GenerationError("a reply needs the conversation to end with a user message")
        choice = choose_template(model.info, override)
        system = [m for m in messages[:1] if m.role == "system"]
        turns = list(messages[len(system) :])
        n_ctx = model.n_ctx
        reserve = min(sampling.max_tokens, n_ctx // 2)  # the conversation always keeps half the context
        budget = n_ctx - reserve

        def attempt(cut: int) -> tuple[RenderedPrompt, int]:
            kept = system + turns[cut:]
            rendered = render_prompt(kept, model.info, override=override, choice=choice)
            return rendered, self.engine.count_tokens(rendered.text)

        cut = min(self._cuts.get(conversation, 0), _last_cut(turns))
        rendered, tokens = attempt(cut)
        if tokens > budget:
            cut, rendered, tokens = self._recut(turns, cut, budget, attempt)
        self._cuts[conversation] = cut
        return PreparedPrompt(
            rendered=rendered,
            messages=tuple(system + turns[cut:]),
            dropped=cut,
            prompt_tokens=tokens,
            reply_budget=min(sampling.max_tokens, n_ctx - tokens),
        )

    @staticmethod
    def _recut(
        turns: list[Message], cut: int, budget: int, attempt: Callable[[int], tuple[RenderedPrompt, int]]
    ) -> tuple[int, RenderedPrompt, int]:
        """Drop more pairs until the prompt fits in REFILL_FRACTION of the budget (or at least fits)."""
        target = int(budget * REFILL_FRACTION)
        best: tuple[int, RenderedPrompt, int] | None = None
        for candidate in range(cut + 2, _last_cut(turns) + 1, 2):  # whole user/assistant pairs
            rendered, tokens = attempt(candidate)
            if tokens <= budget and best is None:
                best = (candidate, rendered, tokens)
            if tokens <= target:
                return candidate, rendered, tokens
        if best is not None:
            return best
        last = _last_cut(turns)
        rendered, tokens = attempt(last)
        if tokens > budget:
            raise ContextOverflowError(
                f"the message is too long: with the system prompt it needs {tokens} tokens, but the context "
                f"leaves {budget} for the conversation; shorten it or load the model with a larger context"
            )
        return last, rendered, tokens

    def stream(
        self,
        messages: Sequence[Message],
        sampling: SamplingSettings,
        *,
        override: str | None = None,
        grammar: str | None = None,
        conversation: Hashable = None,
        prepared: PreparedPrompt | None = None,
    ) -> Iterator[Event]:
        """Stream a reply to the conversation: TextChunk events, then GenerationStats (with dropped count)."""
        prepared = prepared or self.prepare(messages, sampling, override=override, conversation=conversation)
        request = PromptRequest(
            text=prepared.rendered.text,
            stop=prepared.rendered.stop,
            sampling=dataclasses.replace(sampling, max_tokens=max(1, prepared.reply_budget)),
            grammar=grammar,
        )
        for event in self.engine.generate(request):
            if isinstance(event, GenerationStats):
                event = dataclasses.replace(event, dropped_messages=prepared.dropped)
            yield event


def _last_cut(turns: list[Message]) -> int:
    """The largest number of leading messages that may be dropped: everything but the newest message,
    in whole pairs so user/assistant alternation survives (some templates insist on it)."""
    droppable = len(turns) - 1
    return droppable - droppable % 2
