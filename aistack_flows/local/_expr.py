"""Argo's expression languages, evaluated on one machine: placeholders, expr, `when`, `depends`.

The local runner interprets Argo Workflow manifests; this module is the pure part of that:
text and values in, text and values out, no I/O. Four small languages meet in a manifest, and
each is evaluated as Argo's workflow-controller evaluates it:

- placeholders, `{{inputs.parameters.x}}` and `{{=EXPR}}`, in any string (`substitute`);
- expr-lang (github.com/expr-lang/expr) with Argo's additions (`asInt`, `asFloat`, `toJson`,
  `jsonpath`, `sprig.NAME`), inside `{{=...}}` and in `retryStrategy.expression`
  (`evaluate`);
- govaluate, in a task's or step's `when`, after its placeholders are substituted
  (`condition`);
- a DAG task's `depends` expression or `dependencies` list (`parse_depends`, `Depends`).

Where this module is stricter than Argo, it is to stop with a message where Argo would carry on
with a nil: reading a key that a map lacks is an error here, except on the left of `??` or after
`?.`, where expr-lang's nil is what the author asked for. Every error is an `ExpressionError`
that names the text, where it came from and what to do.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, assert_never

__all__ = [
    "MAX_EXPRESSION_CHARS",
    "MAX_NESTING",
    "Depends",
    "ExpressionError",
    "TaskResult",
    "condition",
    "evaluate",
    "parse_depends",
    "placeholders",
    "substitute",
]

MAX_EXPRESSION_CHARS: Final = 10_000
"""The longest expression, `when` or `depends` read; longer text is refused unread."""

MAX_NESTING: Final = 100
"""The deepest nesting (of parentheses, operators, calls or values) any of the languages accepts.

It keeps every recursion here far below Python's limit, whatever a manifest contains.
"""

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


class ExpressionError(ValueError):
    """Text in a manifest that cannot be substituted, parsed or evaluated.

    Attributes:
        where: where the text came from, e.g. "template train, env AISTACK_CHECKPOINT_DIR".
        text: the text (a placeholder, an expression, a `when` or a `depends`).
        problem: what is wrong with it.
        hint: what to do about it.
    """

    def __init__(self, where: str, text: str, problem: str, hint: str) -> None:
        super().__init__(where, text, problem, hint)
        self.where = where
        self.text = text
        self.problem = problem
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}, in {_shorten(self.text)!r}; {self.hint}"


class _Error(Exception):
    """A problem found while reading or evaluating; the public function adds where and the text."""

    def __init__(self, problem: str, hint: str) -> None:
        super().__init__(problem, hint)
        self.problem = problem
        self.hint = hint


# -- Messages -------------------------------------------------------------------------------


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(value: Any) -> str:
    """The expr-lang name of a value's type."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _show(value: Any) -> str:
    """A value in a message: its type, then the value itself, shortened."""
    if value is None:
        return "nil"
    return f"{_kind(value)} {_shorten(repr(value), 60)}"


def _known(keys: Iterable[Any]) -> str:
    names = sorted(str(key) for key in keys)
    if not names:
        return "it has none"
    more = f" and {len(names) - 12} more" if len(names) > 12 else ""
    return "known: " + ", ".join(names[:12]) + more


def _did_you_mean(name: str, keys: Iterable[Any], otherwise: str) -> str:
    close = difflib.get_close_matches(name, [str(key) for key in keys], n=1)
    return f"did you mean {close[0]!r}?" if close else otherwise


# -- Rendering values as Go does ------------------------------------------------------------


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


# -- Placeholders ---------------------------------------------------------------------------


def _scan(text: str, where: str) -> Iterator[tuple[int, int, str]]:
    """Each `{{...}}` in text: where it starts, where it ends, and the tag between the braces.

    Like Argo's template engine, a tag ends at the first `}}`; a `{{` that is never closed is an
    error (Argo refuses such a workflow too).
    """
    done = 0
    while (start := text.find("{{", done)) >= 0:
        end = text.find("}}", start + 2)
        if end < 0:
            raise ExpressionError(
                where,
                text,
                f"'{{{{' at column {start + 1} is never closed",
                "close the placeholder with '}}'",
            )
        yield start, end + 2, text[start + 2 : end]
        done = end + 2


def placeholders(text: str, *, where: str) -> list[str]:
    """The placeholders in text, in order: variable names, and expressions with a leading "=".

    `"{{ inputs.parameters.x }}-{{=int(y)}}"` gives `["inputs.parameters.x", "=int(y)"]`, so a
    caller can check the names against what a template declares before running anything.

    Raises:
        ExpressionError: a `{{` is never closed.
    """
    return [
        "=" + tag[1:].strip() if tag.startswith("=") else tag.strip()
        for _, _, tag in _scan(text, where)
    ]


def substitute(text: str, scope: Mapping[str, Any], *, where: str) -> str:
    """Text with its Argo placeholders replaced by their values from scope.

    `{{a.b.c}}` (spaces allowed inside the braces) looks its variable up in the nested scope,
    e.g. `{"inputs": {"parameters": {"x": "1"}}, "workflow": {"uid": ...}, "item": ...}`; a key
    that itself holds dots (a label such as `aistack.io/queue`) is found too. A string is written
    as it is and anything else as Go's `json.Marshal` writes it, as Argo writes `{{item}}`:
    compact JSON with sorted keys, `true`, `1.5`, and a whole float without its ".0".

    `{{=EXPR}}` evaluates EXPR (see `evaluate`) and writes the result as Go's `%v` does, as
    Argo does: `1024`, `1e+06`, `[a b]`, `map[k:v]`; a nil result is an error.

    Raises:
        ExpressionError: a variable is missing (the message lists the names next to it), an
            expression fails, or a `{{` is never closed.
    """
    parts: list[str] = []
    done = 0
    for start, end, tag in _scan(text, where):
        parts.append(text[done:start])
        parts.append(_replacement(tag, scope, where))
        done = end
    parts.append(text[done:])
    return "".join(parts)


