"""The usage report page: GPU-hours per queue, namespace or user over a period, and a chart.

The numbers are the accounting store's (scheduler_service.accounting): one report for the
period (the table and the CSV), and the chart's columns (hours, days or weeks, at most
`MAX_COLUMNS`) from one more query (`AccountingStore.usage_columns`). The page comes without the
chart and fetches it as a fragment of its own once shown, so the table never waits for it.
The routes read the store; `build_usage` and `build_usage_chart` only arrange what was read,
so they are tested without a database.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup

from scheduler_service.accounting import UsageReport
from scheduler_service.dashboard._svg import columns

__all__ = [
    "MAX_COLUMNS",
    "UsageChart",
    "UsageLine",
    "UsagePage",
    "build_usage",
    "build_usage_chart",
    "column_width",
    "slices",
]

MAX_COLUMNS = 31
"""Columns of the chart at most: a month of days, a day of hours."""

TOP_KEYS = 7
"""Keys drawn in colour; the others are summed as `other`."""

_WIDTHS = (3_600, 6 * 3_600, 86_400, 7 * 86_400, 30 * 86_400)


def column_width(since: float, until: float) -> int:
    """The chart's column in seconds: the shortest (an hour to 30 days) that fits the period.

    Fitting means at most `MAX_COLUMNS` columns; the widths are an hour, 6 hours, a day, a week
    and 30 days.
    """
    for width in _WIDTHS:
        if (until - since) / width <= MAX_COLUMNS:
            return width
    return _WIDTHS[-1]


def slices(since: float, until: float) -> list[tuple[float, float]]:
    """The period cut into the chart's columns, aligned to their width in UTC.

    The first and the last column may be partial.
    """
    width = column_width(since, until)
    edges = [since]
    edge = (since // width + 1) * width
    while edge < until:
        edges.append(edge)
        edge += width
    edges.append(until)
    return list(itertools.pairwise(edges))


def _label(start: float, width: int) -> str:
    moment = datetime.fromtimestamp(start, UTC)
    if width < 86_400:
        return moment.strftime("%d %H:%M")
    return moment.strftime("%b %d")


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One row of the report: GPU-hours held, measured use where known, workloads, share."""

    key: str
    allocated_gpu_hours: float
    used_gpu_hours: float | None
    workloads: int
    share: float
    """Of the period's total, 0 to 1."""


@dataclass(frozen=True, slots=True)
class UsagePage:
    """The report as the page shows it (its chart comes as a fragment of its own)."""

    by: str
    since: float
    until: float
    rows: tuple[UsageLine, ...]
    total: UsageLine
    truncated: bool
    namespaces: tuple[str, ...] | None
    """The namespaces counted (the viewer's, or the one asked for), or None for all."""
    since_text: str = "30d"
    until_text: str = ""
    namespace: str = ""
    """The period and namespace filter as the URL wrote them (the form shows them again)."""


@dataclass(frozen=True, slots=True)
class UsageChart:
    """The report's GPU-hours per column of the period, stacked by key."""

    chart: Markup
    column: str
    """What one column is: `hour`, `6 hours`, `day`, `week`, `30 days`."""
    legend: tuple[tuple[str, str], ...]
    """The series in stacking order: (name, CSS class of its colour)."""


def _line(key: str, hours: float, used: float | None, workloads: int, total: float) -> UsageLine:
    return UsageLine(key, hours, used, workloads, hours / total if total > 0 else 0.0)


def build_usage(report: UsageReport, namespaces: tuple[str, ...] | None) -> UsagePage:
    """The page of `report`, which counted `namespaces` (None: all)."""
    total = report.total.allocated_gpu_hours
    return UsagePage(
        by=report.by.value,
        since=report.since,
        until=report.until,
        rows=tuple(
            _line(r.key, r.allocated_gpu_hours, r.used_gpu_hours, r.workloads, total)
            for r in report.rows
        ),
        total=_line("total", total, report.total.used_gpu_hours, report.total.workloads, total),
        truncated=report.truncated,
        namespaces=namespaces,
    )


def build_usage_chart(
    since: float, until: float, columns_of: Sequence[tuple[float, UsageReport]]
) -> UsageChart:
    """The chart of `columns_of` ((column start, its report), in order) over [since, until).

    It stacks the period's largest `TOP_KEYS` keys (their hours summed over the columns, which
    cover the period: the period's report) and sums the rest as `other`.
    """
    totals: dict[str, float] = {}
    for _, part in columns_of:
        for row in part.rows:
            totals[row.key] = totals.get(row.key, 0.0) + row.allocated_gpu_hours
    top = sorted(totals, key=lambda key: (-totals[key], key))[:TOP_KEYS]
    series: list[tuple[str, list[float]]] = [(key or "(unknown)", []) for key in top]
    other: list[float] = []
    for _, part in columns_of:
        hours = {row.key: row.allocated_gpu_hours for row in part.rows}
        for (_, values), key in zip(series, top, strict=True):
            values.append(hours.get(key, 0.0))
        other.append(max(0.0, part.total.allocated_gpu_hours - sum(hours.get(k, 0.0) for k in top)))
    if any(value > 1e-9 for value in other):
        series.append(("other", other))
    width = column_width(since, until)
    names = {3_600: "hour", 6 * 3_600: "6 hours", 86_400: "day", 7 * 86_400: "week"}
    return UsageChart(
        chart=columns([_label(start, width) for start, _ in columns_of], series, unit="GPU-hours"),
        column=names.get(width, "30 days"),
        legend=tuple((name, f"col-{i % 8}") for i, (name, _) in enumerate(series)),
    )
