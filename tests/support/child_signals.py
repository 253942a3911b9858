"""Children that tests interrupt get the default SIGINT handling, whatever the test runner inherited.

A command started in the background from a non-interactive shell (`pytest &`, nohup, a scheduler) runs
with SIGINT ignored, and its children inherit that: Python then installs no KeyboardInterrupt handler
and a test's Ctrl-C never reaches the child. Every test that sends a child a signal starts it with
preexec_fn=default_signals (or calls default_signals() first in its own preexec_fn).
"""

from __future__ import annotations

import signal


def default_signals() -> None:
    """In the child, before exec: SIGINT and SIGTERM back to their default disposition."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
