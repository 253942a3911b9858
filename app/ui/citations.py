"""Citations [1], [2] ... in a reply's Markdown as links to its sources: `hearth-source:N`, a scheme of our
own that the chat view turns into the passage view (never a file URL: the reply's text decides nothing
about which file opens). Numbers with no source stay plain text; code is left alone."""

from __future__ import annotations

import re

from app.core.documents.retrieval import CITATION, cited_numbers

SCHEME = "hearth-source"
_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")


def source_url(number: int) -> str:
    return f"{SCHEME}:{number}"


def source_number(url: str) -> int | None:
    """N of a `hearth-source:N` link; None for any other link."""
    scheme, _, rest = url.partition(":")
    if scheme.lower() != SCHEME or not rest.isdigit():
        return None
    return int(rest)


def link_citations(markdown: str, count: int) -> str:
    """The Markdown with each cited number 1..count made a link to its source."""
    if count <= 0 or "[" not in markdown:
        return markdown
    lines = markdown.split("\n")
    fence = ""
    for i, line in enumerate(lines):
        opened = _FENCE.match(line)
        if fence:
            if opened and opened.group(1) == fence:
                fence = ""
            continue
        if opened:
            fence = opened.group(1)
            continue
        lines[i] = _outside_code(line, count)
    return "\n".join(lines)


def _outside_code(line: str, count: int) -> str:
    parts, last = [], 0
    for code in _INLINE_CODE.finditer(line):
        parts.append(CITATION.sub(lambda m: _links(m, count), line[last : code.start()]))
        parts.append(code.group(0))
        last = code.end()
    parts.append(CITATION.sub(lambda m: _links(m, count), line[last:]))
    return "".join(parts)


def _links(match: re.Match[str], count: int) -> str:
    numbers = cited_numbers(match)
    if not numbers or any(not 1 <= n <= count for n in numbers):
        return match.group(0)  # a number with no source (or a list index like [0]): left as written
    return "".join(f"[\\[{n}\\]]({source_url(n)})" for n in dict.fromkeys(numbers))
