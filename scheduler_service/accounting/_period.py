"""A report's period as people write it: "30d", "2026-05-01", RFC 3339 times, Unix seconds."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

__all__ = ["MAX_PERIOD_DAYS", "PeriodError", "parse_instant", "parse_period"]

MAX_PERIOD_DAYS = 400
"""The longest period one report covers (a year and a bit), so one query stays bounded."""

_RELATIVE = re.compile(r"^(?P<amount>\d{1,6})(?P<unit>[smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_FORMS = (
    "a time before now (30d, 12h, 90m, 2w), now, a date (2026-05-01, UTC), an RFC 3339 time "
    "(2026-05-01T12:00:00Z) or Unix seconds"
)


class PeriodError(ValueError):
    """A time or period that cannot be used; the message says what is accepted."""


def parse_instant(text: str, now: float) -> float:
    """`text` as Unix seconds; relative forms count back from `now`. See `_FORMS`."""
    value = text.strip()
    if value == "now":
        return now
    relative = _RELATIVE.match(value)
    if relative is not None:
        return now - int(relative["amount"]) * _UNIT_SECONDS[relative["unit"]]
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or seconds < 0:
            raise PeriodError(f"{text!r} is not a time: Unix seconds must be 0 or more")
        return seconds
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PeriodError(f"{text!r} is not a time; give {_FORMS}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_period(since: str, until: str | None, now: float) -> tuple[float, float]:
    """The period [since, until) in Unix seconds (`until` None: now).

    Raises `PeriodError` when a time cannot be read, the period is empty, or it is longer than
    `MAX_PERIOD_DAYS`.
    """
    start = parse_instant(since, now)
    end = now if until is None else parse_instant(until, now)
    if end <= start:
        raise PeriodError(
            f"the period is empty: until ({until or 'now'}) is not after since ({since})"
        )
    if end - start > MAX_PERIOD_DAYS * 86_400:
        raise PeriodError(
            f"the period from {since} to {until or 'now'} is longer than {MAX_PERIOD_DAYS} days; "
            "ask for it in parts"
        )
    return start, end
