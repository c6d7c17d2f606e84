"""Accounting routes: usage reports (GPU-hours per queue, namespace or user) and workload histories.

They read the `AccountingStore` (scheduler_service.accounting) that `create_app` was given, and
answer 404 when it was given none. Rights follow the Kubernetes objects behind each answer, as
in `_routes`: queue totals need `list queues.aistack.io` (what `GET /api/v1/queues` shows
anyway); rows by namespace or user count only the namespaces where the viewer may `list pods`;
a workload's history needs `get pods` in its namespace.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from scheduler_service.accounting import (
    AccountingStore,
    AccountingUnavailable,
    Grouping,
    PeriodError,
    UsageReport,
    UsageRow,
    WorkloadHistory,
    format_instant,
    parse_period,
)
from scheduler_service.api._access import Access
from scheduler_service.api._contract import Permission
from scheduler_service.api._deps import AccessDep, ServicesDep, ViewDep
from scheduler_service.api._errors import ApiError, error_responses

__all__ = [
    "HistoryEventView",
    "UsageReportView",
    "UsageRowView",
    "WorkloadHistoryView",
    "WorkloadRecordView",
    "router",
]

router = APIRouter(prefix="/api/v1", responses=error_responses(401, 403, 503))

# -- response models ----------------------------------------------------------------------------


class UsageRowView(BaseModel):
    """One queue's, namespace's or user's GPU-hours in the period."""

    key: str = Field(description='The queue, namespace or user ("" for an unknown user).')
    allocated_gpu_hours: float = Field(
        description="GPUs held times hours held, clipped to the period (slices as charged)."
    )
    used_gpu_hours: float | None = Field(
        description="The part measured as used; null where nothing measured it."
    )
    workloads: int = Field(description="Workload attempts that held GPUs in the period.")

    @classmethod
    def of(cls, row: UsageRow) -> UsageRowView:
        """The view of a report row."""
        return cls(
            key=row.key,
            allocated_gpu_hours=row.allocated_gpu_hours,
            used_gpu_hours=row.used_gpu_hours,
            workloads=row.workloads,
        )


class UsageReportView(BaseModel):
    """GPU-hours per key over [since, until), largest first, and their total."""

    since: float = Field(description="Start of the period (Unix seconds).")
    until: float = Field(description="End of the period (Unix seconds, not included).")
    by: Grouping
    rows: list[UsageRowView]
    total: UsageRowView = Field(description='Every row together, key "(total)".')
    truncated: bool = Field(description="More keys than a report lists; the smallest are left out.")


class WorkloadRecordView(BaseModel):
    """One attempt of a workload: what it asked for, what it held, from when to when."""

    namespace: str
    workload: str
    submitted_at: float
    queue: str
    user: str
    workflow: str
    step: str = Field(description='The Argo step ("" for pods Argo did not make).')
    attempt: int = Field(description="0 for the step's first attempt, n for its n-th retry.")
    kind: str
    pods: int
    gpus: float = Field(description="GPUs held (slices as charged); asked for, if never admitted.")
    pool: str
    gpu_model: str
    admitted_at: float | None
    ended_at: float | None
    end_reason: str | None = Field(description="finished, evicted or deleted; null while open.")
    end_cause: str
    end_message: str


class HistoryEventView(BaseModel):
    """One thing that happened to one attempt."""

    at: float
    kind: str = Field(description="submitted, retried, admitted, evicted, finished or deleted.")
    workload: str
    attempt: int
    message: str
    cause: str = Field(description="For an eviction: Reclaimed, Preempted, ... ('' otherwise).")


class WorkloadHistoryView(BaseModel):
    """A workload's attempts and what happened to them, oldest first."""

    namespace: str
    workload: str
    records: list[WorkloadRecordView]
    events: list[HistoryEventView]
    truncated: bool


def _history_view(history: WorkloadHistory) -> WorkloadHistoryView:
    return WorkloadHistoryView(
        namespace=history.namespace,
        workload=history.workload,
        records=[
            WorkloadRecordView(
                namespace=r.namespace,
                workload=r.workload,
                submitted_at=r.submitted_at,
                queue=r.queue,
                user=r.user,
                workflow=r.workflow,
                step=r.step,
                attempt=r.attempt,
                kind=r.kind,
                pods=r.pods,
                gpus=r.gpus,
                pool=r.pool,
                gpu_model=r.gpu_model,
                admitted_at=r.admitted_at,
                ended_at=r.ended_at,
                end_reason=None if r.end_reason is None else r.end_reason.value,
                end_cause=r.end_cause,
                end_message=r.end_message,
            )
            for r in history.records
        ],
        events=[
            HistoryEventView(
                at=e.at,
                kind=e.kind.value,
                workload=e.workload,
                attempt=e.attempt,
                message=e.message,
                cause=e.cause,
            )
            for e in history.events
        ],
        truncated=history.truncated,
    )


# -- dependencies -------------------------------------------------------------------------------


