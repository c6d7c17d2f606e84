"""A token, as each language's lexer (expr-lang, govaluate's `when`, `depends`) produces it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "number", "string", "name", "value" (`when`), "task" (`depends`), "op" or "end"
    text: str  # as written
    value: Any
    at: int  # offset in the expression
