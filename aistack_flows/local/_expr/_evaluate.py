"""expr-lang evaluated: a parsed expression's value over a scope (`evaluate`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, assert_never

from aistack_flows.local._expr._errors import ExpressionError, _did_you_mean, _Error, _known, _show
from aistack_flows.local._expr._functions import _FUNCTIONS
from aistack_flows.local._expr._operators import _apply, _is_number
from aistack_flows.local._expr._parse import (
    _Array,
    _Binary,
    _Call,
    _Index,
    _Literal,
    _Member,
    _Name,
    _Node,
    _parse_expression,
    _source,
    _Ternary,
    _Unary,
)
from aistack_flows.local._expr._values import _wrap_int64


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
