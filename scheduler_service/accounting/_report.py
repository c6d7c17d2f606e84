"""The usage report: GPU-hours per queue, namespace or user over a period, as rows and as CSV."""

from __future__ import annotations

import csv
import enum
import io
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["TOTAL_KEY", "Grouping", "UsageReport", "UsageRow", "format_instant"]

TOTAL_KEY = "(total)"
"""The key of a report's total row: no queue, namespace or user can be named so."""


class Grouping(enum.StrEnum):
    """What a usage report's rows are: one per queue, namespace or user."""

    QUEUE = "queue"
    NAMESPACE = "namespace"
    USER = "user"


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One queue's, namespace's or user's use of GPUs in the period."""

    key: str
    """The queue, namespace or user ("" for workloads whose user is not known)."""
    allocated_gpu_hours: float
    """GPUs held times hours held, clipped to the period (slices as their charged fraction)."""
    used_gpu_hours: float | None
    """The part measured as used, where something measured it; None when nothing was."""
    workloads: int
    """Workload attempts that held GPUs at some time in the period."""


def format_instant(seconds: float) -> str:
    """Unix seconds as RFC 3339 in UTC, to the second."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class UsageReport:
    """GPU-hours over [since, until) per `by` key, largest first, and their total."""

    since: float
    until: float
    by: Grouping
    rows: tuple[UsageRow, ...]
    total: UsageRow
    """All rows together (key `TOTAL_KEY`, "(total)"), also those left out when `truncated`."""
    truncated: bool = False
    """There were more keys than a report lists (`MAX_USAGE_ROWS`); the smallest are left out."""

    def to_csv(self) -> str:
        """One line per row and a last `(total)` line; hours with 4 decimals, "" when unmeasured.

        Columns: `<by>,allocated_gpu_hours,used_gpu_hours,workloads,since,until`.
        """
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            [self.by.value, "allocated_gpu_hours", "used_gpu_hours", "workloads", "since", "until"]
        )
        since, until = format_instant(self.since), format_instant(self.until)
        for row in (*self.rows, self.total):
            used = "" if row.used_gpu_hours is None else f"{row.used_gpu_hours:.4f}"
            writer.writerow(
                [row.key, f"{row.allocated_gpu_hours:.4f}", used, row.workloads, since, until]
            )
        return out.getvalue()
