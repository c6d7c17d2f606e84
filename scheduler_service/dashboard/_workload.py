"""One workload's page: the conclusion first (why it waits, with numbers), then its pods and GPUs.

The conclusion is the API's explanation (`ClusterView.explain`: the words of the pod's message,
with the exact place in line), followed by the numbers behind it: place in the queue, the
queue's quota, use and borrowing in the pools that matter, what the reason names, and how long
the workload has waited. Reached from the workload list, from the GPU map, and from the Argo UI
(a step's pod link lands on `/ui/pods/<namespace>/<pod>`).
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_service.accounting import WorkloadHistory
from scheduler_service.api import ClusterView, Permission, ReasonView
from scheduler_service.core import Workload, WorkloadState
from scheduler_service.dashboard._access import Scope
from scheduler_service.dashboard._errors import PageError
from scheduler_service.dashboard._format import clock, duration, gpus, memory
from scheduler_service.dashboard._queues import QueuePoolRow, pool_row
from scheduler_service.dashboard._workloads import WorkloadRow, workload_row

__all__ = [
    "Fact",
    "HistoryLine",
    "PodRow",
    "WorkloadPage",
    "build_finished",
    "build_workload",
    "find_pod_workload",
    "history_lines",
    "not_known",
]


@dataclass(frozen=True, slots=True)
class Fact:
    """One number of the conclusion, with what it is."""

    label: str
    value: str


@dataclass(frozen=True, slots=True)
class PodRow:
    """Where one pod of the workload runs (node and GPUs), or that it waits."""

    pod: str
    node: str
    gpu_indexes: str
    gpus: tuple[str, ...]
    share: str
    """For a slice, its memory and compute; for whole GPUs, ""."""


@dataclass(frozen=True, slots=True)
class HistoryLine:
    """One thing that happened to an attempt of the workload (the accounting store's event)."""

    at: float
    event: str
    attempt: int
    workload: str
    cause: str
    message: str


def history_lines(history: WorkloadHistory | None) -> tuple[HistoryLine, ...]:
    """The events of `history`, oldest first (none without a history)."""
    if history is None:
        return ()
    return tuple(
        HistoryLine(e.at, e.kind.value, e.attempt, e.workload, e.cause, e.message)
        for e in history.events
    )


@dataclass(frozen=True, slots=True)
class WorkloadPage:
    """Everything the workload page shows, conclusion first.

    `row` is None for a workload the scheduler no longer has (finished, or deleted), whose page
    shows only its recorded history.
    """

    row: WorkloadRow | None
    summary: str
    facts: tuple[Fact, ...]
    pools: tuple[QueuePoolRow, ...]
    reason: ReasonView | None
    details: tuple[Fact, ...]
    pods: tuple[PodRow, ...]
    argo_url: str
    """The workflow in the Argo UI, or "" (no workflow, or no Argo UI address configured)."""
    submitted_at: float | None
    started_at: float | None
    history: tuple[HistoryLine, ...] = ()
    history_note: str = ""
    """Why there is no recorded history to show ("" when there is)."""


def find_pod_workload(view: ClusterView, scope: Scope, namespace: str, pod: str) -> Workload:
    """The workload `pod` belongs to; 403 without `get pods` there, 404 if not known."""
    _require_get(scope, namespace)
    owner = view.by_pod.get((namespace, pod))
    workload = None if owner is None else view.workloads.get(owner)
    if workload is None:
        raise PageError(
            404,
            f"Pod {pod} is not waiting or running under the scheduler",
            f"Pod {pod!r} in namespace {namespace!r} is not known to the scheduler now: it has "
            "finished or was deleted, or it is not managed (a managed pod has the label "
            f"aistack.io/queue; check with `kubectl get pod {pod} -n {namespace} "
            "--show-labels`).",
        )
    return workload


def _require_get(scope: Scope, namespace: str) -> None:
    scope.require_to_see(
        Permission("get", "pods", namespace=namespace), f"the workloads of namespace {namespace}"
    )


def _facts(row: WorkloadRow, workload: Workload, position: int | None, pending: int) -> list[Fact]:
    facts = []
    if workload.state is WorkloadState.PENDING:
        if position is not None:
            facts.append(
                Fact("Place in line", f"{row.place} in queue {row.queue}")
                if row.place
                else Fact("Place in line", f"{position} of {pending} in queue {row.queue}")
            )
        facts.append(
            Fact("Waited", f"{duration(row.since_seconds)} (since {clock(workload.submitted_at)})")
        )
        if row.reason:
            facts.append(Fact("Waits for", row.reason))
    else:
        verb = "Running" if workload.state is WorkloadState.RUNNING else "Being evicted after"
        facts.append(Fact(verb, f"{duration(row.since_seconds)}"))
        facts.append(Fact("Submitted", clock(workload.submitted_at)))
    facts.append(Fact("Asks for", row.request))
    facts.append(
        Fact(
            "Kind",
            f"{row.kind}, {'preemptible' if row.preemptible else 'not preemptible'}, "
            f"priority {workload.priority}",
        )
    )
    return facts


def _details(reason: ReasonView | None) -> list[Fact]:
    if reason is None:
        return []
    facts = []
    for key, value in reason.details.items():
        if key == "detail":
            continue
        label = key.removesuffix("_gpus").replace("_", " ")
        if isinstance(value, float) and key.endswith("_gpus"):
            text = f"{gpus(value)} GPUs"
        elif isinstance(value, list):
            text = ", ".join(value) or "none"
        else:
            text = str(value)
        facts.append(Fact(label, text))
    return facts


def not_known(namespace: str, name: str) -> PageError:
    """The 404 of a workload the scheduler does not have and nothing recorded."""
    return PageError(
        404,
        f"No workload {name} in namespace {namespace}",
        f"No workload or pod named {name!r} in namespace {namespace!r} waits or runs under "
        "the scheduler now, and none is recorded: it may have finished, or the name is "
        "misspelt. The workload list shows what is known.",
    )


def build_finished(
    scope: Scope, namespace: str, name: str, history: WorkloadHistory, argo_ui_url: str = ""
) -> WorkloadPage:
    """The page of a workload the scheduler no longer has: what the accounting store recorded.

    Needs `get pods` in the namespace; a 404 `PageError` when nothing is recorded either.
    """
    _require_get(scope, namespace)
    if not history.records:
        raise not_known(namespace, name)
    last = history.records[-1]
    how = last.end_reason.value if last.end_reason is not None else "ended"
    if last.end_cause:
        how = f"{how}: {last.end_cause}"
    ended = (
        f"its last attempt, {last.workload}, ended at {clock(last.ended_at)} ({how})"
        if last.ended_at is not None
        else f"its last attempt, {last.workload}, is not known to the scheduler now"
    )
    facts = [Fact("Queue", last.queue), Fact("Attempts", str(len(history.records)))]
    if last.admitted_at is not None:
        facts.append(Fact("GPUs held", f"{gpus(last.gpus)} in pool {last.pool or '?'}"))
    workflow = last.workflow
    return WorkloadPage(
        row=None,
        summary=f"{name} does not wait or run under the scheduler now; {ended}",
        facts=tuple(facts),
        pools=(),
        reason=None,
        details=(),
        pods=(),
        argo_url=f"{argo_ui_url}/workflows/{namespace}/{workflow}"
        if argo_ui_url and workflow
        else "",
        submitted_at=last.submitted_at,
        started_at=last.admitted_at,
        history=history_lines(history),
    )


def build_workload(  # noqa: PLR0917 - all are the page's inputs, named at every call
    view: ClusterView,
    scope: Scope,
    now: float,
    namespace: str,
    name: str,
    argo_ui_url: str = "",
) -> WorkloadPage:
    """The page of workload `name` (or of the workload of pod `name`) in `namespace`.

    Needs `get pods` in the namespace (as the API's explain); a 404 `PageError` when the
    scheduler does not know it now. The history is added by the caller, which reads it.
    """
    _require_get(scope, namespace)
    workload = view.find_workload(namespace, name)
    if workload is None:
        raise not_known(namespace, name)
    pods = view.pods_of(workload.name)
    explanation = view.explain(namespace, pods.pods[0] if pods.pods else name, workload)
    row = workload_row(view, workload, now)
    shown = explanation.workload
    scale = {
        e.pool: max(e.quota_gpus, e.limit_gpus or 0.0, e.fair_share_gpus, e.demand_gpus)
        for e in explanation.queue_pools
    }
    rows = tuple(pool_row(e, max(scale[e.pool], e.allocated_gpus)) for e in explanation.queue_pools)
    pod_rows = tuple(
        PodRow(
            pod=p.pod,
            node=p.node,
            gpu_indexes=", ".join(str(i) for i in p.gpu_indexes),
            gpus=tuple(p.gpus),
            share=""
            if p.slice is None
            else f"{memory(p.slice.memory_mib)}, {p.slice.compute_percent} % compute",
        )
        for p in shown.allocation or ()
    )
    if not pod_rows:
        pod_rows = tuple(
            PodRow(pod=p, node="", gpu_indexes="", gpus=(), share="") for p in shown.pods
        )
    argo_url = (
        f"{argo_ui_url}/workflows/{namespace}/{row.workflow}"
        if argo_ui_url and row.workflow
        else ""
    )
    return WorkloadPage(
        row=row,
        summary=explanation.summary,
        facts=tuple(_facts(row, workload, explanation.queue_position, explanation.queue_pending)),
        pools=rows,
        reason=shown.reason,
        details=tuple(_details(shown.reason)),
        pods=pod_rows,
        argo_url=argo_url,
        submitted_at=workload.submitted_at,
        started_at=workload.started_at,
    )
