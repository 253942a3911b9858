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
from typing import Any

from app.core.engine import Engine, Event, GenerationStats, PromptRequest
from app.core.errors import ContextOverflowError, GenerationError
from app.core.messages import ChatMessage
from app.core.sampling import SamplingSettings
from app.core.templates import RenderedPrompt, TemplateChoice, choose_template, render_prompt

REFILL_FRACTION = 0.75  # after a cut, the kept conversation fills at most this share of its budget


@dataclass(frozen=True)
class PreparedPrompt:
    """The exact prompt sent for one reply ("show prompt"), and what was left out to make it fit."""

    rendered: RenderedPrompt
    messages: tuple[ChatMessage, ...]  # the messages actually rendered
    dropped: int  # how many of the oldest messages were left out
    prompt_tokens: int
    reply_budget: int  # tokens the reply may use at most


class ChatRunner:
    """Turns conversations into engine requests; remembers each conversation's cut between turns."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Per conversation: how many of the oldest turns the last reply left out, those turns (a cut is only
        # reused while the conversation still starts with them; an edit or another branch starts over) and
        # how many turns there were (fewer now: something was deleted, so everything may fit again).
        self._cuts: dict[Hashable, tuple[int, tuple[ChatMessage, ...], int]] = {}

    def forget(self, conversation: Hashable) -> None:
        self._cuts.pop(conversation, None)

    def choice(self, override: str | None = None) -> TemplateChoice:
        model = self.engine.model
        return choose_template(model.info if model else None, override)

    def prepare(
        self,
        messages: Sequence[ChatMessage],
        sampling: SamplingSettings,
        *,
        override: str | None = None,
        conversation: Hashable = None,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> PreparedPrompt:
        """The prompt that fits the context, old turns dropped if needed. Raises ContextOverflowError.

        tools: OpenAI tool definitions shown to the model (see templates.render_prompt); with tools the
        conversation may end with tool results instead of a user message."""
        model = self.engine.model
        if model is None:
            raise GenerationError("no model is loaded")
        if not messages or messages[-1].role not in ("user", "tool"):
            raise GenerationError("a reply needs the conversation to end with a user message (or tool results)")
        choice = choose_template(model.info, override)
        system = [m for m in messages[:1] if m.role == "system"]
        turns = list(messages[len(system) :])
        n_ctx = model.n_ctx
        reserve = min(sampling.max_tokens, n_ctx // 2)  # the conversation always keeps half the context
        budget = n_ctx - reserve

        def attempt(cut: int) -> tuple[RenderedPrompt, int]:
            kept = system + turns[cut:]
            rendered = render_prompt(kept, model.info, override=override, choice=choice, tools=tools)
            return rendered, self.engine.count_tokens(rendered.text, key=conversation)

        cut, shrunk = self._remembered_cut(conversation, turns)
        cut = min(cut, _last_cut(turns))
        rendered, tokens = attempt(cut)
        if cut and shrunk and tokens <= budget:
            whole = attempt(0)
            if whole[1] <= int(budget * REFILL_FRACTION):
                cut, (rendered, tokens) = 0, whole
        if tokens > budget:
            cut, rendered, tokens = self._recut(turns, cut, budget, attempt)
        self._cuts[conversation] = (cut, tuple(turns[:cut]), len(turns))
        return PreparedPrompt(
            rendered=rendered,
            messages=tuple(system + turns[cut:]),
            dropped=cut,
            prompt_tokens=tokens,
            reply_budget=min(sampling.max_tokens, n_ctx - tokens),
        )

    def _remembered_cut(self, conversation: Hashable, turns: list[ChatMessage]) -> tuple[int, bool]:
        """The cut to start from, and whether the conversation is shorter than last time."""
        cut, dropped, count = self._cuts.get(conversation, (0, (), 0))
        return (cut if tuple(turns[:cut]) == dropped else 0), len(turns) < count

    @staticmethod
    def _recut(
        turns: list[ChatMessage], cut: int, budget: int, attempt: Callable[[int], tuple[RenderedPrompt, int]]
    ) -> tuple[int, RenderedPrompt, int]:
        """Drop more of the oldest exchanges: the fewest that bring the prompt within REFILL_FRACTION of the
        budget, else the fewest that make it fit at all. Binary search: a long history that meets a small
        context for the first time costs a handful of renders, not one per message."""
        points = [i for i in _cut_points(turns) if i > cut]
        results: dict[int, tuple[RenderedPrompt, int]] = {}

        def tokens_at(index: int) -> int:
            point = points[index]
            if point not in results:
                results[point] = attempt(point)
            return results[point][1]

        last = len(points) - 1
        if last < 0 or tokens_at(last) > budget:
            tokens = tokens_at(last) if last >= 0 else attempt(cut)[1]
            raise ContextOverflowError(
                f"the message is too long: with the system prompt it needs {tokens} tokens, but the context "
                f"leaves {budget} for the conversation; shorten it or load the model with a larger context"
            )
        limit = int(budget * REFILL_FRACTION) if tokens_at(last) <= int(budget * REFILL_FRACTION) else budget
        low, high = 0, last  # tokens shrink as the cut grows: find the first point within the limit
        while low < high:
            mid = (low + high) // 2
            if tokens_at(mid) <= limit:
                high = mid
            else:
                low = mid + 1
        point = points[low]
        rendered, tokens = results[point]
        return point, rendered, tokens

    def stream(
        self,
        messages: Sequence[ChatMessage],
        sampling: SamplingSettings,
        *,
        override: str | None = None,
        grammar: str | None = None,
        conversation: Hashable = None,
        prepared: PreparedPrompt | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Iterator[Event]:
        """Stream a reply to the conversation: TextChunk events, then GenerationStats (with dropped count)."""
        prepared = prepared or self.prepare(
            messages, sampling, override=override, conversation=conversation, tools=tools
        )
        request = PromptRequest(
            text=prepared.rendered.text,
            stop=prepared.rendered.stop,
            sampling=dataclasses.replace(sampling, max_tokens=max(1, prepared.reply_budget)),
            grammar=grammar,
        )
        for event in self.engine.generate(request, key=conversation):
            if isinstance(event, GenerationStats):
                event = dataclasses.replace(event, dropped_messages=prepared.dropped)
            yield event


def _cut_points(turns: list[ChatMessage]) -> list[int]:
    """Where the kept conversation may start: where an exchange starts (a user message after a reply), so
    whole exchanges are dropped and the user/assistant alternation some templates insist on survives; and
    at the newest message, the last resort."""
    last = len(turns) - 1
    return [i for i, m in enumerate(turns) if i > 0 and m.role == "user" and (turns[i - 1].role != "user" or i == last)]


def _last_cut(turns: list[ChatMessage]) -> int:
    """The most leading messages that may be dropped: everything before the newest user message."""
    points = _cut_points(turns)
    return points[-1] if points else 0
