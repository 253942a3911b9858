"""The template sandbox really bounds a model's Jinja template: time, memory, compile-time folding, fuzzed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.errors import TemplateError
from app.core.template_sandbox import RENDER_SECONDS, render_jinja
from tests.support.memory import PEAK_MB

REPO = Path(__file__).resolve().parents[2]
HI = [{"role": "user", "content": "hi"}]
# A render may take the deadline plus the hard kill's grace and a restart of the worker on a busy machine.
WALL_LIMIT = RENDER_SECONDS + 4.0
PEAK_LIMIT_MB = 700  # the whole test process tree, Python and Jinja included

HOSTILE = {
    "loops without calls": "{% set r = range(100000)|list %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}",
    "constant-folded center": "{{ 'x'|center(600000000) }}",
    "center at run time": "{{ messages[0].content|center(600000000) }}",
    "percent width": "{{ '%600000000s' % 'x' }}",
    "format filter width": "{{ '%600000000s'|format('x') }}",
    "str.format width": "{{ '{:>600000000}'.format('x') }}",
    "str.ljust": "{{ 'x'.ljust(600000000) }}",
    "join amplification": "{{ (['x' * 900000] * 900000)|join }}",
    "concat doubling": (
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
        "{{ ns.s|length }}"
    ),
    "tojson indent": "{{ (range(1000)|list)|tojson(indent=1000000) }}",
    "power tower": "{% set ns = namespace(x=2) %}{% for i in range(30) %}{% set ns.x = ns.x ** 64 %}{% endfor %}",
    "integer squaring": "{% set ns = namespace(x=3) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
    "indent width": "{{ ('a\\n' * 100000)|indent(100000) }}",
    "replace amplification": "{{ ('x' * 1000000)|replace('x', 'y' * 1000) }}",
    "map amplification": "{{ range(100000)|map('center', 1000000)|list|length }}",
    "string of a huge list": "{{ (['x' * 100000] * 100000)|string|length }}",
    "lipsum": "{{ lipsum(100000) }}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
}


def _measure(template: str) -> dict:
    """Render in a fresh interpreter; its wall time and the peak memory of it and its children (MB)."""
    script = PEAK_MB + textwrap.dedent(
        f"""
        import json, resource, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from app.core import template_sandbox
        from app.core.errors import TemplateError
        started = time.perf_counter()
        try:
            template_sandbox.render_jinja({template!r}, [{{"role": "user", "content": "hi"}}])
            outcome = "rendered"
        except TemplateError as exc:
            outcome = "refused: " + str(exc)
        elapsed = time.perf_counter() - started
        getattr(template_sandbox, "shutdown", lambda: None)()
        worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the worker, started after exec
        print(json.dumps({{"elapsed": elapsed, "peak_mb": max(peak_mb(), worker), "outcome": outcome}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=os.environ.copy()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_template_is_refused_in_bounded_time_and_memory(name: str) -> None:
    result = _measure(HOSTILE[name])
    assert result["outcome"].startswith("refused: "), result
    assert "\n" not in result["outcome"]
    assert result["elapsed"] < WALL_LIMIT, result
    assert result["peak_mb"] < PEAK_LIMIT_MB, result


def test_a_refused_template_falls_back_to_a_family_with_a_one_line_reason(tmp_path: Path) -> None:
    from app.core.gguf_info import inspect
    from app.core.templates import choose_template
    from app.core.tiny_model import TinyModelSpec, write_tiny_model

    path = write_tiny_model(
        tmp_path / "m.gguf", TinyModelSpec(name="Qwen test", chat_template=HOSTILE["percent width"])
    )
    choice = choose_template(inspect(path))
    assert choice.name == "chatml" and choice.warning is not None and "\n" not in choice.warning
    assert "unusable" in choice.warning


def test_normal_renders_stay_fast_after_the_first() -> None:
    template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    render_jinja(template, HI)  # starts the worker
    times = []
    for i in range(20):
        started = time.perf_counter()
        out = render_jinja(template, [{"role": "user", "content": f"hello {i}"}])
        times.append(time.perf_counter() - started)
        assert out.endswith("<|im_start|>assistant\n") and f"hello {i}" in out
    assert sorted(times)[len(times) // 2] < 0.05  # the median; a few ms here, generous for a busy CI box


def test_extra_context_reaches_the_template() -> None:
    out = render_jinja(
        "{% for t in tools %}{{ t.name }};{% endfor %}{{ messages[-1].tool_call_id }}",
        [{"role": "tool", "content": "42", "tool_call_id": "call_1"}],
        tools=[{"name": "add"}, {"name": "mul"}],
    )
    assert out == "add;mul;call_1"


def test_the_worker_recovers_after_a_template_it_had_to_kill() -> None:
    with pytest.raises(TemplateError):
        render_jinja(HOSTILE["loops without calls"], HI)
    assert render_jinja("{{ messages[0].content }}!", HI) == "hi!"


# ---- fuzzing --------------------------------------------------------------------------------------------------

_BIG = st.sampled_from([0, 1, 7, 1000, 99_999, 100_000, 10**6, 10**9, 2**31, 10**18])
_SMALL_TEXT = st.sampled_from(["'x'", "'ab\\n'", "messages[0].content", "'%s'", "''"])


@st.composite
def _expressions(draw: st.DrawFn, depth: int = 0) -> str:
    text = draw(_SMALL_TEXT)
    if depth > 2:
        return text
    inner = draw(_expressions(depth + 1)) if draw(st.booleans()) else text
    n = draw(_BIG)
    shape = draw(
        st.sampled_from(
            [
                "({a}|center({n}))",
                "({a} * {n})",
                "({a} ~ {a})",
                "({a}|indent({n}))",
                "('%{n}s' % {a})",
                "('{{:>{n}}}'.format({a}))",
                "({a}.ljust({n}))",
                "([{a}] * {n})|join",
                "({a}|replace('x', {a} * {n}))",
                "(range({n})|list)|tojson(indent={n})",
                "({n} ** {n})",
                "(range({n})|map('string')|join)",
                "({a}|wordwrap({n}))",
                "({a}|truncate({n}))",
            ]
        )
    )
    return shape.format(a=inner, n=n)


@st.composite
def _templates(draw: st.DrawFn) -> str:
    body = "{{ " + draw(_expressions()) + " }}"
    for _ in range(draw(st.integers(0, 2))):
        n = draw(_BIG)
        loop = draw(
            st.sampled_from(
                [
                    "{{% for i in range({n}) %}}{body}{{% endfor %}}",
                    "{{% set r = range({n})|list %}}{{% for i in r %}}{{% for j in r %}}{body}"
                    "{{% endfor %}}{{% endfor %}}",
                    "{{% set ns = namespace(s='x') %}}{{% for i in range({n}) %}}{{% set ns.s = ns.s ~ ns.s %}}"
                    "{{% endfor %}}{body}",
                ]
            )
        )
        body = loop.format(n=min(n, 100_000), body=body)
    return body


@pytest.mark.timeout(600)
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(_templates())
def test_fuzzed_templates_finish_within_the_limit(template: str) -> None:
    from app.core import template_sandbox

    # A fresh worker for each template: its peak memory (VmHWM) is then this render's, not the largest of
    # every render the reused worker did before (in a full test run, other tests' too).
    template_sandbox.shutdown()
    render_jinja("{{ 1 }}", HI)
    started = time.perf_counter()
    try:
        out = render_jinja(template, HI)
        assert len(out) <= template_sandbox.MAX_OUTPUT_CHARS
    except TemplateError as exc:
        assert "\n" not in str(exc)
    assert time.perf_counter() - started < WALL_LIMIT, template
    peak = template_sandbox.worker_peak_bytes()
    assert peak is None or peak < template_sandbox.WORKER_MEMORY_BYTES + 256 * 1024 * 1024, template
    assert _own_rss_mb() < 1500, "the render leaked memory into the test process"


def _own_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_the_parent_kills_a_worker_that_does_not_answer_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last line of defence (for whatever would stall the worker in C code): the parent stops waiting
    after the deadline plus grace, kills the worker and the next render starts a fresh one."""
    from app.core import template_sandbox

    render_jinja("{{ 1 }}", HI)
    before = template_sandbox._WORKER.pid
    monkeypatch.setattr(template_sandbox, "RENDER_SECONDS", 0.05)  # the parent's patience, not the worker's
    monkeypatch.setattr(template_sandbox, "KILL_GRACE_SECONDS", 0.0)
    started = time.perf_counter()
    with pytest.raises(TemplateError, match="longer than"):
        render_jinja(HOSTILE["loops without calls"], HI)
    assert time.perf_counter() - started < 0.9  # the worker itself would have stopped after 1 s
    monkeypatch.undo()
    assert render_jinja("{{ messages[0].content }}", HI) == "hi"
    assert template_sandbox._WORKER.pid != before


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="the memory cap is Linux-only (RLIMIT_AS)")
def test_the_worker_memory_cap_is_real() -> None:
    """What the worker does after _cap_memory() cannot grow past the cap: an allocation beyond fails."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from app.core import template_sandbox
        template_sandbox.WORKER_MEMORY_BYTES = 64 * 1024 * 1024
        template_sandbox._cap_memory()
        small = bytearray(16 * 1024 * 1024)
        try:
            big = bytearray(256 * 1024 * 1024)
            print("allocated")
        except MemoryError:
            print("refused")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "refused", done.stderr


def test_a_slow_worker_start_is_not_charged_to_the_first_render(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a busy machine starting the interpreter can take longer than a render may: the deadline starts
    when the worker says it is ready."""
    from app.core import template_sandbox

    template_sandbox.shutdown()
    slow = [*template_sandbox._worker_command()]
    slow[-1] = "import time; time.sleep(RENDER + 1); " + slow[-1]
    slow[-1] = slow[-1].replace("RENDER", repr(template_sandbox.RENDER_SECONDS + template_sandbox.KILL_GRACE_SECONDS))
    monkeypatch.setattr(template_sandbox, "_worker_command", lambda: slow)
    assert render_jinja("{{ messages[0].content }}", HI) == "hi"
    monkeypatch.undo()
    template_sandbox.shutdown()
