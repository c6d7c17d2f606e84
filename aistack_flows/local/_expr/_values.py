"""Values as Go writes and reads them: `%v`, `json.Marshal`, JSON read into `any`, int64.

Argo renders `{{=...}}` with Go's `fmt.Sprintf("%v")` and `{{item}}` with `json.Marshal`; the
local runner writes the same text, digit for digit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from aistack_flows.local._expr._errors import _Error, _show
from aistack_flows.local._expr._limits import _INT64_MIN, MAX_NESTING


def _wrap_int64(value: int) -> int:
    """An int as Go's int64 arithmetic leaves it (wrapped around), so results stay bounded."""
    return (value - _INT64_MIN) % 2**64 + _INT64_MIN


def _float_to_int(value: float) -> int:
    """Go's int(f): truncation toward zero; out of range (or NaN) gives the minimum, as on amd64."""
    if math.isfinite(value) and _INT64_MIN <= value < 2**63:
        return int(value)
    return _INT64_MIN


def _shortest_digits(magnitude: float) -> tuple[str, int]:
    """The fewest decimal digits that read back as `magnitude` (> 0), and where the point goes.

    The value is 0.DIGITS x 10**point; Python's repr and Go's strconv choose the same digits.
    """
    _, digit_tuple, exponent = Decimal(repr(magnitude)).as_tuple()
    digits = "".join(map(str, digit_tuple))
    return digits.rstrip("0"), len(digits) + int(exponent)


def _fixed(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return f"{digits[:point]}.{digits[point:]}"


def _scientific(digits: str, point: int) -> str:
    mantissa = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
    exponent = point - 1
    return f"{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


def _go_float(value: float) -> str:
    """A float as Go's `%v` prints it: 1024, 0.5, 1e+06, 1.5e-05, +Inf."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return f"{sign}0"
    digits, point = _shortest_digits(abs(value))
    # %v is %g with the shortest digits, which switches to an exponent at 1e+06 and below 1e-04.
    exponent = point - 1
    body = _scientific(digits, point) if exponent < -4 or exponent >= 6 else _fixed(digits, point)
    return sign + body


def _go_format(value: Any, depth: int = 0) -> str:
    """A value as Go's `fmt.Sprintf("%v")` writes it, which is how Argo renders `{{=...}}`."""
    if depth > MAX_NESTING:
        raise _Error("a value nested deeper than 100 levels", "flatten the value")
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        pairs = sorted(value.items(), key=lambda pair: str(pair[0]))
        inner = " ".join(f"{_go_format(k, depth + 1)}:{_go_format(v, depth + 1)}" for k, v in pairs)
        return f"map[{inner}]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_go_format(item, depth + 1) for item in value) + "]"
    return str(value)


_GO_JSON_ESCAPES: Final = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)
"""What Go's encoding/json escapes beyond what Python's json does (it is safe in HTML)."""


def _go_json_float(value: float) -> str:
    if not math.isfinite(value):
        raise _Error(f"{_go_float(value)} cannot be written as JSON", "check the arithmetic")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    digits, point = _shortest_digits(abs(value))
    sign = "-" if value < 0 else ""
    if 1e-6 <= abs(value) < 1e21:
        return sign + _fixed(digits, point)
    return sign + re.sub(r"e-0(\d)$", r"e-\1", _scientific(digits, point))


def _go_json(value: Any, indent: str | None = None, depth: int = 0) -> str:
    """A value as Go's `json.Marshal` (or `MarshalIndent`) writes it: keys sorted, 1.0 as 1."""
    if depth > MAX_NESTING:
        raise _Error("a value nested deeper than 100 levels", "flatten the value")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_json_float(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).translate(_GO_JSON_ESCAPES)
    colon = ":" if indent is None else ": "
    if isinstance(value, Mapping):
        pairs = sorted(value.items(), key=lambda pair: str(pair[0]))
        members = [f"{_go_json(str(k))}{colon}{_go_json(v, indent, depth + 1)}" for k, v in pairs]
        return _json_container("{", members, "}", indent, depth)
    if isinstance(value, list | tuple):
        items = [_go_json(item, indent, depth + 1) for item in value]
        return _json_container("[", items, "]", indent, depth)
    raise _Error(f"{_show(value)} cannot be written as JSON", "pass plain data")


def _json_container(
    opening: str, parts: list[str], closing: str, indent: str | None, depth: int
) -> str:
    if not parts:
        return opening + closing
    if indent is None:
        return opening + ",".join(parts) + closing
    inner = "\n" + indent * (depth + 1)
    return opening + inner + f",{inner}".join(parts) + "\n" + indent * depth + closing


def _from_json(text: str, function: str) -> Any:
    """JSON read as Go reads it into `any`: every number a float."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    try:
        return json.loads(text, parse_int=float, parse_constant=refuse)
    except (ValueError, RecursionError) as error:
        raise _Error(
            f"{function}: the text is not JSON ({error})", "pass a JSON document"
        ) from None
