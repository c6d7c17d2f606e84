"""Typed, checked reading of one parsed TOML table, with errors that say where and what.

`Fields` wraps a table with its place in the file (`events[3]`, `cluster.nodes[0]`) and the
names it may hold. Every getter checks the type (a bool is not a number, an int is a float)
and the range, and every error is a `ScenarioError` whose message is
`<file>: <place>: <what is wrong>`, e.g. `demo.toml: events[3]: unknown field 'gpu'; did you
mean 'gpus'?`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Mapping

__all__ = ["Fields", "ScenarioError"]


class ScenarioError(ValueError):
    """A scenario file cannot be read or is invalid; the message names the file and the place."""


class Fields:
    """One TOML table of a scenario file; see the module docstring."""

    def __init__(
        self,
        data: object,
        *,
        source: str,
        where: str,
        allowed: Collection[str],
        noun: str = "field",
    ) -> None:
        """Check that `data` is a table holding only `allowed` keys (`noun`s, for errors)."""
        self.source = source
        self.where = where
        if not isinstance(data, dict):
            raise self.error(f"must be a table, got {_describe(data)}")
        self.data: Mapping[str, object] = data
        for key in data:
            if key not in allowed:
                raise self.error(f"unknown {noun} {key!r}{_suggest(key, allowed, noun)}")

    def error(self, message: str) -> ScenarioError:
        """An error about this table (the caller raises it)."""
        return ScenarioError(f"{self.source}: {self.where}: {message}")

    def has(self, key: str) -> bool:
        """Whether the table sets `key`."""
        return key in self.data

    def string(self, key: str, default: str | None = None) -> str:
        """A non-empty string; required when `default` is None."""
        value = self._get(key, default)
        if not isinstance(value, str) or not value:
            raise self._wrong(key, "a non-empty string", value)
        return value

    def optional_string(self, key: str) -> str | None:
        """A non-empty string, or None when the key is absent."""
        return self.string(key) if self.has(key) else None

    def integer(self, key: str, default: int | None = None, *, minimum: int = 0) -> int:
        """A whole number >= `minimum`; required when `default` is None."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, "a whole number", value)
        if value < minimum:
            raise self.error(f"field {key!r} must be >= {minimum}, got {value}")
        return value

    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        minimum: float = 0.0,
        positive: bool = False,
    ) -> float:
        """A finite number >= `minimum` (> 0 if `positive`); required when `default` is None."""
        value = self._get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self._wrong(key, "a number", value)
        if value < minimum or (positive and value <= 0):
            bound = "> 0" if positive else f">= {minimum:g}"
            raise self.error(f"field {key!r} must be {bound}, got {value}")
        return float(value)

    def optional_number(
        self, key: str, *, minimum: float = 0.0, positive: bool = False
    ) -> float | None:
        """A number as `number` checks it, or None when the key is absent."""
        return self.number(key, minimum=minimum, positive=positive) if self.has(key) else None

    def boolean(self, key: str, default: bool | None = None) -> bool:
        """`true` or `false`; required when `default` is None."""
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self._wrong(key, "true or false", value)
        return value

    def optional_boolean(self, key: str) -> bool | None:
        """`true` or `false`, or None when the key is absent."""
        return self.boolean(key) if self.has(key) else None

    def strings(self, key: str) -> tuple[str, ...]:
        """A list of non-empty strings (empty when absent)."""
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self._wrong(key, "a list of non-empty strings", value)
        return tuple(value)

    def string_table(self, key: str) -> tuple[tuple[str, str], ...]:
        """A table of string values (`{ rack = "r1" }`), as pairs in file order."""
        value = self.data.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
            raise self._wrong(key, "a table of non-empty strings", value)
        return tuple(value.items())

    def table(
        self, key: str, allowed: Collection[str], *, where: str | None = None, noun: str = "field"
    ) -> Fields:
        """A sub-table, itself checked against `allowed`."""
        return Fields(
            self._get(key, None),
            source=self.source,
            where=where or f"{self.where}.{key}",
            allowed=allowed,
            noun=noun,
        )

    def tables(self, key: str) -> list[object]:
        """An array of tables (`[[key]]`), unchecked: the caller wraps each entry in `Fields`."""
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise self._wrong(key, "an array of tables ([[" + key + "]])", value)
        return value

    def _get(self, key: str, default: object) -> object:
        if key in self.data:
            return self.data[key]
        if default is None:
            raise self.error(f"missing field {key!r}")
        return default

    def _wrong(self, key: str, expected: str, value: object) -> ScenarioError:
        return self.error(f"field {key!r} must be {expected}, got {_describe(value)}")


def _describe(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return repr(value).lower() if isinstance(value, bool) else repr(value)


def _suggest(key: str, allowed: Collection[str], noun: str) -> str:
    close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f" (known {noun}s: {', '.join(sorted(allowed)) or 'none'})"
