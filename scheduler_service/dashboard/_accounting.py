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

from dataclasses import replace

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

__all__ = ["read_history", "usage_chart", "usage_page", "usage_report"]

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


def usage_report(  # noqa: PLR0917 - the report's inputs, as the URL gives them
    services: Services,
    scope: Scope,
    now: float,
    since: str,
    until: str | None,
    by: str,
    namespace: str | None = None,
) -> tuple[UsageReport, tuple[str, ...] | None]:
    """The viewer's report for the period, grouping and namespace the URL names.

    Also the namespaces it counts (None: all).
    """
    store = _store(services)
    grouping = _grouping(by)
    try:
        start, end = parse_period(since, until, now)
    except PeriodError as exc:
        raise PageError(422, "The period cannot be read", f"{exc}.") from None
    namespaces: tuple[str, ...] | None
    try:
        if namespace is not None:
            scope.require_to_see(
                Permission("list", "pods", namespace=namespace),
                f"the usage of namespace {namespace}",
            )
            namespaces = (namespace,)
        elif grouping is Grouping.QUEUE:
            scope.require_queues()
            namespaces = None
        else:
            namespaces = _namespaces(store, scope, start, end, now)
        report = store.usage(since=start, until=end, by=grouping, namespaces=namespaces, now=now)
    except AccountingUnavailable as exc:
        raise PageError(503, "The usage records cannot be read right now", f"{exc}.") from exc
    return report, namespaces


def usage_page(  # noqa: PLR0917 - the report's inputs, as the URL gives them
    services: Services,
    scope: Scope,
    now: float,
    since: str,
    until: str | None,
    by: str,
    namespace: str | None = None,
) -> UsagePage:
    """The usage page: the period's report (its chart is `usage_chart`)."""
    report, namespaces = usage_report(services, scope, now, since, until, by, namespace)
    page = build_usage(report, namespaces)
    return replace(page, since_text=since, until_text=until or "", namespace=namespace or "")


def usage_chart(  # noqa: PLR0917 - the report's inputs, as the URL gives them
    services: Services,
    scope: Scope,
    now: float,
    since: str,
    until: str | None,
    by: str,
    namespace: str | None = None,
) -> UsageChart:
    """The usage page's chart: the period's report, and one report per column of the chart."""
    report, namespaces = usage_report(services, scope, now, since, until, by, namespace)
    store = _store(services)
    periods = slices(report.since, report.until)
    edges = [since for since, _ in periods] + [periods[-1][1]]
    try:
        columns = store.usage_columns(edges=edges, by=report.by, namespaces=namespaces, now=now)
        parts = [(column.since, column) for column in columns]
    except AccountingUnavailable as exc:
        raise PageError(503, "The usage records cannot be read right now", f"{exc}.") from exc
    return build_usage_chart(report, parts)
