"""expr-lang's operators on values, which govaluate's `when` shares: `==`, arithmetic, `<`, `in`.

Each takes evaluated operands and gives a value, or an `_Error` that names both operands' types.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aistack_flows.local._expr._errors import _Error, _show
from aistack_flows.local._expr._regex import _go_regex
from aistack_flows.local._expr._values import _wrap_int64


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: Any, right: Any) -> bool:
    """expr-lang's `==`: numbers by value (1 == 1.0), anything else only with its own type."""
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if left is None or right is None:
        return left is right
    if isinstance(left, str) and isinstance(right, str):
        return left == right
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(map(_equal, left, right))
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(_equal(left[k], right[k]) for k in left)
    return False


def _arithmetic(op: str, left: Any, right: Any) -> Any:
    if op == "+" and isinstance(left, str) and isinstance(right, str):
        return left + right
    if not (_is_number(left) and _is_number(right)):
        hint = (
            "to join text, convert the number first: string(n), or use ints and floats only"
            if op == "+"
            else "convert the operands with int(...) or float(...) first"
        )
        raise _Error(f"cannot compute {_show(left)} {op} {_show(right)}", hint)
    if op == "/":
        if right == 0:
            raise _Error("division by zero", "guard the divisor: d == 0 ? 0 : n / d")
        return left / right  # expr-lang's `/` always gives a float
    if isinstance(left, int) and isinstance(right, int):
        if op == "%":
            if right == 0:
                raise _Error("modulo by zero", "guard the divisor: d == 0 ? 0 : n % d")
            remainder = abs(left) % abs(right)  # Go's % takes the dividend's sign
            return -remainder if left < 0 else remainder
        return _wrap_int64(
            left + right if op == "+" else left - right if op == "-" else left * right
        )
    if op == "%":
        raise _Error(
            f"cannot compute {_show(left)} % {_show(right)}", "'%' takes ints; use int(...)"
        )
    return float(left + right if op == "+" else left - right if op == "-" else left * right)


def _compare(op: str, left: Any, right: Any) -> bool:
    if not (
        (_is_number(left) and _is_number(right))
        or (isinstance(left, str) and isinstance(right, str))
    ):
        raise _Error(
            f"cannot compare {_show(left)} {op} {_show(right)}",
            "compare numbers with numbers and strings with strings; convert with int(...), "
            "float(...) or string(...)",
        )
    if op == "<":
        return bool(left < right)
    if op == ">":
        return bool(left > right)
    if op == "<=":
        return bool(left <= right)
    return bool(left >= right)


def _contained(op: str, needle: Any, haystack: Any) -> bool:
    if isinstance(haystack, list | tuple):
        found = any(_equal(needle, item) for item in haystack)
    elif isinstance(haystack, Mapping):
        found = any(_equal(needle, key) for key in haystack)
    else:
        raise _Error(
            f"'{op}' needs an array or a map on its right, not {_show(haystack)}",
            "for text, write s contains 'part'",
        )
    return found if op == "in" else not found


def _text_operator(op: str, left: Any, right: Any) -> bool:
    if not (isinstance(left, str) and isinstance(right, str)):
        raise _Error(
            f"'{op}' needs strings on both sides, not {_show(left)} and {_show(right)}",
            "convert with string(...) first",
        )
    if op == "contains":
        return right in left
    if op == "startsWith":
        return left.startswith(right)
    if op == "endsWith":
        return left.endswith(right)
    return _go_regex(right).search(left) is not None


def _apply(op: str, left: Any, right: Any) -> Any:
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if op in ("+", "-", "*", "/", "%"):
        return _arithmetic(op, left, right)
    if op in ("<", ">", "<=", ">="):
        return _compare(op, left, right)
    if op in ("in", "not in"):
        return _contained(op, left, right)
    return _text_operator(op, left, right)
