"""Stop strings over a token stream: show text as soon as it cannot be the start of a stop string."""

from __future__ import annotations

from collections.abc import Iterable


class StopMatcher:
    """Feed streamed text; get back what is safe to show and whether a stop string was reached.

    Text that could still turn into a stop string (e.g. "<|im" when "<|im_end|>" is a stop) is held back
    until the next chunk decides it, so no part of a stop string ever reaches the reply.
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to show, stop reached). After a stop, the text after it is discarded."""
        buffer = self._held + text
        hits = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._held = ""
            return buffer[: min(hits)], True
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest end of buffer that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:length]):
                    best = length
                    break
        return best

    def flush(self) -> str:
        """The held-back text, when the stream ended without completing a stop string."""
        held, self._held = self._held, ""
        return held
