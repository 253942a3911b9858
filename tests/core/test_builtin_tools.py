"""The built-in tools: the clock (user's zone or a named one) and the calculator (no eval, bounded)."""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from app.core.builtin_tools import BUILTIN_TOOLS, builtin_tools, calculate, current_time
from app.core.errors import ToolError
from app.core.messages import ToolCall
from app.core.tools import ToolBox


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 + 3 * 4", "14"),
        ("(17 * 23) / 4", "97.75"),
        ("2^10", "1024"),
        ("2 ** 0.5", "1.4142135623731"),
        ("-7 // 2", "-4"),
        ("7 % 3", "1"),
        ("sqrt(16) + abs(-2)", "6"),
        ("round(pi, 3)", "3.142"),
        ("factorial(20)", "2432902008176640000"),
        ("log10(1000)", "3"),
        ("max(1, 5, 3)", "5"),
        ("1e3 + 0.5", "1000.5"),
        ("123456789 * 987654321", "121932631112635269"),
    ],
)
def test_calculator_computes(expression, expected):
    assert calculate(expression) == expected


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("__import__('os').system('echo hi')", "not allowed"),
        ("__import__('os')", "'__import__' is not allowed"),
        ("open('/etc/passwd').read()", "not allowed"),
        ("(1).__class__", "not allowed"),
        ("[x for x in range(10**9)]", "not allowed"),
        ("lambda: 1", "not allowed"),
        ("'a' * 10", "not allowed"),
        ("9 ** 9 ** 9", "too large"),
        ("10 ** 5000", "digits"),
        ("2 ** 3333 * 2 ** 3333", "digits"),
        ("factorial(100000)", "limited"),
        ("1 / 0", "division by zero"),
        ("sqrt(-1)", "cannot compute"),
        ("10.0 ** 400", "too large|cannot compute"),
        ("x + 1", "not allowed"),
        ("1 +", "cannot read"),
        ("1" * 600, "longer than"),
        ("round(2.5, ndigits=1)", "not allowed"),
        ("True + 1", "not allowed|only numbers"),
    ],
)
def test_calculator_refuses_and_bounds(expression, problem):
    started = time.perf_counter()
    with pytest.raises(ToolError, match=problem):
        calculate(expression)
    assert time.perf_counter() - started < 1


def test_clock_in_the_users_zone_and_a_named_one(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        local = current_time({})
        assert "JST" in local and "(UTC+09:00)" in local
        assert str(datetime.now(ZoneInfo("Asia/Tokyo")).year) in local
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert "(UTC-0" in current_time({"timezone": "America/New_York"})  # -05:00 or -04:00 in summer
    with pytest.raises(ToolError, match="unknown time zone 'Mars/Base'"):
        current_time({"timezone": "Mars/Base"})


def test_toolbox_runs_builtins_and_reports_errors_as_results():
    box = ToolBox(builtin_tools(["calculator", "current_time"]))
    assert [s.name for s in box.specs()] == ["calculator", "current_time"]
    assert box.call(ToolCall("a", "calculator", '{"expression": "6*7"}')).text == "42"
    failed = box.call(ToolCall("b", "calculator", '{"expression": "1/0"}'))
    assert failed.is_error and failed.text == "Error: division by zero"
    missing = box.call(ToolCall("c", "shell", "{}"))
    assert missing.is_error and "no tool named 'shell'" in missing.text
    with pytest.raises(ToolError, match="unknown built-in tool 'shell'"):
        builtin_tools(["shell"])


def test_builtin_tools_are_off_unless_turned_on():
    assert ToolBox().specs() == []
    assert set(BUILTIN_TOOLS) == {"current_time", "calculator"}
