"""Built-in tools that need no server and reach nothing outside the app: the clock and a safe calculator.

Both are off until the user turns them on. The calculator never evaluates Python: it parses the expression
with ast and walks a whitelist of number literals, arithmetic operators and math functions, with limits on
the expression's length, exponents and the size of every intermediate result.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from app.core.errors import ToolError
from app.core.tools import BuiltinFunction, ToolSpec

MAX_EXPRESSION = 500  # characters
MAX_DIGITS = 1000  # largest integer result, in decimal digits
MAX_EXPONENT = 10_000
MAX_FACTORIAL = 450  # 450! has 1,000 digits


# ---- the clock -----------------------------------------------------------------------------------------------


def current_time(arguments: dict[str, Any]) -> str:
    """The date and time now, in the user's own zone or a named IANA zone."""
    # Imported here: every `hearth` command imports this module (for the tool names in its --help).
    from datetime import datetime
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    zone_name = arguments.get("timezone") or ""
    if zone_name:
        try:
            now = datetime.now(ZoneInfo(str(zone_name)))
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(f"unknown time zone {zone_name!r} (use an IANA name such as Europe/Paris)") from None
        label = str(zone_name)
    else:
        now = datetime.now().astimezone()  # the computer's local zone
        label = now.tzname() or "local time"
    offset = now.strftime("%z")
    return f"{now:%A %d %B %Y, %H:%M:%S} {label} (UTC{offset[:3]}:{offset[3:]})"


# ---- the calculator ------------------------------------------------------------------------------------------

Number = int | float


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"exponent {exponent} is too large (the limit is {MAX_EXPONENT})")
    whole = isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1
    if whole and exponent * math.log10(abs(base)) > MAX_DIGITS:
        raise ToolError(f"the result would have more than {MAX_DIGITS} digits")
    result = base**exponent
    if isinstance(result, complex):
        raise ToolError("the result is not a real number")
    return result


def _factorial(value: Number) -> int:
    if not float(value).is_integer() or value < 0:
        raise ToolError("factorial needs a whole number of at least 0")
    if value > MAX_FACTORIAL:
        raise ToolError(f"factorial is limited to {MAX_FACTORIAL}")
    return math.factorial(int(value))


_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
    ast.BitXor: _power,  # "2^10" means a power on every calculator
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "cbrt": lambda x: math.copysign(abs(x) ** (1 / 3), x),
    "exp": math.exp,
    "ln": math.log,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "degrees": math.degrees,
    "radians": math.radians,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "hypot": math.hypot,
    "factorial": _factorial,
    "min": min,
    "max": max,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _checked(value: Number) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError("only numbers are allowed")
    if isinstance(value, int) and value.bit_length() > MAX_DIGITS * 3.33:
        raise ToolError(f"the result would have more than {MAX_DIGITS} digits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is too large (or not a number)")
    return value


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return _checked(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and left.bit_length() + right.bit_length() > MAX_DIGITS * 3.33 + 1  # a product's bound
        ):
            raise ToolError(f"the result would have more than {MAX_DIGITS} digits")
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
        and len(node.args) <= 4
    ):
        return _checked(_FUNCTIONS[node.func.id](*[_evaluate(arg) for arg in node.args]))
    what = node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else type(node).__name__
    raise ToolError(f"{what!r} is not allowed; use numbers, + - * / // % ** ^, parentheses and math functions")


def calculate(expression: str) -> str:
    """The value of an arithmetic expression, as text. ToolError for anything else or anything too big."""
    if len(expression) > MAX_EXPRESSION:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError):
        raise ToolError(f"cannot read {expression!r} as arithmetic") from None
    try:
        value = _evaluate(tree)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except (OverflowError, ValueError, TypeError) as exc:
        raise ToolError(f"cannot compute that: {exc}") from None
    except RecursionError:
        raise ToolError("the expression is nested too deeply") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".15g") if isinstance(value, float) else str(value)


def _calculator(arguments: dict[str, Any]) -> str:
    expression = arguments.get("expression")
    if not isinstance(expression, str):
        raise ToolError("give the expression as text, e.g. {'expression': '2 * (3 + 4)'}")
    return calculate(expression)


BUILTIN_TOOLS: dict[str, tuple[ToolSpec, BuiltinFunction]] = {
    "current_time": (
        ToolSpec(
            "current_time",
            "Get the current date and time, in the user's own time zone unless an IANA time zone is given.",
            {
                "type": "object",
                "properties": {
                    "timezone": {
                        "type": "string",
                        "description": "IANA time zone name such as 'Europe/Paris'; leave out for the user's zone",
                    }
                },
            },
        ),
        current_time,
    ),
    "calculator": (
        ToolSpec(
            "calculator",
            "Evaluate an arithmetic expression exactly: + - * / // % ** (or ^), parentheses, pi, e, and sqrt, "
            "log, ln, exp, sin, cos, tan, abs, round, floor, ceil, factorial, min, max.",
            {
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "e.g. '(17 * 23) / 4 + sqrt(2)'"}},
                "required": ["expression"],
            },
        ),
        _calculator,
    ),
}


def builtin_tools(names: list[str] | tuple[str, ...]) -> list[tuple[ToolSpec, BuiltinFunction]]:
    """The built-in tools with these names (the ones the user turned on); ToolError for an unknown name."""
    unknown = [n for n in names if n not in BUILTIN_TOOLS]
    if unknown:
        raise ToolError(f"unknown built-in tool {unknown[0]!r}; choose from {', '.join(BUILTIN_TOOLS)}")
    return [BUILTIN_TOOLS[n] for n in dict.fromkeys(names)]
