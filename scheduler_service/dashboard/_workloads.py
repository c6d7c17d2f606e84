"""The workload list: filtered by namespace, queue, state and workflow, one page at a time.

A viewer sees the workloads of the namespaces where RBAC lets them list pods, as the API's
`GET /api/v1/workloads` does: naming another namespace in the filter is refused, and otherwise
such namespaces are left out (the page says that some were).
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_service.api import ClusterView, Permission
from scheduler_service.core import Workload, WorkloadState, queue_place
from scheduler_service.dashboard._access import Scope
from scheduler_service.dashboard._format import memory
from scheduler_service.dashboard._index import derived
from scheduler_service.dashboard._paging import Pager

__all__ = [
    "WorkloadFilters",
    "WorkloadRow",
    "WorkloadsPage",
    "build_workloads",
    "request_text",
    "short_name",
    "workload_row",
]


def short_name(name: str, namespace: str) -> str:
    """A workload's name inside its namespace (the cluster driver prefixes `<namespace>/`)."""
    return name.removeprefix(f"{namespace}/") if namespace else name


def request_text(workload: Workload) -> str:
    """What the workload asks for: `2 pods x 4 GPUs`, `1 pod x slice 20 GiB, 30 %`."""
    request = workload.request
    pods = f"{workload.pods} pod{'s' if workload.pods != 1 else ''}"
    if request.is_slice:
        return f"{pods} x slice {memory(request.gpu_memory_mib)}, {request.gpu_compute_percent} %"
    if request.gpus:
        return f"{pods} x {request.gpus} GPU{'s' if request.gpus != 1 else ''}"
    return f"{pods}, no GPU"


@dataclass(frozen=True, slots=True)
class WorkloadRow:
    """One workload as a line of a table."""

    name: str
    """The scheduler's name (`<namespace>/<gang or pod>`)."""
    short_name: str
    """The name inside its namespace: what its page's URL carries."""
    namespace: str
    queue: str
    kind: str
    state: str
    preemptible: bool
    request: str
    workflow: str
    """The Argo Workflow whose step it is, or ""."""
    since_seconds: float
    """How long it has waited (pending) or run (running, evicting)."""
    place: str
    """For pending work, its place in its queue (`2nd of 5 waiting`), else ""."""
    reason_code: str
    reason: str


def workload_row(view: ClusterView, workload: Workload, now: float) -> WorkloadRow:
    """`workload` as a table row, its durations counted up to `now`."""
    pods = view.pods_of(workload.name)
    reason = view.reasons.get(workload.name)
    pending = workload.state is WorkloadState.PENDING
    position = derived(view).positions.get(workload.name)
    since = workload.submitted_at if pending or workload.started_at is None else workload.started_at
    return WorkloadRow(
        name=workload.name,
        short_name=short_name(workload.name, pods.namespace),
        namespace=pods.namespace,
        queue=workload.queue,
        kind=workload.kind.value,
        state=workload.state.value,
        preemptible=workload.is_preemptible,
        request=request_text(workload),
        workflow=pods.workflow,
        since_seconds=max(0.0, now - since),
        place=queue_place(*position) if pending and position else "",
        reason_code=reason.code if pending and reason is not None else "",
        reason=reason.message if pending and reason is not None else "",
    )


@dataclass(frozen=True, slots=True)
class WorkloadFilters:
    """The list's filters, as the URL's query carries them (None: no filter)."""

    namespace: str | None = None
    queue: str | None = None
    state: WorkloadState | None = None
    workflow: str | None = None

    def matches(self, workload: Workload, namespace: str, workflow: str) -> bool:
        """Whether `workload` (in `namespace`, a step of `workflow`) passes every filter."""
        return (
            (self.queue is None or workload.queue == self.queue)
            and (self.state is None or workload.state is self.state)
            and (self.namespace is None or namespace == self.namespace)
            and (self.workflow is None or workflow == self.workflow)
        )


@dataclass(frozen=True, slots=True)
class WorkloadsPage:
    """One page of the filtered list, and what the filter form offers."""

    rows: tuple[WorkloadRow, ...]
    pager: Pager
    filters: WorkloadFilters
    namespaces: tuple[str, ...]
    """The namespaces the viewer may see that have workloads (the filter's choices)."""
    queues: tuple[str, ...]
    """Leaf queues (the filter's choices)."""
    hidden: bool
    """Some namespaces with workloads are not shown: the viewer may not list pods there."""


def build_workloads(  # noqa: PLR0917 - all are the page's inputs, named at every call
    view: ClusterView, scope: Scope, now: float, filters: WorkloadFilters, page: int, size: int
) -> WorkloadsPage:
    """Page `page` (`size` rows) of the workloads that pass `filters` and `scope` may see.

    Sorted by namespace and name, as the API lists them. Naming a namespace the viewer may not
    list pods in is a 403 `PageError`, as in the API.
    """
    if filters.namespace is not None:
        scope.require_to_see(
            Permission("list", "pods", namespace=filters.namespace),
            f"the workloads of namespace {filters.namespace}",
        )
    index = derived(view)
    chosen: list[Workload] = []
    hidden = False
    for workload in index.ordered:
        pods = view.pods_of(workload.name)
        if not filters.matches(workload, pods.namespace, pods.workflow):
            continue
        if scope.sees_namespace(pods.namespace):
            chosen.append(workload)
        else:
            hidden = True
    pager = Pager.of(page, size, len(chosen))
    return WorkloadsPage(
        rows=tuple(workload_row(view, w, now) for w in chosen[pager.start : pager.stop]),
        pager=pager,
        filters=filters,
        namespaces=tuple(ns for ns in index.namespaces if scope.sees_namespace(ns)),
        queues=tuple(sorted(index.leaves)),
        hidden=hidden,
    )
