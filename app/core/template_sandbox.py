"""Render a model's embedded Jinja chat template with limits that hold: a sandbox in a child process.

A GGUF is a file from the internet; its template is code. Three layers keep it from hanging Hearth or
exhausting memory:

1. Jinja's ImmutableSandboxedEnvironment blocks attribute escapes (__class__, __subclasses__ ...) and
   mutation.
2. _LimitedEnvironment bounds time and size in-process: calls, filters, attribute and item access, loop
   iterations and operators check a deadline; whatever builds text or lists (center, `%` and format
   widths, join, `~`, tojson(indent=), `*`, `**`, replace, indent ...) checks the size it would build
   *before* building it and charges it to a per-render budget. Compile-time constant folding is off: Jinja
   evaluated `'x'|center(600000000)` while compiling (2.4 GB, 13 s) before any limit applied.
3. Every render runs in a worker process (a child on pipes), started once and reused (a normal render
   costs a round trip of about a millisecond), with a hard timeout after which the parent kills it, and on
   Linux a memory cap (RLIMIT_AS) and a SIGALRM deadline. Whatever slips past layer 2 costs at most
   RENDER_SECONDS plus a grace period and WORKER_MEMORY_BYTES; the template is refused with a one-line
   TemplateError, and templates.choose_template falls back to a built-in family.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import queue
import re
import signal
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import _PassArg, pass_context, pass_environment

from app.core.errors import TemplateError

log = logging.getLogger("hearth.templates")

RENDER_SECONDS = 1.0
KILL_GRACE_SECONDS = 1.0  # past the deadline, the parent stops waiting and kills the worker
START_SECONDS = 60.0  # starting the worker: an interpreter and jinja2, on a machine that may be busy
MAX_OUTPUT_CHARS = 1_000_000
MAX_SEQUENCE = 1_000_000  # longest string/list one operation may build
MAX_BUILT = 20_000_000  # characters and list items all operations of one render may build together
MAX_INT_BITS = 100_000  # about 30,000 digits
MAX_WIDTH = 10_000  # a `%`/format width or precision
MAX_INDENT = 64  # tojson(indent=)
WORKER_MEMORY_BYTES = 512 * 1024 * 1024  # address space a render may add to the worker's (Linux)
MAX_REPLY_BYTES = 64 * 1024 * 1024
_TICK_FILTER = "hearth_ticking"  # wraps every for loop's iterable (see _LimitedEnvironment._parse)


class _Deadline(Exception):
    pass


class _Limits(threading.local):
    """The current render's deadline and what it has built so far (per thread: renders may overlap)."""

    deadline = math.inf
    built = 0


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- sizes ---------------------------------------------------------------------------------------------------


def _text_size(value: Any, limit: int = MAX_SEQUENCE, depth: int = 0) -> int:
    """Roughly how many characters str(value) has, never walking further than needed to pass limit."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, float):
        return 24
    if depth > 50:
        return limit + 1
    if isinstance(value, dict):
        items: Iterable[Any] = (x for pair in value.items() for x in pair)
        total = 2
    elif isinstance(value, (list, tuple, set, frozenset)):
        items, total = value, 2
    else:
        return 64  # an object's repr, a jinja2 Undefined, a namespace ...
    for item in items:
        total += _text_size(item, limit, depth + 1) + 2
        if total > limit:
            return limit + 1
    return total


def _size_of_result(value: Any) -> int:
    if isinstance(value, (str, list, tuple, dict, set, frozenset)):
        return len(value)
    return 0


class _LimitedGenerator(CodeGenerator):
    """Jinja's code generator, with `~` going through environment.concat (which checks sizes first)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[a-zA-Z%]")