def get_accounting(services: ServicesDep) -> AccountingStore:
    """The accounting store; 503 when the service keeps none (it cannot answer, by settings)."""
    if services.accounting is None:
        raise ApiError(
            503,
            "this service keeps no accounting records (accounting.enabled is false in its "
            "settings); ask the cluster administrators to turn it on",
        )
    return services.accounting


AccountingDep = Annotated[AccountingStore, Depends(get_accounting)]


def _unavailable(error: AccountingUnavailable) -> ApiError:
    return ApiError(
        503,
        f"the accounting store cannot be read right now ({error}); retry in a moment, and if it "
        "persists ask the cluster administrators to look at the database",
    )


def _allowed_namespaces(
    access: Access, store: AccountingStore, since: float, until: float, now: float
) -> set[str] | None:
    """The namespaces whose rows the viewer may see (None: all: may list pods cluster-wide)."""
    if access.can(Permission("list", "pods")):  # cluster-wide: every namespace
        return None
    return {
        namespace
        for namespace in store.namespaces(since=since, until=until, now=now)
        if access.can(Permission("list", "pods", namespace=namespace))
    }


# -- routes -------------------------------------------------------------------------------------

_TIME_HELP = (
    "A time before now (30d, 12h, 90m, 2w), `now`, a date (2026-05-01, UTC), an RFC 3339 time "
    "or Unix seconds."
)


@router.get(
    "/usage",
    tags=["accounting"],
    summary="GPU usage report",
    response_model=UsageReportView,
    responses={
        **error_responses(422),
        200: {
            "description": "The report, as JSON or (format=csv) as CSV.",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
    },
)
def usage(
    access: AccessDep,
    store: AccountingDep,
    *,
    since: Annotated[
        str, Query(description=f"Start of the period. {_TIME_HELP}", max_length=40)
    ] = "30d",
    until: Annotated[
        str | None,
        Query(description=f"End of the period (default: now). {_TIME_HELP}", max_length=40),
    ] = None,
    by: Annotated[Grouping, Query(description="One row per queue, namespace or user.")] = (
        Grouping.QUEUE
    ),
    namespace: Annotated[
        str | None, Query(description="Only workloads of this namespace.", max_length=63)
    ] = None,
    output: Annotated[
        Literal["json", "csv"], Query(alias="format", description="json, or csv for a file.")
    ] = "json",
) -> Any:
    """GPU-hours allocated (and used, where measured) per queue, namespace or user.

    Each workload attempt counts the GPUs it held times the part of its allocation inside the
    period (docs/usage-report.md). By queue needs `list queues.aistack.io` and counts every
    namespace (as the queues' status does); by namespace or user counts the namespaces where
    the viewer may `list pods`. Naming a `namespace` needs `list pods` there. A period is
    at most 400 days (`MAX_PERIOD_DAYS`).
    """
    now = time.time()
    try:
        start, end = parse_period(since, until, now)
    except PeriodError as error:
        raise ApiError(
            422, f"{error}; e.g. since=30d, or since=2026-05-01&until=2026-06-01"
        ) from None
    try:
        if namespace is not None:
            access.require(Permission("list", "pods", namespace=namespace))
            allowed: set[str] | None = {namespace}
        elif by is Grouping.QUEUE:
            access.require(Permission("list", "queues", group="aistack.io"))
            allowed = None
        else:
            allowed = _allowed_namespaces(access, store, start, end, now)
        report = store.usage(since=start, until=end, by=by, namespaces=allowed, now=now)
    except AccountingUnavailable as error:
        raise _unavailable(error) from error
    if output == "csv":
        name = f"usage-by-{by.value}-{format_instant(start)}-{format_instant(end)}.csv"
        return Response(
            report.to_csv(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name.replace(":", "")}"'},
        )
    return _report_view(report)


def _report_view(report: UsageReport) -> UsageReportView:
    return UsageReportView(
        since=report.since,
        until=report.until,
        by=report.by,
        rows=[UsageRowView.of(row) for row in report.rows],
        total=UsageRowView.of(report.total),
        truncated=report.truncated,
    )


@router.get(
    "/workloads/{namespace}/{name}/history",
    tags=["accounting"],
    summary="A workload's history",
    responses=error_responses(404, 422),
)
def workload_history(
    namespace: str, name: str, view: ViewDep, access: AccessDep, store: AccountingDep
) -> WorkloadHistoryView:
    """What happened to a workload: submitted, admitted, evicted (and why), retried, ended.

    `{name}` is the workload's name or, while it is known to the scheduler, the name of any of
    its pods. The attempts of the same Argo step are included, so a retry's history shows why
    the attempt before it ended. Needs `get pods` in the namespace.
    """
    access.require(Permission("get", "pods", namespace=namespace))
    live = view.find_workload(namespace, name)
    workload = live.name.removeprefix(f"{namespace}/") if live is not None else name
    try:
        history = store.history(namespace, workload)
    except AccountingUnavailable as error:
        raise _unavailable(error) from error
    if not history.records:
        raise ApiError(
            404,
            f"no accounting record of a workload named {workload!r} in namespace {namespace!r}; "
            "records start when the scheduler first sees a workload (a pod with the label "
            "aistack.io/queue)",
        )
    return _history_view(history)