def _replacement(tag: str, scope: Mapping[str, Any], where: str) -> str:
    if tag.startswith("="):
        expression = tag[1:]
        value = evaluate(expression, scope, where=where)
        if value is None:
            raise ExpressionError(
                where,
                expression,
                "the expression evaluated to nil",
                "Argo refuses a nil result; give a fallback with ??, e.g. x ?? 'default'",
            )
        try:
            return _go_format(value)
        except _Error as failure:
            raise ExpressionError(where, expression, failure.problem, failure.hint) from None
    try:
        value = _lookup(scope, tag.strip())
        return value if isinstance(value, str) else _go_json(value)
    except _Error as failure:
        raise ExpressionError(where, f"{{{{{tag}}}}}", failure.problem, failure.hint) from None


def _lookup(scope: Mapping[str, Any], name: str) -> Any:
    """The value of a placeholder's variable, e.g. `inputs.parameters.aistack-gang-rank`.

    Argo keeps variables in a flat map of dotted names; here they are nested, so at each level
    the longest key that the rest of the name starts with is taken (`workflow.labels.a.b/c`
    finds the label `a.b/c`); a digit segment indexes a list.
    """
    if not name:
        raise _Error("an empty placeholder", "write a variable name between '{{' and '}}'")
    segments = name.split(".")
    node: Any = scope
    path = ""
    at = 0
    while at < len(segments):
        segment = segments[at]
        place = path or "the scope"
        if isinstance(node, Mapping):
            rest = ".".join(segments[at:])
            keys = [
                k for k in node if isinstance(k, str) and (k == rest or rest.startswith(k + "."))
            ]
            if not keys:
                raise _Error(
                    f"unknown variable {name!r}: {place} has no {segment!r} ({_known(node)})",
                    _did_you_mean(segment, node, "check the name against the ones listed"),
                )
            key = max(keys, key=len)
            node = node[key]
            at += key.count(".") + 1
            path = f"{path}.{key}" if path else key
        elif isinstance(node, list | tuple) and segment.isascii() and segment.isdigit():
            if int(segment) >= len(node):
                raise _Error(
                    f"unknown variable {name!r}: {place} has {len(node)} items, no item {segment}",
                    "index from 0",
                )
            node = node[int(segment)]
            at += 1
            path = f"{path}.{segment}"
        else:
            raise _Error(
                f"unknown variable {name!r}: {place} is {_show(node)}, which has no {segment!r}",
                f"refer to {place} itself",
            )
    return node


# -- expr-lang: tokens ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "number", "string", "name", "op" or "end"
    text: str  # as written
    value: Any
    at: int  # offset in the expression