class _LimitedEnvironment(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment whose hooks enforce the render deadline and size limits."""

    intercepted_binops = frozenset(["*", "**", "+", "%"])
    code_generator_class = _LimitedGenerator

    def __init__(self) -> None:
        # optimized=False: no constant folding by the optimizer; the pass_context finalize and filters stop
        # the code generator's own folding of output (it only folds what needs no context).
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.loopcontrols"],
            optimized=False,
            finalize=_finalize,
        )
        self.limits = _Limits()
        self.filters["tojson"] = _tojson
        self.filters = {name: _guard_filter(name, func) for name, func in self.filters.items()}
        self.filters[_TICK_FILTER] = _ticking
        self.globals.pop("lipsum", None)  # lorem ipsum generator: no chat template uses it, 100,000 paragraphs
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = _strftime_now

    # ---- bookkeeping
    def tick(self) -> None:
        if time.monotonic() > self.limits.deadline:
            raise _Deadline()

    def charge(self, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
            raise SecurityError(f"a number of more than {MAX_INT_BITS:,} bits")
        size = _size_of_result(value)
        if size > MAX_SEQUENCE:
            raise SecurityError(f"a result of more than {MAX_SEQUENCE:,} characters or items")
        self.limits.built += size
        if self.limits.built > MAX_BUILT:
            raise SecurityError(f"the template built more than {MAX_BUILT:,} characters")
        return value

    def refuse_if(self, predicted: int, what: str) -> None:
        if predicted > MAX_SEQUENCE:
            raise SecurityError(f"{what} would build more than {MAX_SEQUENCE:,} characters or items")

    # ---- parsing: every for loop ticks per iteration
    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            ticking = nodes.Filter(loop.iter, _TICK_FILTER, [], [], None, None, lineno=loop.iter.lineno)
            ticking.set_environment(self)
            loop.iter = ticking
        return tree

    # ---- the sandbox's hooks
    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        self.tick()
        _check_method_call(self, __obj, args)
        return self.charge(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        template_text: str = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            self.tick()
            _check_format_string(self, template_text, args, kwargs)
            return self.charge(wrapped(*args, **kwargs))

        return checked

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self.tick()
        _check_binop(self, operator, left, right)
        return self.charge(super().call_binop(context, operator, left, right))

    def concat(self, parts: Iterable[str]) -> str:
        self.tick()
        total = 0
        for part in parts:
            total += _text_size(part, MAX_SEQUENCE)
            self.refuse_if(total, "`~`")
        return self.charge("".join(map(str, parts)))


# ---- checks before building -------------------------------------------------------------------------------------


def _int_arg(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _check_binop(env: _LimitedEnvironment, operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for sized, count in ((left, right), (right, left)):
            if isinstance(sized, (str, list, tuple)) and isinstance(count, int):
                env.refuse_if(len(sized) * max(count, 0), "`*`")
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise SecurityError(f"`*` would build a number of more than {MAX_INT_BITS:,} bits")
    elif operator == "**":
        ints = isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1
        if ints and left.bit_length() * right > MAX_INT_BITS:
            raise SecurityError(f"`**` would build a number of more than {MAX_INT_BITS:,} bits")
    elif operator == "+":
        if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            env.refuse_if(len(left) + len(right), "`+`")
    elif operator == "%" and isinstance(left, str):
        _check_percent(env, left, right)


def _check_percent(env: _LimitedEnvironment, template_text: str, values: Any) -> None:
    """`'%600000000s' % x` and the format filter: widths and precisions are bounded, values measured."""
    for match in _PERCENT_SPEC.finditer(template_text):
        for number in match.groups():
            if number == "*":
                raise SecurityError("`%` with a `*` width")
            if number and int(number) > MAX_WIDTH:
                raise SecurityError(f"`%` width or precision {number} (at most {MAX_WIDTH:,})")
    env.refuse_if(len(template_text) + _text_size(values), "`%`")


def _check_format_string(env: _LimitedEnvironment, template_text: str, args: Any, kwargs: Any) -> None:
    """str.format: every field's width/precision bounded (nested {} in a spec would hide it: refused)."""
    try:
        fields = list(string.Formatter().parse(template_text))
    except ValueError:
        return  # str.format itself will raise the same error
    for _literal, _name, spec, _conversion in fields:
        if not spec:
            continue
        if "{" in spec:
            raise SecurityError("str.format with a nested field in a format spec")
        for number in re.findall(r"\d+", spec):
            if int(number) > MAX_WIDTH:
                raise SecurityError(f"str.format width or precision {number} (at most {MAX_WIDTH:,})")
    env.refuse_if(len(template_text) + _text_size(args) + _text_size(kwargs), "str.format")


_WIDTH_METHODS = frozenset(["center", "ljust", "rjust", "zfill"])
_REFUSED_METHODS = frozenset(["translate", "maketrans"])  # a table can map a character to anything


def _check_method_call(env: _LimitedEnvironment, func: Any, args: tuple[Any, ...]) -> None:
    owner = getattr(func, "__self__", None)
    name = getattr(func, "__name__", "")
    if not isinstance(owner, str):
        return
    if name in _REFUSED_METHODS:
        raise SecurityError(f"str.{name} is not available to templates")
    if name in _WIDTH_METHODS and args:
        env.refuse_if(_int_arg(args[0]), f"str.{name}")
    elif name == "expandtabs":
        tab = _int_arg(args[0]) if args else 8
        env.refuse_if(len(owner) + owner.count("\t") * max(tab, 0), "str.expandtabs")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        env.refuse_if(_replaced_size(owner, args[0], args[1], _int_arg(args[2]) if len(args) > 2 else -1), "replace")
    elif name == "join" and args:
        items = args[0]
        if isinstance(items, (list, tuple)):
            env.refuse_if(_text_size(items) + len(owner) * len(items), "str.join")


def _replaced_size(text: str, old: str, new: str, count: int) -> int:
    hits = (len(text) + 1) if not old else text.count(old)
    if count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


def _precheck_filter(env: _LimitedEnvironment, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Filters that can build far more than they are given: checked before they run."""
    value = args[0] if args else None

    def arg(index: int, key: str, default: Any) -> Any:
        return args[index] if len(args) > index else kwargs.get(key, default)

    if name == "center":
        env.refuse_if(_int_arg(arg(1, "width", 80)), "center")
    elif name == "indent":
        width = arg(1, "width", 4)
        width_len = len(width) if isinstance(width, str) else _int_arg(width)
        text = str(value) if isinstance(value, str) else ""
        env.refuse_if(len(text) + (text.count("\n") + 1) * max(width_len, 0), "indent")
    elif name == "format":
        _check_percent(env, str(value) if isinstance(value, str) else "", args[1:] or kwargs)
    elif name == "join":
        separator = arg(1, "d", "")
        if isinstance(value, (list, tuple)):
            env.refuse_if(_text_size(value) + len(str(separator)) * len(value), "join")
    elif name == "replace":
        old, new, count = arg(1, "old", None), arg(2, "new", None), arg(3, "count", None)
        if isinstance(value, str) and isinstance(old, str) and isinstance(new, str):
            env.refuse_if(_replaced_size(value, old, new, _int_arg(count) if count is not None else -1), "replace")
    elif name in ("string", "pprint", "e", "escape", "forceescape", "urlencode", "xmlattr", "list"):
        env.refuse_if(_text_size(value), name)
    elif name == "tojson":
        indent = arg(1, "indent", None)
        indent_len = len(indent) if isinstance(indent, str) else _int_arg(indent)
        if indent_len > MAX_INDENT:
            raise SecurityError(f"tojson indent {indent_len} (at most {MAX_INDENT})")
        env.refuse_if(_text_size(value) * (1 + indent_len), "tojson")
    elif name == "wordwrap":
        wrap = arg(4, "wrapstring", None) or "\n"
        width = max(_int_arg(arg(1, "width", 79)), 1)
        text = value if isinstance(value, str) else ""
        env.refuse_if(len(text) + (len(text) // width + 1) * len(str(wrap)), "wordwrap")
    elif name in ("batch", "slice"):
        env.refuse_if(_int_arg(arg(1, "linecount" if name == "batch" else "slices", 0)), name)
    elif name == "sum":
        start = arg(3, "start", 0)
        if not isinstance(start, (int, float)):
            raise SecurityError("sum of sequences is not available to templates")


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that ticks the deadline, checks before building and charges what it built. It takes the
    context, so Jinja can never evaluate it at compile time."""
    kind = _PassArg.from_obj(func)

    @pass_context
    def guarded(context: Any, *args: Any, **kwargs: Any) -> Any:
        env: _LimitedEnvironment = context.environment
        env.tick()
        _precheck_filter(env, name, args, kwargs)
        if kind is _PassArg.context:
            result = func(context, *args, **kwargs)
        elif kind is _PassArg.eval_context:
            result = func(context.eval_ctx, *args, **kwargs)
        elif kind is _PassArg.environment:
            result = func(env, *args, **kwargs)
        else:
            result = func(*args, **kwargs)
        if isinstance(result, Iterator):
            return _charged_items(env, result)
        return env.charge(result)

    guarded.__name__ = getattr(func, "__name__", name)
    return guarded


def _charged_items(env: _LimitedEnvironment, items: Iterator[Any]) -> Iterator[Any]:
    for item in items:
        env.tick()
        env.limits.built += 1
        if env.limits.built > MAX_BUILT:
            raise SecurityError(f"the template built more than {MAX_BUILT:,} items")
        yield item


@pass_environment
def _ticking(env: _LimitedEnvironment, iterable: Any) -> Iterator[Any]:
    """Every for loop iterates through this: a deadline check per iteration, even with no call inside."""
    for item in iterable:
        env.tick()
        yield item


@pass_context
def _finalize(context: Any, value: Any) -> Any:
    """Every {{ value }} passes here before it is turned into text: no output bigger than the limit."""
    env: _LimitedEnvironment = context.environment
    env.tick()
    if _text_size(value, MAX_OUTPUT_CHARS) > MAX_OUTPUT_CHARS:
        raise TemplateError(f"output exceeds {MAX_OUTPUT_CHARS:,} characters; stopped")
    return value


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    """transformers' tojson: no HTML escaping (Jinja's own escapes <, > and & for HTML pages)."""
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(str(fmt)[:100])


# ---- rendering in this process (the worker's side) ------------------------------------------------------------

_ENV = _LimitedEnvironment()


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def _compile_here(source: str) -> jinja2.Template:
    """Compile (cached); TemplateError with Jinja's reason on a syntax error."""
    try:
        return _compile(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"syntax error on line {exc.lineno}: {_one_line(exc.message or '')}") from None
    except (jinja2.TemplateError, RecursionError, MemoryError, ValueError, SecurityError) as exc:
        raise TemplateError(f"cannot compile: {_one_line(str(exc))}") from None


def render_here(source: str, variables: dict[str, Any]) -> str:
    """Render in this process with the in-process limits only (the worker calls this). TemplateError only."""
    template = _compile_here(source)
    _ENV.limits.deadline = time.monotonic() + RENDER_SECONDS
    _ENV.limits.built = 0
    size = 0
    parts: list[str] = []
    try:
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateError(f"output exceeds {MAX_OUTPUT_CHARS:,} characters; stopped")
            _ENV.tick()
            parts.append(chunk)
    except _Deadline:
        raise TemplateError(f"rendering took longer than {RENDER_SECONDS:g} s; stopped") from None
    except SecurityError as exc:
        raise TemplateError(f"blocked by the sandbox: {_one_line(str(exc))}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"the template refused the conversation: {_one_line(str(exc))}") from None
    except TemplateError:
        raise
    except (RecursionError, MemoryError, OverflowError) as exc:
        raise TemplateError(f"rendering failed: {type(exc).__name__}") from None
    except Exception as exc:  # any error inside hostile template code is a template problem, not ours
        raise TemplateError(f"rendering failed: {type(exc).__name__}: {_one_line(str(exc))}") from None
    finally:
        _ENV.limits.deadline = math.inf
    return "".join(parts)


def _address_space() -> int | None:
    """This process's virtual memory size in bytes (Linux), for a cap relative to what it already uses."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _cap_memory() -> None:
    """Soft RLIMIT_AS at what this process uses now plus WORKER_MEMORY_BYTES (Linux; elsewhere the
    timeout alone bounds a render). Only the soft limit: the next request may move it again."""
    current = _address_space()
    if current is None:
        return
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = current + WORKER_MEMORY_BYTES
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError) as exc:
        log.debug("no memory cap for the template worker: %s", exc)


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise _Deadline()


def _peak_bytes() -> int | None:
    """This worker's peak resident memory. Linux: VmHWM, since ru_maxrss survives fork and exec (a worker
    started by a 2 GB process reports 2 GB before it renders anything)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _serve(request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "peak":
        return {"peak": _peak_bytes()}
    if op == "compile":
        _compile_here(request["source"])
        return {"ok": ""}
    return {"ok": render_here(request["source"], request["variables"])}


WORKER_FLAG = "--template-worker"  # how the frozen app starts the worker (app/main.py passes it to serve())


def _read_frame(stream: Any, limit: int) -> bytes | None:
    """One length-prefixed message from a binary stream; None at end of file."""
    head = stream.read(4)
    if len(head) < 4:
        return None
    size = int.from_bytes(head, "big")
    if size > limit:
        raise ValueError(f"a message of {size} bytes")
    data = stream.read(size)
    return data if len(data) == size else None


def _write_frame(stream: Any, data: bytes) -> None:
    stream.write(len(data).to_bytes(4, "big") + data)
    stream.flush()


def serve() -> int:
    """The worker process: answer requests on stdin with replies on stdout until stdin closes."""
    # A windowed bundle may have no sys.stdin/sys.stdout objects even with pipes on fds 0 and 1.
    requests = sys.stdin.buffer if sys.stdin is not None else os.fdopen(0, "rb")
    replies = sys.stdout.buffer if sys.stdout is not None else os.fdopen(1, "wb")
    sys.stdout = sys.stderr  # nothing else may ever write into the reply stream
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the parent, not for us
    alarm = hasattr(signal, "setitimer")
    if alarm:
        signal.signal(signal.SIGALRM, _on_alarm)
    _write_frame(replies, b'{"ready": true}')  # started: from here on every request has RENDER_SECONDS
    while True:
        try:
            data = _read_frame(requests, 1 << 31)
        except (OSError, ValueError):
            return 0
        if data is None:
            return 0
        try:
            request = json.loads(data)
            del data
            _cap_memory()
            if alarm:  # a tight loop that never reaches a check still ends here
                signal.setitimer(signal.ITIMER_REAL, RENDER_SECONDS + 0.1)
            try:
                reply = _serve(request)
            finally:
                if alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except TemplateError as exc:
            reply = {"error": str(exc)}
        except _Deadline:
            reply = {"error": f"rendering took longer than {RENDER_SECONDS:g} s; stopped"}
        except MemoryError:
            reply = {"error": "the template needed more memory than allowed; stopped"}
        except Exception as exc:  # the worker must keep answering whatever a template did
            reply = {"error": f"rendering failed: {type(exc).__name__}: {_one_line(str(exc))}"}
        try:
            _write_frame(replies, json.dumps(reply, ensure_ascii=True).encode("ascii"))
        except (OSError, MemoryError, ValueError):
            return 0


# ---- the worker, seen from the parent ---------------------------------------------------------------------


def _worker_command() -> list[str]:
    if getattr(sys, "frozen", False):  # a bundle: the executable is Hearth itself
        return [sys.executable, WORKER_FLAG]
    root = str(Path(__file__).resolve().parents[2])
    code = f"import sys; sys.path.insert(0, {root!r}); from app.core.template_sandbox import serve; sys.exit(serve())"
    return [sys.executable, "-c", code]


class _Worker:
    """One reused worker process; requests are serialised (each lasts at most the deadline plus grace).

    A plain child process on pipes, not multiprocessing: spawning re-imports the parent's __main__, which a
    script without a main guard does not survive. A reader thread turns replies into a queue, so waiting
    has a timeout on every platform (Windows pipes have no select)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[bytes | None] = queue.Queue()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(message, ensure_ascii=True).encode("ascii")
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
            process, replies = self._process, self._replies
            assert process is not None and process.stdin is not None
            try:
                _write_frame(process.stdin, data)
                reply = replies.get(timeout=RENDER_SECONDS + KILL_GRACE_SECONDS)
            except queue.Empty:
                self._stop()
                raise TemplateError(f"rendering took longer than {RENDER_SECONDS:g} s; stopped") from None
            except OSError:
                reply = None
            if reply is None:  # the worker died: the memory cap, or the kernel
                self._stop()
                raise TemplateError("the template exhausted the memory it may use; stopped")
            return json.loads(reply)

    def _start(self) -> None:
        flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)  # Windows only: Ctrl-C goes to Hearth alone
        try:
            process = subprocess.Popen(
                _worker_command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=sys.platform != "win32",  # a terminal's Ctrl-C is not for the worker
                creationflags=flags,
            )
        except OSError as exc:
            raise TemplateError(f"the template sandbox could not start: {exc.strerror or exc}") from None
        replies: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read, args=(process, replies), name="template-replies", daemon=True).start()
        self._process, self._replies = process, replies
        try:  # starting an interpreter is not the template's time: wait for the worker to say it is ready
            ready = replies.get(timeout=START_SECONDS)
        except queue.Empty:
            ready = None
        if ready is None:
            self._stop()
            raise TemplateError("the template sandbox did not start")

    @staticmethod
    def _read(process: subprocess.Popen[bytes], replies: queue.Queue[bytes | None]) -> None:
        assert process.stdout is not None
        while True:
            try:
                data = _read_frame(process.stdout, MAX_REPLY_BYTES)
            except (OSError, ValueError):
                data = None
            replies.put(data)
            if data is None:
                return

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def peak_bytes(self) -> int | None:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                return None
        reply = self.request({"op": "peak"})
        return reply.get("peak")


_WORKER = _Worker()
atexit.register(_WORKER.stop)


def _ask(message: dict[str, Any]) -> str:
    reply = _WORKER.request(message)
    if "error" in reply:
        raise TemplateError(_one_line(str(reply["error"])))
    return str(reply.get("ok", ""))


def compile_template(source: str) -> None:
    """Check that source compiles (in the worker: compiling runs template code paths too). TemplateError
    with Jinja's reason otherwise."""
    _ask({"op": "compile", "source": source})


def render_jinja(
    source: str,
    messages: Sequence[dict[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    extra: dict[str, Any] | None = None,
    **context: Any,
) -> str:
    """Render a chat template with the variables real templates expect, plus any context (tools=[...]).

    Everything passed must be JSON-able (it travels to the worker process). Raises TemplateError, never
    more, for anything the template does."""
    variables = {
        "messages": [dict(m) for m in messages],
        "bos_token": bos_token,
        "eos_token": eos_token,
        "add_generation_prompt": add_generation_prompt,
        "tools": None,
        **(extra or {}),
        **context,
    }
    return _ask({"op": "render", "source": source, "variables": variables})


def worker_peak_bytes() -> int | None:
    """The worker's peak resident memory so far (None when it is not running): for tests and benchmarks."""
    return _WORKER.peak_bytes()


def shutdown() -> None:
    """Stop the worker process (it starts again on the next render)."""
    _WORKER.stop()
