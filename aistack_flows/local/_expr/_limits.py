"""The bounds every language here shares: the longest text, the deepest nesting, Go's int64 range.

They keep reading and evaluating bounded, whatever a manifest contains.
"""

from __future__ import annotations

from typing import Final

MAX_EXPRESSION_CHARS: Final = 10_000
"""The longest expression, `when` or `depends` read; longer text is refused unread."""

MAX_NESTING: Final = 100
"""The deepest nesting (of parentheses, operators, calls or values) any of the languages accepts.

It keeps every recursion here far below Python's limit, whatever a manifest contains.
"""

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
