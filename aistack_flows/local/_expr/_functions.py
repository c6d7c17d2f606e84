"""The functions an expression can call: expr-lang's builtins, Argo's additions, sprig's.

`_FUNCTIONS` maps each name (`int`, `asInt`, `sprig.trunc`, ...) to its arity and its
implementation; the parser looks calls up in it.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aistack_flows.local._expr._errors import _Error, _known, _show
from aistack_flows.local._expr._limits import _INT64_MAX, _INT64_MIN
from aistack_flows.local._expr._operators import _is_number
from aistack_flows.local._expr._regex import _go_expand, _go_regex
from aistack_flows.local._expr._values import (
    _float_to_int,
    _from_json,
    _go_format,
    _go_json,
    _wrap_int64,
)


@dataclass(frozen=True, slots=True)
class _Function:
    name: str
    least: int  # arguments
    most: int | None  # arguments; None: any number
    call: Callable[..., Any]


_ATOI: Final = re.compile(r"[+-]?[0-9]{1,19}")
_FLOAT: Final = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)",
    re.IGNORECASE,
)


def _atoi(text: str) -> int | None:
    """Go's strconv.Atoi: a decimal int64, or None."""
    if _ATOI.fullmatch(text) is None:
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


def _string_arg(function: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _Error(
        f"{function}() takes a string, not {_show(value)}", "convert it with string(...) first"
    )


def _int_arg(function: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _Error(f"{function}() takes an int, not {_show(value)}", "convert it with int(...)")


def _to_int(value: Any) -> int:
    """expr-lang's int() (and Argo's asInt): truncates a float, reads a string of digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float):
        return _float_to_int(value)
    if isinstance(value, str):
        parsed = _atoi(value)
        if parsed is None:
            raise _Error(
                f"int() cannot read {value!r} as a whole number",
                "int() reads digits such as '16'; for '1.5' write int(float(x))",
            )
        return parsed
    raise _Error(f"int() cannot convert {_show(value)}", "pass a number or a string of digits")


def _to_float(value: Any) -> float:
    """expr-lang's float() (and Argo's asFloat)."""
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        if _FLOAT.fullmatch(value) is None:
            raise _Error(f"float() cannot read {value!r} as a number", "pass digits like '1.5'")
        return float(value)
    raise _Error(f"float() cannot convert {_show(value)}", "pass a number or a numeric string")


def _length(value: Any) -> int:
    if isinstance(value, str | list | tuple | Mapping):
        return len(value)
    raise _Error(f"len() takes a string, array or map, not {_show(value)}", "check the argument")


def _split(text: Any, separator: Any, limit: Any = -1) -> list[str]:
    """expr-lang's split(s, sep[, n]): Go's strings.SplitN."""
    source = _string_arg("split", text)
    cut = _string_arg("split", separator)
    count = _int_arg("split", limit)
    if count == 0:
        return []
    if cut:
        return source.split(cut, count - 1 if count > 0 else -1)
    parts = list(source)
    if 0 < count < len(parts):
        parts = [*parts[: count - 1], "".join(parts[count - 1 :])]
    return parts


def _join(values: Any, glue: Any = "") -> str:
    """expr-lang's join(array[, glue])."""
    if not isinstance(values, list | tuple):
        raise _Error(f"join() takes an array, not {_show(values)}", "pass an array of strings")
    return _string_arg("join", glue).join(_string_arg("join", v) for v in values)


_JSONPATH_STEP: Final = re.compile(
    r"\.(?P<name>[A-Za-z_][\w-]*)|\[(?P<index>-?[0-9]+)\]|\['(?P<single>[^']*)'\]"
    r"|\[\"(?P<double>[^\"]*)\"\]"
)


def _jsonpath(document: Any, path: Any) -> Any:
    """Argo's jsonpath(json, path), for paths of keys and indexes: `$.a.b[0]`, `$['a-b']`."""
    data = _from_json(_string_arg("jsonpath", document), "jsonpath")
    path = _string_arg("jsonpath", path)
    if not path.startswith("$"):
        raise _Error(f"jsonpath {path!r} does not start with '$'", "write it as $.key")
    at = 1
    while at < len(path):
        step = _JSONPATH_STEP.match(path, at)
        if step is None:
            raise _Error(
                f"jsonpath {path!r}: the local runner reads only $.key, $['key'] and $[N] steps, "
                f"not {path[at:]!r}",
                "use a simpler path, or fromJSON(...) and index the value",
            )
        index = step.group("index")
        if index is not None:
            position = int(index)
            if not isinstance(data, list) or not -len(data) <= position < len(data):
                raise _Error(
                    f"jsonpath {path!r}: no item {index} in {_show(data)}", "check the path"
                )
            data = data[position]
        else:
            key = step.group("name") or step.group("single") or step.group("double") or ""
            if not isinstance(data, Mapping) or key not in data:
                keys = data if isinstance(data, Mapping) else ()
                raise _Error(
                    f"jsonpath {path!r}: no key {key!r} ({_known(keys)})", "check the path"
                )
            data = data[key]
        at = step.end()
    return data


def _trunc(count: Any, text: Any) -> str:
    """sprig.trunc(n, s): the first n characters; for a negative n, the last -n."""
    n = _int_arg("sprig.trunc", count)
    source = _string_arg("sprig.trunc", text)
    if n < 0 and len(source) + n > 0:
        return source[len(source) + n :]
    if n >= 0 and len(source) > n:
        return source[:n]
    return source


def _sprig_int(value: Any) -> int:
    """Sprig's int/toInt (spf13/cast): reads "0x1F", "017", "3.0"; anything unreadable is 0."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return _wrap_int64(value)
    if isinstance(value, float):
        return _float_to_int(value) if math.isfinite(value) else 0
    if not isinstance(value, str):
        return 0
    trimmed = re.sub(r"\.0+$", "", value)  # cast drops a decimal part of zeros: "3.00" is 3
    sign = -1 if trimmed.startswith("-") else 1
    digits = trimmed[1:] if trimmed[:1] in ("+", "-") else trimmed
    if re.fullmatch(r"[0-9A-Za-z_]{1,70}", digits) is None:
        return 0
    try:
        # Go's base 0: 0x, 0o, 0b prefixes, and a leading 0 for octal (Python's base 0 refuses it).
        number = int(digits, 8) if re.fullmatch(r"0[0-7]+", digits) else int(digits, 0)
    except ValueError:
        return 0
    return sign * number if _INT64_MIN <= sign * number <= _INT64_MAX else 0


def _sprig_empty(value: Any) -> bool:
    """Sprig's `empty`: nil, false, 0, "" and empty collections."""
    if value is None or value is False:
        return True
    if _is_number(value):
        return bool(value == 0)
    if isinstance(value, str | list | tuple | Mapping):
        return len(value) == 0
    return False


def _sprig_default(fallback: Any, *given: Any) -> Any:
    """sprig.default(d, v): v, unless it is empty (see `_sprig_empty`)."""
    return fallback if not given or _sprig_empty(given[0]) else given[0]


def _strval(value: Any) -> str:
    return value if isinstance(value, str) else _go_format(value)


_GO_QUOTE_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def _go_quote(text: str) -> str:
    """Go's strconv.Quote."""
    parts = ['"']
    for char in text:
        if char in _GO_QUOTE_ESCAPES:
            parts.append(_GO_QUOTE_ESCAPES[char])
        elif char.isprintable():
            parts.append(char)
        elif ord(char) < 0x80:
            parts.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            parts.append(f"\\u{ord(char):04x}")
        else:
            parts.append(f"\\U{ord(char):08x}")
    parts.append('"')
    return "".join(parts)


def _sprig_quote(*values: Any) -> str:
    return " ".join(_go_quote(_strval(v)) for v in values if v is not None)


def _sprig_join(separator: Any, values: Any) -> str:
    """sprig.join(sep, list): each item as text (nil items left out)."""
    glue = _string_arg("sprig.join", separator)
    if isinstance(values, list | tuple):
        return glue.join(_strval(v) for v in values if v is not None)
    return "" if values is None else _strval(values)


def _strings(name: str, call: Callable[..., Any], least: int, most: int = 0) -> _Function:
    """A function whose arguments are all strings (anything else is refused, by name)."""
    return _Function(
        name, least, max(least, most), lambda *args: call(*(_string_arg(name, a) for a in args))
    )


def _functions() -> dict[str, _Function]:
    functions = [
        _Function("int", 1, 1, _to_int),
        _Function("asInt", 1, 1, _to_int),
        _Function("float", 1, 1, _to_float),
        _Function("asFloat", 1, 1, _to_float),
        _Function("string", 1, 1, _strval),
        _Function("len", 1, 1, _length),
        _strings("lower", str.lower, 1),
        _strings("upper", str.upper, 1),
        _strings("trim", lambda s, cutset=None: s.strip(cutset), 1, 2),
        _strings("trimPrefix", lambda s, prefix=" ": s.removeprefix(prefix), 1, 2),
        _strings("trimSuffix", lambda s, suffix=" ": s.removesuffix(suffix), 1, 2),
        _Function("split", 2, 3, _split),
        _Function("join", 1, 2, _join),
        _strings("replace", lambda s, old, new: s.replace(old, new), 3),
        _Function("toJSON", 1, 1, lambda v: _go_json(v, indent="  ")),
        _Function("toJson", 1, 1, _go_json),
        _strings("fromJSON", lambda s: _from_json(s, "fromJSON"), 1),
        _Function("jsonpath", 2, 2, _jsonpath),
        # sprig takes the string it works on last, so that templates can pipe it in.
        _strings(
            "sprig.regexReplaceAll",
            lambda regex, s, repl: _go_regex(regex).sub(lambda m: _go_expand(repl, m), s),
            3,
        ),
        _Function("sprig.trunc", 2, 2, _trunc),
        _strings("sprig.sha256sum", lambda s: hashlib.sha256(s.encode()).hexdigest(), 1),
        _strings("sprig.replace", lambda old, new, s: s.replace(old, new), 3),
        _strings("sprig.lower", str.lower, 1),
        _strings("sprig.upper", str.upper, 1),
        _strings("sprig.trim", str.strip, 1),
        _strings("sprig.trimSuffix", lambda suffix, s: s.removesuffix(suffix), 2),
        _strings("sprig.trimPrefix", lambda prefix, s: s.removeprefix(prefix), 2),
        _Function("sprig.toString", 1, 1, _strval),
        _Function("sprig.int", 1, 1, _sprig_int),
        _strings("sprig.atoi", lambda s: _atoi(s) or 0, 1),
        _Function("sprig.add", 1, None, lambda *values: _wrap_int64(sum(map(_sprig_int, values)))),
        _Function("sprig.sub", 2, 2, lambda a, b: _wrap_int64(_sprig_int(a) - _sprig_int(b))),
        _Function("sprig.default", 1, 2, _sprig_default),
        _Function("sprig.quote", 0, None, _sprig_quote),
        _Function("sprig.join", 2, 2, _sprig_join),
        _strings("sprig.splitList", lambda sep, s: _split(s, sep), 2),
        # sprig's split gives a map, {"_0": first, "_1": second, ...}.
        _strings(
            "sprig.split", lambda sep, s: {f"_{i}": p for i, p in enumerate(_split(s, sep))}, 2
        ),
    ]
    return {function.name: function for function in functions}


_FUNCTIONS: Final = _functions()
