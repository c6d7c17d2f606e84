"""What the dashboard reads from the accounting store: a workload's history and usage reports.

The only I/O of the pages besides the driver's status. The store is optional (accounting off:
`Services.accounting` is None) and may be unreachable (`AccountingUnavailable`): a workload
page then says so where its history would be, and the usage page answers 404 or 503 in words.
Rights are the API's (`GET /api/v1/usage`): a report by queue needs the right to list Queues and
counts every namespace (queue totals are visible in aggregate, as the queues' status shows
them); by namespace or user it counts the namespaces where the viewer may list pods (all of
them for a viewer who may list pods everywhere); naming a namespace needs `list pods` there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from scheduler_service.accounting import (
    AccountingStore,
    AccountingUnavailable,
    Grouping,
    PeriodError,
    UsageReport,
    WorkloadHistory,
    parse_period,
)
from scheduler_service.api import Permission, Services
from scheduler_service.dashboard._access import Scope
from scheduler_service.dashboard._errors import PageError
from scheduler_service.dashboard._usage import (
    UsageChart,
    UsagePage,
    build_usage,
    build_usage_chart,
    slices,
)

__all__ = ["UsageQuery", "read_history", "usage_chart", "usage_page", "usage_report"]

_OFF = (
    "no accounting records are kept here (the service keeps them unless accounting is off in "
    "its settings, docs/usage-report.md; the local runner keeps none: `aistack explain RUN "
    "--local` has each step's history)"
)


def read_history(
    services: Services, namespace: str, name: str
) -> tuple[WorkloadHistory | None, str]:
    """The recorded history of workload `name` in `namespace`, or None and why there is none."""
    store = services.accounting
    if store is None:
        return None, f"No recorded history: {_OFF}."
    try:
        return store.history(namespace, name), ""
    except AccountingUnavailable as exc:
        return None, f"The recorded history cannot be read right now: {exc}."


def _store(services: Services) -> AccountingStore:
    store = services.accounting
    if store is None:
        raise PageError(404, "No usage records", f"No usage report: {_OFF}.")
    return store


def _grouping(by: str) -> Grouping:
    try:
        return Grouping(by)
    except ValueError:
        raise PageError(
            422,
            "A report has no such grouping",
            f"by={by!r}: a report is by {', '.join(g.value for g in Grouping)}.",
        ) from None


def _namespaces(
    store: AccountingStore, scope: Scope, since: float, until: float, now: float
) -> tuple[str, ...] | None:
    """The namespaces the viewer's report counts: None (all) if they may list pods anywhere."""
    if scope.can(Permission("list", "pods")):
        return None
    found = store.namespaces(since=since, until=until, now=now)
    return tuple(ns for ns in found if scope.sees_namespace(ns))


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """What the URL of a usage page, chart or CSV asks: a period, a grouping, a namespace."""

    since: str = "30d"
    until: str | None = None
    by: str = "queue"
    namespace: str | None = None


@dataclass(frozen=True, slots=True)
class _Resolved:
    """A `UsageQuery` read and checked against the viewer's rights."""

    since: float
    until: float
    by: Grouping
    namespaces: tuple[str, ...] | None
    """The namespaces counted (None: all)."""


def _resolve(store: AccountingStore, scope: Scope, now: float, query: UsageQuery) -> _Resolved:
    """The period, grouping and namespaces of `query`, or the `PageError` that says why not."""
    grouping = _grouping(query.by)
    try:
        start, end = parse_period(query.since, query.until, now)
    except PeriodError as exc:
        raise PageError(422, "The period cannot be read", f"{exc}.") from None
    namespaces: tuple[str, ...] | None
    if query.namespace is not None:
        scope.require_to_see(
            Permission("list", "pods", namespace=query.namespace),
            f"the usage of namespace {query.namespace}",
        )
        namespaces = (query.namespace,)
    elif grouping is Grouping.QUEUE:
        scope.require_queues()
        namespaces = None
    else:
        namespaces = _namespaces(store, scope, start, end, now)
    return _Resolved(start, end, grouping, namespaces)


def _unreadable(exc: AccountingUnavailable) -> PageError:
    return PageError(503, "The usage records cannot be read right now", f"{exc}.")


def usage_report(
    services: Services, scope: Scope, now: float, query: UsageQuery
) -> tuple[UsageReport, tuple[str, ...] | None]:
    """The viewer's report for `query`, and the namespaces it counts (None: all)."""
    store = _store(services)
    try:
        asked = _resolve(store, scope, now, query)
        report = store.usage(
            since=asked.since, until=asked.until, by=asked.by, namespaces=asked.namespaces, now=now
        )
    except AccountingUnavailable as exc:
        raise _unreadable(exc) from exc
    return report, asked.namespaces


def usage_page(services: Services, scope: Scope, now: float, query: UsageQuery) -> UsagePage:
    """The usage page: the period's report (its chart is `usage_chart`)."""
    report, namespaces = usage_report(services, scope, now, query)
    page = build_usage(report, namespaces)
    return replace(
        page,
        since_text=query.since,
        until_text=query.until or "",
        namespace=query.namespace or "",
    )


def usage_chart(services: Services, scope: Scope, now: float, query: UsageQuery) -> UsageChart:
    """The usage page's chart: one report per column of the period, from one scan."""
    store = _store(services)
    try:
        asked = _resolve(store, scope, now, query)
        periods = slices(asked.since, asked.until)
        edges = [since for since, _ in periods] + [periods[-1][1]]
        columns = store.usage_columns(
            edges=edges, by=asked.by, namespaces=asked.namespaces, now=now
        )
    except AccountingUnavailable as exc:
        raise _unreadable(exc) from exc
    return build_usage_chart(asked.since, asked.until, [(c.since, c) for c in columns])
