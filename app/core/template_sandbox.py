"""Render a model's embedded Jinja chat template safely: immutable sandbox, time and size limits.

A GGUF is a file from the internet; its template is code. Jinja's ImmutableSandboxedEnvironment already
blocks attribute escapes (__class__, __subclasses__ ...) and mutation; on top of that every function call,
attribute/item access, binary operation and output chunk checks a deadline, and results and output are
capped, so `{% for i in range(99999) %}{% for j in range(99999) %}` or `'x' * 10**9` end in a TemplateError
within about a second instead of hanging or exhausting memory.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from app.core.errors import TemplateError

RENDER_SECONDS = 1.0
MAX_OUTPUT_CHARS = 1_000_000
MAX_SEQUENCE = 1_000_000  # longest string/list a template operation may build


class _Deadline(Exception):
    pass


class _LimitedEnvironment(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment whose every hook also enforces the render deadline."""

    intercepted_binops = frozenset(["*", "**", "+"])

    def __init__(self) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        self._local = threading.local()  # renders may run on several threads at once
        self.filters["tojson"] = _tojson
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = lambda fmt: datetime.now().strftime(str(fmt))

    @property
    def deadline(self) -> float:
        return getattr(self._local, "deadline", float("inf"))

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._local.deadline = value

    def _tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Deadline()

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        self._tick()
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self._tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self._tick()
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self._tick()
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise SecurityError("exponent too large")
        if operator == "*":
            sized = left if isinstance(left, (str, list, tuple)) else right
            count = right if sized is left else left
            if isinstance(sized, (str, list, tuple)) and isinstance(count, int) and len(sized) * count > MAX_SEQUENCE:
                raise SecurityError("result too large")
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, (str, list, tuple)) and len(result) > MAX_SEQUENCE:
            raise SecurityError("result too large")
        return result


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    """transformers' tojson: no HTML escaping (Jinja's own escapes <, > and & for HTML pages)."""
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


_ENV = _LimitedEnvironment()


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def compile_template(source: str) -> jinja2.Template:
    """Compile (cached); TemplateError with Jinja's reason on a syntax error."""
    try:
        return _compile(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"syntax error on line {exc.lineno}: {exc.message}") from None
    except (jinja2.TemplateError, RecursionError, MemoryError, ValueError) as exc:
        raise TemplateError(f"cannot compile: {exc}") from None


def render_jinja(
    source: str,
    messages: Sequence[dict[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    extra: dict[str, Any] | None = None,
) -> str:
    """Render a chat template with the variables real templates expect. Raises TemplateError, never more."""
    template = compile_template(source)
    variables = {
        "messages": [dict(m) for m in messages],
        "bos_token": bos_token,
        "eos_token": eos_token,
        "add_generation_prompt": add_generation_prompt,
        "tools": None,
        **(extra or {}),
    }
    _ENV.deadline = time.monotonic() + RENDER_SECONDS
    size = 0
    parts: list[str] = []
    try:
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateError(f"output exceeds {MAX_OUTPUT_CHARS:,} characters; stopped")
            if time.monotonic() > _ENV.deadline:
                raise _Deadline()
            parts.append(chunk)
    except _Deadline:
        raise TemplateError(f"rendering took longer than {RENDER_SECONDS:g} s; stopped") from None
    except SecurityError as exc:
        raise TemplateError(f"blocked by the sandbox: {exc}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"the template refused the conversation: {exc}") from None
    except TemplateError:
        raise
    except (RecursionError, MemoryError, OverflowError) as exc:
        raise TemplateError(f"rendering failed: {type(exc).__name__}") from None
    except Exception as exc:  # any error inside hostile template code is a template problem, not ours
        raise TemplateError(f"rendering failed: {type(exc).__name__}: {exc}") from None
    return "".join(parts)