_EXPR_LEXEME: Final = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<number>
          0[xX][0-9a-fA-F](?:_?[0-9a-fA-F])*
        | [0-9](?:_?[0-9])*(?:\.[0-9](?:_?[0-9])*)?(?:[eE][+-]?[0-9]+)?
      )
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>\?\.|\?\?|==|!=|<=|>=|&&|\|\||[-+*/%<>!?:()\[\],.])
    | (?P<quote>["'`])
    """,
    re.VERBOSE,
)

_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
}
_HEX_ESCAPE_WIDTH: Final = {"x": 2, "u": 4, "U": 8}


def _expr_tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    at = 0
    while at < len(text):
        match = _EXPR_LEXEME.match(text, at)
        if match is None:
            raise _Error(
                f"unexpected {text[at]!r} at column {at + 1}",
                "expr-lang has no such operator; check for a typo, or put the text in quotes",
            )
        kind = match.lastgroup
        if kind == "quote":
            value, end = _read_string(text, at)
            tokens.append(_Token("string", text[at:end], value, at))
            at = end
            continue
        if kind == "number":
            tokens.append(_Token("number", match.group(), _number(match.group()), at))
        elif kind in ("name", "op"):
            tokens.append(_Token(str(kind), match.group(), match.group(), at))
        at = match.end()
    tokens.append(_Token("end", "end of expression", None, len(text)))
    return tokens


def _number(text: str) -> int | float:
    plain = text.replace("_", "")
    if plain[:2] in ("0x", "0X"):
        value = int(plain, 16) if len(plain) <= 18 else _INT64_MAX + 1
    elif any(c in plain for c in ".eE"):
        return float(plain)
    else:
        value = int(plain) if len(plain) <= 19 else _INT64_MAX + 1
    if value > _INT64_MAX:
        raise _Error(f"the integer {text} is out of range", "integers are 64-bit, as in Go")
    return value


def _read_string(text: str, start: int) -> tuple[str, int]:
    """A string literal starting at text[start]: its value, and the offset just past it."""
    quote = text[start]
    if quote == "`":  # a raw string: no escapes
        end = text.find("`", start + 1)
        if end < 0:
            raise _Error(f"the string at column {start + 1} is never closed", "close it with `")
        return text[start + 1 : end], end + 1
    chars: list[str] = []
    at = start + 1
    while at < len(text):
        char = text[at]
        if char == quote:
            return "".join(chars), at + 1
        if char != "\\":
            chars.append(char)
            at += 1
            continue
        code = text[at + 1 : at + 2]
        if code in _ESCAPES:
            chars.append(_ESCAPES[code])
            at += 2
        elif code in _HEX_ESCAPE_WIDTH or (code and code in "01234567"):
            octal = code not in _HEX_ESCAPE_WIDTH
            digits = (
                text[at + 1 : at + 4] if octal else text[at + 2 : at + 2 + _HEX_ESCAPE_WIDTH[code]]
            )
            wanted = 3 if octal else _HEX_ESCAPE_WIDTH[code]
            alphabet = "01234567" if octal else "0123456789abcdefABCDEF"
            if len(digits) != wanted or any(d not in alphabet for d in digits):
                raise _Error(f"a malformed escape at column {at + 1}", "write \\xHH or \\uHHHH")
            codepoint = int(digits, 8 if octal else 16)
            if codepoint > 0x10FFFF:
                raise _Error(f"the escape at column {at + 1} is not a character", "fix it")
            chars.append(chr(codepoint))
            at += (1 if octal else 2) + wanted
        else:
            raise _Error(
                f"an unknown escape '\\{code}' at column {at + 1}",
                "write a backslash as \\\\",
            )
    raise _Error(f"the string at column {start + 1} is never closed", f"close it with {quote}")


# -- expr-lang: syntax tree -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Function:
    name: str
    least: int  # arguments
    most: int | None  # arguments; None: any number
    call: Callable[..., Any]


@dataclass(frozen=True, slots=True)
class _Literal:
    value: Any
    depth: int = 1


@dataclass(frozen=True, slots=True)
class _Array:
    items: tuple[_Node, ...]
    depth: int


@dataclass(frozen=True, slots=True)
class _Name:
    name: str
    depth: int = 1


@dataclass(frozen=True, slots=True)
class _Member:
    target: _Node
    key: str
    nil_safe: bool  # after `?.`: nil and missing keys give nil
    depth: int


@dataclass(frozen=True, slots=True)
class _Index:
    target: _Node
    index: _Node
    nil_safe: bool
    depth: int


@dataclass(frozen=True, slots=True)
class _Call:
    function: _Function
    args: tuple[_Node, ...]
    depth: int


@dataclass(frozen=True, slots=True)
class _Unary:
    op: str
    operand: _Node
    depth: int


@dataclass(frozen=True, slots=True)
class _Binary:
    op: str
    left: _Node
    right: _Node
    depth: int


@dataclass(frozen=True, slots=True)
class _Ternary:
    condition: _Node
    then: _Node
    otherwise: _Node
    depth: int


_Node = _Literal | _Array | _Name | _Member | _Index | _Call | _Unary | _Binary | _Ternary


def _deeper(*children: _Node) -> int:
    """A new node's depth; past `MAX_NESTING`, which keeps evaluation's recursion bounded."""
    depth = 1 + max((child.depth for child in children), default=0)
    if depth > MAX_NESTING:
        raise _Error(
            f"the expression is deeper than {MAX_NESTING} levels (nesting, or operators in "
            "one chain)",
            "split it into simpler expressions",
        )
    return depth


def _source(node: _Node) -> str:
    """A node written back as expression text, for messages (`inputs.parameters['x']`)."""
    match node:
        case _Name(name=name):
            return name
        case _Member(target=target, key=key, nil_safe=nil_safe):
            return f"{_source(target)}{'?.' if nil_safe else '.'}{key}"
        case _Index(target=target, index=_Literal(value=str() as key)):
            return f"{_source(target)}[{key!r}]"
        case _Index(target=target, index=_Literal(value=value)):
            return f"{_source(target)}[{value!r}]"
        case _Index(target=target):
            return f"{_source(target)}[...]"
        case _Call(function=function):
            return f"{function.name}(...)"
        case _Literal(value=value):
            return repr(value)
        case _Array():
            return "[...]"
        case _:
            return "(...)"


# Binding powers as expr-lang's parser has them; a higher number binds tighter.
_BINARY: Final = {
    "||": 10,
    "or": 10,
    "&&": 15,
    "and": 15,
    "==": 20,
    "!=": 20,
    "<": 20,
    ">": 20,
    "<=": 20,
    ">=": 20,
    "in": 20,
    "not in": 20,
    "matches": 20,
    "contains": 20,
    "startsWith": 20,
    "endsWith": 20,
    "+": 30,
    "-": 30,
    "*": 60,
    "/": 60,
    "%": 60,
    "??": 500,
}
_UNARY: Final = {"!": 50, "not": 50, "-": 90, "+": 90}
_WORD_BINARY: Final = frozenset(
    {"or", "and", "in", "matches", "contains", "startsWith", "endsWith"}
)


class _ExprParser:
    """Precedence climbing over expr-lang's tokens, as expr-lang's own parser does it."""

    def __init__(self, text: str) -> None:
        self._tokens = _expr_tokens(text)
        self._at = 0
        self._level = 0

    def parse(self) -> _Node:
        node = self._expression(0)
        token = self._peek()
        if token.kind != "end":
            raise _Error(
                f"unexpected {token.text!r} at column {token.at + 1}",
                "an operator may be missing, or a parenthesis or quote unbalanced",
            )
        return node

    def _peek(self, ahead: int = 0) -> _Token:
        return self._tokens[min(self._at + ahead, len(self._tokens) - 1)]

    def _advance(self) -> _Token:
        token = self._peek()
        self._at += 1
        return token

    def _is_op(self, text: str) -> bool:
        token = self._peek()
        return token.kind == "op" and token.text == text

    def _expect(self, text: str) -> None:
        token = self._advance()
        if token.kind != "op" or token.text != text:
            raise _Error(
                f"expected {text!r} at column {token.at + 1}, found {token.text!r}",
                "check that parentheses and brackets are balanced",
            )

    def _binary_operator(self) -> tuple[str | None, int]:
        """The binary operator at the current token, and how many tokens it takes."""
        token = self._peek()
        if token.kind == "op" and token.text in _BINARY:
            return token.text, 1
        if token.kind == "name":
            following = self._peek(1)
            if token.text == "not" and following.kind == "name" and following.text == "in":
                return "not in", 2
            if token.text in _WORD_BINARY:
                return token.text, 1
        return None, 0

    def _expression(self, least: int) -> _Node:
        self._level += 1
        if self._level > MAX_NESTING:
            raise _Error(
                f"the expression nests deeper than {MAX_NESTING} levels",
                "split it into simpler expressions",
            )
        left = self._unary()
        while True:
            op, width = self._binary_operator()
            if op is None or _BINARY[op] < least:
                break
            self._at += width
            right = self._expression(_BINARY[op] + 1)
            left = _Binary(op, left, right, _deeper(left, right))
        if least == 0 and self._is_op("?"):
            self._advance()
            then = self._expression(0)
            self._expect(":")
            otherwise = self._expression(0)
            left = _Ternary(left, then, otherwise, _deeper(left, then, otherwise))
        self._level -= 1
        return left

    def _unary(self) -> _Node:
        token = self._peek()
        if token.kind in ("op", "name") and token.text in _UNARY:
            self._advance()
            operand = self._expression(_UNARY[token.text])
            return _Unary(token.text, operand, _deeper(operand))
        return self._postfix(self._primary())

    def _primary(self) -> _Node:
        token = self._advance()
        if token.kind in ("number", "string"):
            return _Literal(token.value)
        if token.kind == "name":
            constants = {"true": True, "false": False, "nil": None}
            return _Literal(constants[token.text]) if token.text in constants else _Name(token.text)
        if token.kind == "op" and token.text == "(":
            node = self._expression(0)
            self._expect(")")
            return node
        if token.kind == "op" and token.text == "[":
            items = self._list("]")
            return _Array(items, _deeper(*items))
        raise _Error(
            f"unexpected {token.text!r} at column {token.at + 1}",
            "a value is missing here (a name, a number, a string or a parenthesis)",
        )

    def _list(self, closing: str) -> tuple[_Node, ...]:
        """Comma-separated expressions up to the closing bracket (a trailing comma is fine)."""
        items: list[_Node] = []
        while not self._is_op(closing):
            items.append(self._expression(0))
            if not self._is_op(closing):
                self._expect(",")
        self._advance()
        return tuple(items)

    def _postfix(self, node: _Node) -> _Node:
        nil_safe = False
        while True:
            token = self._peek()
            if token.kind != "op":
                return node
            if token.text in (".", "?."):
                self._advance()
                key = self._advance()
                if key.kind != "name":
                    raise _Error(
                        f"expected a name after {token.text!r} at column {key.at + 1}",
                        "write a.b, or a['b-c'] for a key that is not a name",
                    )
                if isinstance(node, _Name) and node.name == "sprig" and self._is_op("("):
                    node = self._call(f"sprig.{key.text}", key)
                    continue
                nil_safe = nil_safe or token.text == "?."
                node = _Member(node, key.text, nil_safe, _deeper(node))
            elif token.text == "[":
                self._advance()
                index = self._expression(0)
                self._expect("]")
                node = _Index(node, index, nil_safe, _deeper(node, index))
            elif token.text == "(":
                if not isinstance(node, _Name):
                    raise _Error(
                        f"{_source(node)} is not a function, at column {token.at + 1}",
                        "call a built-in such as int(...) or a sprig function: sprig.trunc(...)",
                    )
                node = self._call(node.name, token)
            else:
                return node

    def _call(self, name: str, token: _Token) -> _Call:
        function = _FUNCTIONS.get(name)
        if function is None:
            raise _Error(
                f"unknown function {name!r} at column {token.at + 1}",
                _did_you_mean(
                    name,
                    _FUNCTIONS,
                    "the local runner knows expr-lang's common functions and these sprig "
                    "ones: " + ", ".join(sorted(n for n in _FUNCTIONS if n.startswith("sprig."))),
                ),
            )
        self._expect("(")
        args = self._list(")")
        if len(args) < function.least or (function.most is not None and len(args) > function.most):
            wanted = (
                f"{function.least}"
                if function.least == function.most
                else f"{function.least} or more"
                if function.most is None
                else f"{function.least} to {function.most}"
            )
            raise _Error(
                f"{name}() takes {wanted} argument{'' if wanted == '1' else 's'}, not {len(args)}",
                "check the arguments; sprig functions take the string last, e.g. "
                "sprig.trunc(16, s)",
            )
        return _Call(function, args, _deeper(*args))


@functools.lru_cache(maxsize=512)
def _parse_expression(expression: str) -> _Node:
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise _Error(
            f"the expression is {len(expression)} characters long, over the limit of "
            f"{MAX_EXPRESSION_CHARS}",
            "split it into smaller expressions",
        )
    if not expression.strip():
        raise _Error("an empty expression", "write an expression, e.g. {{=int(x) + 1}}")
    return _ExprParser(expression).parse()


# -- expr-lang: evaluation ------------------------------------------------------------------


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


class _Evaluator:
    """Evaluates a parsed expression against one scope."""

    def __init__(self, scope: Mapping[str, Any]) -> None:
        self._scope = scope

    def value(self, node: _Node, *, lenient: bool = False) -> Any:
        """The node's value; `lenient` (the left of `??`) reads a missing key as nil."""
        match node:
            case _Literal(value=value):
                return value
            case _Array(items=items):
                return [self.value(item) for item in items]
            case _Name(name=name):
                return self._name(name)
            case _Member(target=target, key=key, nil_safe=nil_safe):
                found = self.value(target, lenient=lenient)
                return self._key(found, key, node, lenient=lenient or nil_safe)
            case _Index(target=target, index=index, nil_safe=nil_safe):
                found = self.value(target, lenient=lenient)
                return self._index(found, self.value(index), node, lenient=lenient or nil_safe)
            case _Call(function=function, args=args):
                return function.call(*(self.value(arg) for arg in args))
            case _Unary(op=op, operand=operand):
                return self._unary(op, self.value(operand))
            case _Binary(op=op, left=left, right=right):
                return self._binary(op, left, right)
            case _Ternary(condition=condition_, then=then, otherwise=otherwise):
                chosen = self._truth(condition_, "?")
                return self.value(then if chosen else otherwise)
            case _:
                assert_never(node)

    def _name(self, name: str) -> Any:
        if name in self._scope:
            return self._scope[name]
        hint = (
            "a function must be called: sprig.NAME(...) or NAME(...)"
            if name == "sprig" or name in _FUNCTIONS
            else _did_you_mean(name, self._scope, "check the name against the ones listed")
        )
        raise _Error(f"unknown name {name!r} ({_known(self._scope)})", hint)

    def _key(self, found: Any, key: str, node: _Member | _Index, *, lenient: bool) -> Any:
        if found is None and lenient:
            return None
        if isinstance(found, Mapping):
            if key in found:
                return found[key]
            if lenient:
                return None
            raise _Error(
                f"{_source(node.target)} has no {key!r} ({_known(found)})",
                _did_you_mean(key, found, "use ?. or ?? where the key may be missing"),
            )
        raise _Error(
            f"{_source(node.target)} is {_show(found)}, not a map, so it has no {key!r}",
            "use ?. or ?? where the value may be nil"
            if found is None
            else f"refer to {_source(node.target)} itself",
        )

    def _index(self, found: Any, index: Any, node: _Index, *, lenient: bool) -> Any:
        if isinstance(index, str) and (isinstance(found, Mapping) or found is None):
            return self._key(found, index, node, lenient=lenient)
        if found is None and lenient:
            return None
        if isinstance(found, list | tuple | str) and isinstance(index, int):
            if isinstance(index, bool) or not -len(found) <= index < len(found):
                raise _Error(
                    f"index {index!r} is out of range for {_source(node.target)} "
                    f"({len(found)} items)",
                    "index from 0 (or from -1 for the last item)",
                )
            return found[index]
        raise _Error(
            f"cannot index {_source(node.target)} ({_show(found)}) with {_show(index)}",
            "index an array or a string with an int and a map with a string",
        )

    def _truth(self, node: _Node, op: str) -> bool:
        value = self.value(node)
        if not isinstance(value, bool):
            raise _Error(
                f"{op!r} needs a bool, not {_show(value)} from {_source(node)}",
                "compare the value to get a bool, e.g. x == 'yes'",
            )
        return value

    def _unary(self, op: str, value: Any) -> Any:
        if op in ("!", "not"):
            if not isinstance(value, bool):
                raise _Error(f"{op!r} needs a bool, not {_show(value)}", "compare it first")
            return not value
        if not _is_number(value):
            raise _Error(
                f"unary {op!r} needs a number, not {_show(value)}", "convert it with float(...)"
            )
        if op == "+":
            return value
        return _wrap_int64(-value) if isinstance(value, int) else -value

    def _binary(self, op: str, left: _Node, right: _Node) -> Any:
        if op in ("&&", "and"):
            return self._truth(left, op) and self._truth(right, op)
        if op in ("||", "or"):
            return self._truth(left, op) or self._truth(right, op)
        if op == "??":
            found = self.value(left, lenient=True)
            return self.value(right) if found is None else found
        return _apply(op, self.value(left), self.value(right))


def evaluate(expression: str, scope: Mapping[str, Any], *, where: str) -> Any:
    """The value of an expr-lang expression, with Argo's functions, over scope.

    Supported: literals (`"a"`, `'a'`, raw `` `a` ``, 16, 1.5, 0x1F, true, false, nil), names,
    `a.b`, `a?.b`, `a['k']`, `a[0]`, arrays `[1, 2]`, calls; `!`/`not`, unary `-`; `* / %`,
    `+ -` (`+` also joins strings), comparisons, `== !=`, `in`, `not in`, `contains`,
    `startsWith`, `endsWith`, `matches`, `&&`/`and`, `||`/`or`, `c ? a : b` and `??`, with
    expr-lang's precedence. `/` always gives a float; ints are 64-bit and wrap as in Go.

    Functions: int, float, string, asInt, asFloat, len, lower, upper, trim, trimPrefix,
    trimSuffix, split, join, replace, toJSON (indented), toJson (compact), fromJSON, jsonpath
    (simple `$.a.b[0]` paths), and sprig.NAME for regexReplaceAll, trunc, sha256sum, replace,
    lower, upper, trim, trimPrefix, trimSuffix, toString, int, atoi, add, sub, default, quote,
    join, split, splitList. Regular expressions are Go's, read by Python's `re` (the common
    syntax is the same).

    Raises:
        ExpressionError: a syntax error, an unknown name or function, a missing key, a type error
            ("a" * 2), or an expression over `MAX_EXPRESSION_CHARS` or nested deeper than
            `MAX_NESTING`.
    """
    try:
        return _Evaluator(scope).value(_parse_expression(expression))
    except _Error as failure:
        raise ExpressionError(where, expression, failure.problem, failure.hint) from None


# -- expr-lang and sprig functions ----------------------------------------------------------


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


@functools.lru_cache(maxsize=256)
def _go_regex(pattern: str) -> re.Pattern[str]:
    r"""A Go (RE2) regular expression, compiled by Python's re.

    The common syntax is the same; Go's `\z` (end of text) is Python's `\Z`, and Go's
    `(?<name>...)` is Python's `(?P<name>...)`.
    """
    translated: list[str] = []
    at = 0
    while at < len(pattern):
        if pattern.startswith("\\z", at):
            translated.append("\\Z")
            at += 2
        elif pattern[at] == "\\":
            translated.append(pattern[at : at + 2])
            at += 2
        elif pattern.startswith("(?<", at) and pattern[at + 3 : at + 4].isalpha():
            translated.append("(?P<")
            at += 3
        else:
            translated.append(pattern[at])
            at += 1
    try:
        return re.compile("".join(translated))
    except re.error as error:
        raise _Error(
            f"the regular expression {pattern!r} is invalid ({error})", "fix the pattern"
        ) from None


_EXPAND_REFERENCE: Final = re.compile(r"\{(\w+)\}|(\w+)")


def _go_expand(template: str, match: re.Match[str]) -> str:
    """A replacement as Go's Regexp.Expand writes it: `$1`, `${1}`, `${name}`, `$$` for `$`.

    A reference to a group that did not take part, or does not exist, gives nothing; a `$` not
    followed by a name stays as it is.
    """
    parts: list[str] = []
    rest = template
    while True:
        before, dollar, rest = rest.partition("$")
        parts.append(before)
        if not dollar:
            return "".join(parts)
        if rest.startswith("$"):
            parts.append("$")
            rest = rest[1:]
            continue
        reference = _EXPAND_REFERENCE.match(rest)
        if reference is None:
            parts.append("$")
            continue
        name = reference.group(1) or reference.group(2)
        rest = rest[reference.end() :]
        group: str | int | None
        if name.isascii() and name.isdigit() and (name == "0" or not name.startswith("0")):
            group = int(name) if int(name) <= match.re.groups else None
        else:
            group = name if name in match.re.groupindex else None
        parts.append("" if group is None else match.group(group) or "")


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


# -- `when`: govaluate ----------------------------------------------------------------------


_WHEN_LEXEME: Final = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<number>[0-9][0-9.]*)
    | (?P<word>[^\W\d][\w.]*)
    | (?P<op>==|!=|>=|<=|=~|!~|&&|\|\||[<>!()+\-*/%])
    | (?P<quote>["'])
    """,
    re.VERBOSE,
)

# From the loosest binding to the tightest, as govaluate orders them.
_WHEN_LEVELS: Final = (
    ("||",),
    ("&&",),
    ("==", "!=", ">", "<", ">=", "<=", "=~", "!~"),
    ("+", "-"),
    ("*", "/", "%"),
)
_QUOTE_HINT: Final = 'put values that hold operators or punctuation in quotes, e.g. "a-b"'


def _when_tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    at = 0
    while at < len(text):
        match = _WHEN_LEXEME.match(text, at)
        if match is None:
            raise _Error(f"unexpected {text[at]!r} at column {at + 1}", _QUOTE_HINT)
        kind, lexeme = match.lastgroup, match.group()
        if kind == "quote":
            end = at + 1
            chars: list[str] = []
            while end < len(text) and text[end] != lexeme:
                chars.append(
                    text[end + 1] if text[end] == "\\" and end + 1 < len(text) else text[end]
                )
                end += 2 if text[end] == "\\" else 1
            if end >= len(text):
                raise _Error(
                    f"the string at column {at + 1} is never closed", f"close it with {lexeme}"
                )
            tokens.append(_Token("value", text[at : end + 1], "".join(chars), at))
            at = end + 1
            continue
        if kind == "number":
            try:
                tokens.append(_Token("value", lexeme, float(lexeme), at))
            except ValueError:
                raise _Error(
                    f"{lexeme!r} at column {at + 1} is not a number", _QUOTE_HINT
                ) from None
        elif kind == "word":
            if lexeme == "in":
                raise _Error(f"'in' at column {at + 1} is an operator here", _QUOTE_HINT)
            # Argo turns govaluate's variables into strings: `heads == heads` compares two words.
            word: Any = {"true": True, "false": False}.get(lexeme, lexeme)
            tokens.append(_Token("value", lexeme, word, at))
        elif kind == "op":
            tokens.append(_Token("op", lexeme, lexeme, at))
        at = match.end()
    tokens.append(_Token("end", "end of condition", None, len(text)))
    return tokens


def _when_apply(op: str, left: Any, right: Any) -> Any:
    if op in ("&&", "||"):
        if not (isinstance(left, bool) and isinstance(right, bool)):
            raise _Error(
                f"{op!r} needs true or false on both sides, not {_show(left)} and {_show(right)}",
                "compare values first, e.g. a == b && c == d",
            )
        return (left and right) if op == "&&" else (left or right)
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if op in ("=~", "!~"):
        if not (isinstance(left, str) and isinstance(right, str)):
            raise _Error(
                f"{op!r} needs strings on both sides, not {_show(left)} and {_show(right)}",
                _QUOTE_HINT,
            )
        matched = _go_regex(right).search(left) is not None
        return matched if op == "=~" else not matched
    if op in ("<", ">", "<=", ">="):
        return _compare(op, left, right)
    if op == "+" and (isinstance(left, str) or isinstance(right, str)):
        return _go_format(left) + _go_format(right)
    if not (_is_number(left) and _is_number(right)):
        raise _Error(f"cannot compute {_show(left)} {op} {_show(right)}", _QUOTE_HINT)
    if op in ("/", "%") and right == 0:
        raise _Error("division by zero", "check the values substituted into the condition")
    if op == "%":
        return math.fmod(left, right)
    return _arithmetic(op, float(left), float(right))


class _WhenEvaluator:
    """Reads a `when` and computes its value as it goes (govaluate's grammar, Argo's words)."""

    def __init__(self, text: str) -> None:
        self._tokens = _when_tokens(text)
        self._at = 0
        self._level = 0

    def run(self) -> Any:
        value = self._binary(0)
        token = self._tokens[self._at]
        if token.kind != "end":
            raise _Error(
                f"unexpected {token.text!r} at column {token.at + 1}",
                "an operator may be missing; " + _QUOTE_HINT,
            )
        return value

    def _op(self) -> str | None:
        token = self._tokens[self._at]
        return token.text if token.kind == "op" else None

    def _binary(self, level: int) -> Any:
        if level == len(_WHEN_LEVELS):
            return self._unary()
        left = self._binary(level + 1)
        while (op := self._op()) in _WHEN_LEVELS[level]:
            self._at += 1
            left = _when_apply(str(op), left, self._binary(level + 1))
        return left

    def _unary(self) -> Any:
        token = self._tokens[self._at]
        self._at += 1
        if token.kind == "value":
            return token.value
        if token.kind == "op" and token.text in ("!", "-", "("):
            self._level += 1
            if self._level > MAX_NESTING:
                raise _Error(f"the condition nests deeper than {MAX_NESTING} levels", "simplify it")
            if token.text == "(":
                value = self._binary(0)
                if self._op() != ")":
                    closing = self._tokens[self._at]
                    raise _Error(
                        f"expected ')' at column {closing.at + 1}", "balance the parentheses"
                    )
                self._at += 1
            elif token.text == "!":
                value = self._unary()
                if not isinstance(value, bool):
                    raise _Error(f"'!' needs true or false, not {_show(value)}", _QUOTE_HINT)
                value = not value
            else:
                value = self._unary()
                if not _is_number(value):
                    raise _Error(f"'-' needs a number, not {_show(value)}", _QUOTE_HINT)
                value = -value
            self._level -= 1
            return value
        raise _Error(
            f"unexpected {token.text!r} at column {token.at + 1}",
            "a value is missing here; " + _QUOTE_HINT,
        )


def condition(text: str, *, where: str) -> bool:
    """Whether a `when` holds, read as Argo reads it (govaluate) after `substitute`.

    A bare word is a string (`heads == heads`), a number is a number (`10 > 9` compares 10 with
    9, not "10" with "9"), `true` and `false` are booleans; quoted strings take `'` or `"`.
    Operators: `== != < > <= >=` (numbers with numbers, strings with strings), `=~` and `!~`
    (a Go regular expression on the right), `&& || !`, `+ - * / %`, parentheses.

    Raises:
        ExpressionError: the text does not parse (a word holding `-` or `/` must be quoted, as
            in Argo), a placeholder was left in it, or it is not true or false.
    """
    try:
        if "{{" in text:
            raise _Error(
                "an unresolved placeholder",
                "substitute() the text first; a placeholder left in means its variable is missing",
            )
        if len(text) > MAX_EXPRESSION_CHARS:
            raise _Error(
                f"the condition is {len(text)} characters long, over {MAX_EXPRESSION_CHARS}",
                "simplify it",
            )
        value = _WhenEvaluator(text).run()
        if not isinstance(value, bool):
            raise _Error(
                f"the condition gives {_show(value)}, not true or false",
                "compare values, e.g. {{steps.flip.outputs.result}} == heads",
            )
        return value
    except _Error as failure:
        raise ExpressionError(where, text, failure.problem, failure.hint) from None


# -- `depends` ------------------------------------------------------------------------------


_PHASES: Final = frozenset(
    {"Pending", "Running", "Succeeded", "Failed", "Error", "Skipped", "Omitted"}
)


@dataclass(frozen=True, slots=True)
class TaskResult:
    """How a DAG task ended, as the `depends` of the tasks after it sees it.

    Attributes:
        phase: the task node's Argo phase: "Succeeded", "Failed", "Error", "Skipped" or
            "Omitted" once complete ("Running" still counts for a daemoned task).
        children: the phases of a fan-out's members (withItems, withParam, withSequence), which
            `.AnySucceeded` and `.AllFailed` read; empty for a task that did not fan out.
        daemoned: the task's template is a daemon; `.Daemoned` holds once it is past Pending.
        continues_on: the phases ("Failed", "Error") that the task's `continueOn` lets its
            dependents pass: a bare reference to the task accepts them as well, as Argo
            expands it.

    Raises:
        ValueError: a phase that Argo does not have.
    """

    phase: str
    children: tuple[str, ...] = ()
    daemoned: bool = False
    continues_on: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = {self.phase, *self.children} - _PHASES
        if unknown:
            raise ValueError(
                f"TaskResult: unknown phase(s) {sorted(unknown)}; Argo's are {sorted(_PHASES)}"
            )
        if not self.continues_on <= {"Failed", "Error"}:
            raise ValueError(
                f"TaskResult: continues_on {sorted(self.continues_on)} may hold only "
                "'Failed' and 'Error' (continueOn's failed and error)"
            )


def _bare(result: TaskResult) -> bool:
    """An unqualified `task`: Argo's `(task.Succeeded || task.Skipped || task.Daemoned)`."""
    return (
        result.phase in ("Succeeded", "Skipped")
        or _RESULTS["Daemoned"](result)
        or result.phase in result.continues_on
    )


_RESULTS: Final[dict[str, Callable[[TaskResult], bool]]] = {
    "Succeeded": lambda r: r.phase == "Succeeded",
    "Failed": lambda r: r.phase == "Failed",
    "Errored": lambda r: r.phase == "Error",
    "Skipped": lambda r: r.phase == "Skipped",
    "Omitted": lambda r: r.phase == "Omitted",
    "Daemoned": lambda r: r.daemoned and r.phase != "Pending",
    "AnySucceeded": lambda r: any(phase == "Succeeded" for phase in r.children),
    "AllFailed": lambda r: bool(r.children) and all(phase == "Failed" for phase in r.children),
}
"""What each `task.Result` of a `depends` means, as Argo's DAG evaluation decides it."""


@dataclass(frozen=True, slots=True)
class _Reference:
    task: str
    result: str | None  # None: a bare `task`


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Condition


@dataclass(frozen=True, slots=True)
class _AllOf:
    operands: tuple[_Condition, ...]


@dataclass(frozen=True, slots=True)
class _AnyOf:
    operands: tuple[_Condition, ...]


_Condition = _Reference | _Not | _AllOf | _AnyOf

_DEPENDS_LEXEME: Final = re.compile(
    r"(?P<space>\s+)|(?P<op>&&|\|\||[!()])"
    r"|(?P<task>[A-Za-z0-9_][A-Za-z0-9_-]*)(?:\.(?P<result>[A-Za-z]\w*))?"
)
_TASK_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def _depends_tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    at = 0
    while at < len(text):
        match = _DEPENDS_LEXEME.match(text, at)
        if match is None:
            raise _Error(
                f"unexpected {text[at]!r} at column {at + 1}",
                "write task names joined by &&, || and !, e.g. a && (b.Failed || !c)",
            )
        if match.lastgroup == "op":
            tokens.append(_Token("op", match.group(), match.group(), at))
        elif match.group("task") is not None:
            result = match.group("result")
            if result is not None and result not in _RESULTS:
                task = match.group("task")
                hint = (
                    f"Argo has no .Completed; for 'finished either way' write "
                    f"({task}.Succeeded || {task}.Failed)"
                    if result == "Completed"
                    else _did_you_mean(result, _RESULTS, f"use one of: {', '.join(_RESULTS)}")
                )
                raise _Error(f"{match.group()!r} is not a task result Argo knows", hint)
            tokens.append(
                _Token("task", match.group(), _Reference(match.group("task"), result), at)
            )
        at = match.end()
    tokens.append(_Token("end", "end of depends", None, len(text)))
    return tokens


class _DependsParser:
    """`depends` grammar: `||` binds loosest, then `&&`, then `!`; parentheses group."""

    def __init__(self, text: str) -> None:
        self._tokens = _depends_tokens(text)
        self._at = 0
        self._level = 0

    def parse(self) -> _Condition | None:
        if self._tokens[0].kind == "end":
            return None
        condition_ = self._any()
        token = self._tokens[self._at]
        if token.kind != "end":
            raise _Error(
                f"unexpected {token.text!r} at column {token.at + 1}",
                "join task names with && or ||",
            )
        return condition_

    def _is_op(self, text: str) -> bool:
        token = self._tokens[self._at]
        return token.kind == "op" and token.text == text

    def _any(self) -> _Condition:
        operands = [self._all()]
        while self._is_op("||"):
            self._at += 1
            operands.append(self._all())
        return operands[0] if len(operands) == 1 else _AnyOf(tuple(operands))

    def _all(self) -> _Condition:
        operands = [self._unary()]
        while self._is_op("&&"):
            self._at += 1
            operands.append(self._unary())
        return operands[0] if len(operands) == 1 else _AllOf(tuple(operands))

    def _unary(self) -> _Condition:
        token = self._tokens[self._at]
        self._at += 1
        if token.kind == "task":
            reference: _Reference = token.value
            return reference
        if token.kind == "op" and token.text in ("!", "("):
            self._level += 1
            if self._level > MAX_NESTING:
                raise _Error(f"depends nests deeper than {MAX_NESTING} levels", "simplify it")
            if token.text == "!":
                operand: _Condition = _Not(self._unary())
            else:
                operand = self._any()
                if not self._is_op(")"):
                    closing = self._tokens[self._at]
                    raise _Error(
                        f"expected ')' at column {closing.at + 1}", "balance the parentheses"
                    )
                self._at += 1
            self._level -= 1
            return operand
        raise _Error(
            f"unexpected {token.text!r} at column {token.at + 1}", "a task name is missing here"
        )


def _named_tasks(root: _Condition | None) -> frozenset[str]:
    match root:
        case None:
            return frozenset()
        case _Reference(task=task):
            return frozenset({task})
        case _Not(operand=operand):
            return _named_tasks(operand)
        case _AllOf(operands=operands) | _AnyOf(operands=operands):
            return frozenset(task for operand in operands for task in _named_tasks(operand))
        case _:
            assert_never(root)


def _holds(root: _Condition, results: Mapping[str, TaskResult]) -> bool:
    match root:
        case _Reference(task=task, result=result):
            return (_bare if result is None else _RESULTS[result])(results[task])
        case _Not(operand=operand):
            return not _holds(operand, results)
        case _AllOf(operands=operands):
            return all(_holds(operand, results) for operand in operands)
        case _AnyOf(operands=operands):
            return any(_holds(operand, results) for operand in operands)
        case _:
            assert_never(root)


@dataclass(frozen=True, slots=True, repr=False)
class Depends:
    """A DAG task's `depends` (or `dependencies`), parsed: what it waits for, and whether it runs.

    Build one with `parse_depends` or `Depends.from_dependencies`. Two are equal when their text
    is.

    Attributes:
        text: the expression as written (`dependencies: [a, b]` reads as "a && b").
        where: where it came from, for messages.
        tasks: the task names it refers to.
    """

    text: str
    where: str = field(compare=False)
    tasks: frozenset[str] = field(compare=False)
    _root: _Condition | None = field(compare=False)

    def __repr__(self) -> str:
        return f"Depends({self.text!r})"

    @classmethod
    def from_dependencies(cls, names: Sequence[str], *, where: str = "dependencies") -> Depends:
        """The older `dependencies: [a, b]` list: each task, bare, all of them (`a && b`).

        An empty list depends on nothing and always holds.

        Raises:
            ExpressionError: a name that is not a task name.
        """
        for name in names:
            if _TASK_NAME.fullmatch(name) is None:
                raise ExpressionError(
                    where,
                    name,
                    "not a task name",
                    "task names hold letters, digits, '-' and '_'; for logic, use depends",
                )
        return parse_depends(" && ".join(names), where=where)

    def evaluate(self, results: Mapping[str, TaskResult]) -> bool:
        """Whether the task runs, given how each task in `tasks` ended.

        A bare `a` holds when a succeeded, was skipped or is a running daemon (or ended in a
        phase its continueOn allows); `a.Failed` and the rest test one result; `.AnySucceeded`
        and `.AllFailed` test a fan-out's members. Nothing is named: it holds.

        Raises:
            ExpressionError: a task in `tasks` has no result; call this only once all are
                complete.
        """
        missing = sorted(self.tasks - results.keys())
        if missing:
            raise ExpressionError(
                self.where,
                self.text,
                f"no result for task(s) {', '.join(missing)} ({_known(results)})",
                "evaluate depends only once every task it names is complete",
            )
        return self._root is None or _holds(self._root, results)


def parse_depends(text: str, *, where: str) -> Depends:
    """A DAG task's `depends` expression, parsed.

    Task names (letters, digits, '-', '_'), each bare or with one of `.Succeeded`, `.Failed`,
    `.Errored`, `.Skipped`, `.Omitted`, `.Daemoned`, `.AnySucceeded`, `.AllFailed`, joined by
    `&&`, `||`, `!` and parentheses. Blank text depends on nothing.

    Raises:
        ExpressionError: the text does not parse, or names a result Argo does not have (such as
            `.Completed`, which Argo rejects too).
    """
    try:
        if len(text) > MAX_EXPRESSION_CHARS:
            raise _Error(
                f"depends is {len(text)} characters long, over {MAX_EXPRESSION_CHARS}",
                "simplify it",
            )
        root = _DependsParser(text).parse()
    except _Error as failure:
        raise ExpressionError(where, text, failure.problem, failure.hint) from None
    return Depends(text, where, _named_tasks(root), root)
