"""How the author's commands print: aligned tables for people, JSON or YAML for scripts."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import yaml

__all__ = ["FORMATS", "emit", "plain", "table"]

FORMATS = ("table", "json", "yaml")

_MAX_CELL = 160
"""A table cell longer than this is cut (with "..."); `-o json` and `explain` show it whole."""


def plain(value: Any) -> Any:
    """Dataclasses (and lists of them) as plain dicts and lists, for JSON and YAML."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def _cell(value: object) -> str:
    if value is None:
        return "-"
    text = f"{value:g}" if isinstance(value, float) else str(value).replace("\n", " ")
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 3] + "..."


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns aligned as kubectl aligns them (three spaces apart, upper-case headers)."""
    cells = [[h.upper() for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def emit(data: Any, output: str, as_table: Callable[[], str]) -> str:
    """`data` in the chosen format (`as_table` makes the table when that is the one)."""
    if output == "json":
        return json.dumps(plain(data), indent=2, sort_keys=False)
    if output == "yaml":
        return yaml.safe_dump(plain(data), sort_keys=False, width=100).rstrip()
    return as_table()
