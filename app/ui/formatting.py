"""Numbers for people: sizes, parameter counts, context lengths (core formatters, imported lazily).

app.core.gguf_info pulls in numpy through gguf; importing it only when the first number is formatted keeps
the window's cold start short (the library scan that produces those numbers imports it anyway).
"""

from __future__ import annotations


def format_bytes(count: float) -> str:
    from app.core.gguf_info import format_bytes as core_format_bytes

    return core_format_bytes(count)


def format_params(count: int) -> str:
    from app.core.gguf_info import format_params as core_format_params

    return core_format_params(count) if count else "?"


def format_context(tokens: int | None) -> str:
    """32768 -> '32K', 131072 -> '128K', 5000 -> '5,000'."""
    if not tokens:
        return "?"
    if tokens % 1024 == 0:
        return f"{tokens // 1024}K"
    return f"{tokens:,}"
