"""A task's or step's `when`, read and evaluated as govaluate does (`condition`)."""

from __future__ import annotations

import math
import re
from typing import Any, Final

from aistack_flows.local._expr._errors import ExpressionError, _Error, _show
from aistack_flows.local._expr._limits import MAX_EXPRESSION_CHARS, MAX_NESTING
from aistack_flows.local._expr._operators import _arithmetic, _compare, _equal, _is_number
from aistack_flows.local._expr._regex import _go_regex
from aistack_flows.local._expr._token import _Token
from aistack_flows.local._expr._values import _go_format

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
