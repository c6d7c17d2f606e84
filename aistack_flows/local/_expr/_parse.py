"""expr-lang read into a syntax tree: the tokenizer, the nodes and the parser.

`_parse_expression` gives the tree that `_evaluate` walks; it refuses text over
`MAX_EXPRESSION_CHARS` and nesting past `MAX_NESTING`, so evaluating a tree never recurses
deeper than that.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Final

from aistack_flows.local._expr._errors import _did_you_mean, _Error
from aistack_flows.local._expr._functions import _FUNCTIONS, _Function
from aistack_flows.local._expr._limits import _INT64_MAX, MAX_EXPRESSION_CHARS, MAX_NESTING
from aistack_flows.local._expr._token import _Token

# -- expr-lang: tokens ----------------------------------------------------------------------


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
