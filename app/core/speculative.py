"""Speculative decoding: cheap guesses of the next tokens, checked by the model in one batch.

Drafts come from the conversation itself (prompt lookup: the tokens that followed the last few tokens the
previous time they appeared — replies that quote, edit, summarise or fill JSON from the prompt) or from a
small draft model with the same vocabulary. The target model decodes the pending token and the drafts in one
llama_decode, then samples at each position in turn with its own sampler: a draft token is kept only while it
equals the token the model samples there. Every emitted token is therefore a sample of the target model given
what precedes it (greedy output is the same as without drafts; with sampling the distribution is the
target's), and the sampler chain sees exactly the emitted tokens.

Whether it pays depends on the machine and the model: verifying a batch of k+1 tokens costs between one and
k+1 single steps (on a 2-core CPU: about two for gemma-3-270m at k = 8, about k+1 for a 1.1B model). The
policy measures both sides as it goes: the time of each batch size, and per conversation how often drafts
are accepted; it drafts only as many tokens as the expected gain justifies, and none when nothing pays.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# Drafts checked per step. llama.cpp's CPU kernels give a token bit-for-bit the same logits in a batch of up
# to 3 tokens as alone (with flash attention; its repacked Q4_K/Q4_0 weights switch to a 4-row kernel from 4
# tokens on, and the non-flash attention path differs from 2 on: measured on gemma-3-270m Q4_K_M, max |logit
# difference| 0.7-1.5 against 0.0). Two drafts with the pending token keep greedy output byte-identical.
MAX_DRAFT = 2
MIN_GAIN = 1.05  # expected tokens per unit of time, relative to plain decoding, worth drafting for
PRIOR_ACCEPTED, PRIOR_DRAFTED = 3.0, 5.0  # acceptance starts at 0.6 and follows what is observed


class Drafter(Protocol):
    """Proposes the tokens that may follow `tokens` and then `pending` (the token sampled last)."""

    def propose(self, tokens: Sequence[int], pending: int, limit: int) -> list[int]: ...

    def rewind(self, kept: int) -> None:
        """Only the first `kept` tokens of the history stand (drafts were rejected after them)."""
        ...


class LookupDrafter:
    """Prompt lookup decoding: find the latest earlier occurrence of the history's last n tokens (n from
    ngram_max down to ngram_min) and propose what followed it.

    An index of n-grams to where they last ended grows with the history, so a proposal costs a few dictionary
    lookups; the engine calls rewind() whenever the history is cut (rejected drafts, an edited prompt)."""

    def __init__(self, ngram_max: int = 4, ngram_min: int = 2) -> None:
        self.ngram_max = ngram_max
        self.ngram_min = ngram_min
        self._index: dict[tuple[int, ...], int] = {}  # n-gram -> position just after its latest occurrence
        self._indexed = 0  # n-grams ending at positions < _indexed are in the index

    def _extend(self, history: Sequence[int], upto: int) -> None:
        for end in range(max(self._indexed, self.ngram_min), upto + 1):
            for n in range(self.ngram_min, min(self.ngram_max, end) + 1):
                self._index[tuple(history[end - n : end])] = end
        self._indexed = max(self._indexed, upto + 1)

    def propose(self, tokens: Sequence[int], pending: int, limit: int) -> list[int]:
        """Without copying the history (tokens then pending): it may be a long conversation."""
        if limit <= 0 or len(tokens) < self.ngram_min:
            return []
        self._extend(tokens, len(tokens))  # every n-gram of tokens has a known continuation
        for n in range(min(self.ngram_max, len(tokens) + 1), self.ngram_min - 1, -1):
            start = self._index.get((*tokens[len(tokens) - n + 1 :], pending))
            if start is not None and start <= len(tokens):
                drafts = list(tokens[start : start + limit])
                if start + limit > len(tokens) and len(drafts) < limit:
                    drafts.append(pending)  # the continuation runs into the pending token itself
                return drafts
        return []

    def rewind(self, kept: int) -> None:
        if kept < self._indexed:
            # n-grams from the cut part may point past the history now: rebuild from what stands (rare: an
            # edited prompt; rejected drafts only cut the last few tokens, which were never indexed).
            self._index = {gram: end for gram, end in self._index.items() if end <= kept - 1}
            self._indexed = max(0, kept - 1)


@dataclass
class _Acceptance:
    drafted: float = PRIOR_DRAFTED
    accepted: float = PRIOR_ACCEPTED
    steps: int = 0

    @property
    def rate(self) -> float:
        return self.accepted / self.drafted


@dataclass
class SpecPolicy:
    """When and how much to draft, from measured batch costs and each conversation's acceptance.

    step_ms[n]: a running average of the time of a decode of n tokens of one sequence (n = 1: a plain step).
    """

    step_ms: dict[int, float] = field(default_factory=dict)
    acceptance: dict[Hashable, _Acceptance] = field(default_factory=dict)
    switched_off: set[Hashable] = field(default_factory=set)
    draft_ms: float = 0.0  # a draft model's time per drafted token (0 for prompt lookup, which is free)

    def observe_draft(self, ms_per_token: float) -> None:
        self.draft_ms = ms_per_token if not self.draft_ms else self.draft_ms * 0.8 + ms_per_token * 0.2

    def observe_step(self, batch: int, ms: float) -> None:
        old = self.step_ms.get(batch)
        self.step_ms[batch] = ms if old is None else old * 0.8 + ms * 0.2

    def observe_drafts(self, key: Hashable, drafted: int, accepted: int) -> None:
        stats = self.acceptance.setdefault(key, _Acceptance())
        stats.drafted += drafted
        stats.accepted += accepted
        stats.steps += 1
        # Off for this conversation once enough evidence says drafting cannot pay even at its best length.
        if stats.steps >= 8 and self.best_length(key, MAX_DRAFT) == 0 and self._costs_known():
            self.switched_off.add(key)

    def _costs_known(self) -> bool:
        return 1 in self.step_ms and any(n > 1 for n in self.step_ms)

    def cost(self, batch: int) -> float:
        """Time of a batch of `batch` tokens relative to one token (interpolated; 1.0 while only single
        steps were measured, which makes the first tries optimistic: they measure the cost)."""
        single = self.step_ms.get(1)
        if single is None or single <= 0:
            return float(batch)
        known = sorted(n for n in self.step_ms if n > 1)
        if not known:
            return 1.0
        if batch in self.step_ms:
            return self.step_ms[batch] / single
        below = max((n for n in known if n < batch), default=1)
        above = min((n for n in known if n > batch), default=None)
        low = self.step_ms[below] / single if below > 1 else 1.0
        if above is None:  # beyond what was measured: extend the last slope
            slope = (low - 1.0) / max(below - 1, 1)
            return low + slope * (batch - below)
        high = self.step_ms[above] / single
        return low + (high - low) * (batch - below) / (above - below)

    def expected_gain(self, key: Hashable, k: int) -> float:
        """Tokens per unit of time with k drafts, relative to plain decoding."""
        p = self.acceptance.get(key, _Acceptance()).rate
        tokens = 1.0 + sum(p**i for i in range(1, k + 1))
        single = self.step_ms.get(1) or 1.0
        return tokens / (self.cost(k + 1) + k * self.draft_ms / single)

    def best_length(self, key: Hashable, available: int) -> int:
        """How many of the available drafts to check now (0: decode plainly)."""
        if key in self.switched_off or available <= 0 or 1 not in self.step_ms:
            return 0  # (a plain step is timed first: the run's first token always is one)
        best, best_gain = 0, MIN_GAIN
        for k in range(1, min(available, MAX_DRAFT) + 1):
            gain = self.expected_gain(key, k)
            if gain > best_gain and not math.isclose(gain, best_gain):
                best, best_gain = k, gain
        return best

    def forget(self) -> None:
        """A new model: its costs are unknown again (conversations' acceptance stays a fair prior)."""
        self.step_ms.clear()
