"""Printing text Hearth did not write (model names, file names, Hub answers, titles) to a terminal.

A GGUF's general.name, a Hub listing, a server's error message or an imported title can hold terminal
control sequences: printed as they are, `\\x1b]0;...\\x07` retitles the window, `\\x1b[2J` clears it, OSC 52
writes the clipboard. Every command prints such text through safe(), which shows control characters (and
the bidirectional overrides that reorder what is read) as visible escapes. --json output needs nothing:
JSON escapes control characters itself.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

# C0 controls but tab and newline, DEL, C1 controls (0x9b is CSI on 8-bit terminals), and the Unicode
# bidirectional marks, embeddings, overrides and isolates.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: str) -> str:
    """text with every control character shown as an escape (\\x1b), newlines and tabs kept."""
    return _CONTROL.sub(_visible, text)


def for_stream(text: str, stream: TextIO) -> str:
    """Data a command writes for a pipe or a file stays byte-exact; on a terminal it is made safe."""
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):
        interactive = False
    return safe(text) if interactive else text


def warn(text: str) -> None:
    """One line for the user on stderr, made safe."""
    print(safe(text), file=sys.stderr)
