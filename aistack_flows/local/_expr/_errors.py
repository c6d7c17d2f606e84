"""The error every language here raises, and the helpers that write its messages.

Each reader or evaluator raises `_Error` (a problem and a hint); the public function that called
it adds where the text came from and the text, and raises `ExpressionError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any


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
