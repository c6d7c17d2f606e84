"""Numbers as people read them on the pages: GPUs, memory, durations, times, places in line."""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler_service.core import MILLI_GPU, format_gpus

__all__ = ["clock", "duration", "gpus", "hours", "memory"]

_MIB_PER_GIB = 1024


def gpus(amount: float) -> str:
    """GPUs as the API's messages write them: `4`, `2.5`, `0.25` (to a thousandth)."""
    return format_gpus(round(amount * MILLI_GPU))


def hours(amount: float) -> str:
    """GPU-hours: `1234.57`, `0.25`, and small amounts to two significant digits (`0.0017`)."""
    if amount == 0:
        return "0"
    if abs(amount) < 0.01:
        return f"{amount:.2g}"
    return f"{amount:.2f}"


def memory(mib: int) -> str:
    """`512 MiB`, `20 GiB`, `79.6 GiB`."""
    if mib < _MIB_PER_GIB:
        return f"{mib} MiB"
    gib = mib / _MIB_PER_GIB
    return f"{gib:.0f} GiB" if gib == int(gib) else f"{gib:.1f} GiB"


def duration(seconds: float) -> str:
    """`42 s`, `3 min 20 s`, `2 h 5 min`, `4 d 3 h`: the two largest units."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def clock(timestamp: float) -> str:
    """A Unix time as `2026-12-04 12:00:01 UTC`."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
