"""From a `ClusterStatus` to the API's response models: pure translation, no HTTP, no RBAC.

`ClusterView` indexes one status once (workloads by name, pods to workloads, reasons, shares),
so that a request costs one pass over the status, not one per item it shows.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from scheduler_service.api._contract import ClusterStatus, WorkloadPods
from scheduler_service.api._models import (
    Explanation,
    GpuSliceView,
    GpuUse,
    GpuView,
    NodeView,
    PodPlacement,
    QueuePoolView,
    QueueView,
    ReasonView,
    RequestView,
    WorkloadCounts,
    WorkloadView,
)
from scheduler_service.core import (
    MILLI_GPU,
    Allocation,
    Node,
    Queue,
    QueueShare,
    Reason,
    Workload,
    WorkloadState,
    pending_order,
    queue_place,
    waiting_summary,
)

__all__ = ["ClusterView", "reason_view"]

_NO_PODS = WorkloadPods(namespace="", pods=())


def _gpus(milli: int) -> float:
    return milli / MILLI_GPU


def reason_view(reason: Reason) -> ReasonView:
    """The reason's code, type and message, and its fields as numbers (milli-GPUs as GPUs)."""
    details: dict[str, str | int | float | list[str]] = {}
    for item in dataclasses.fields(reason):
        value = getattr(reason, item.name)
        if item.name.endswith("_milli") and isinstance(value, int):
            details[item.name.removesuffix("_milli") + "_gpus"] = _gpus(value)
        elif isinstance(value, tuple):
            details[item.name] = [str(v) for v in value]
        else:
            details[item.name] = value
    return ReasonView(
        code=reason.code, type=type(reason).__name__, message=reason.message, details=details
    )


class ClusterView:
    """One `ClusterStatus`, indexed for the routes. Immutable once built."""

    def __init__(self, status: ClusterStatus) -> None:
        """Index `status`: one pass over its workloads, queues, nodes and plan."""
        self.status = status
        snapshot = status.snapshot
        self.workloads: Mapping[str, Workload] = {w.name: w for w in snapshot.workloads}
        self.queues: Mapping[str, Queue] = snapshot.queue_map()
        self.nodes: Mapping[str, Node] = {n.name: n for n in snapshot.nodes}
        self.reasons: Mapping[str, Reason] = {p.workload: p.reason for p in status.plan.pending}
        self.admitted: Mapping[str, Allocation] = {
            a.workload: a.allocation for a in status.plan.admissions
        }
        self.by_pod: Mapping[tuple[str, str], str] = {
            (pods.namespace, pod): name for name, pods in status.pods.items() for pod in pods.pods
        }
        shares: dict[str, list[QueueShare]] = defaultdict(list)
        for share in status.plan.shares:
            shares[share.queue].append(share)
        self._shares = shares
        children: dict[str, list[str]] = defaultdict(list)
        for queue in snapshot.queues:
            if queue.parent is not None:
                children[queue.parent].append(queue.name)
        self._children = children
        # The core's order inside a queue (DESIGN.md, phase 2), as the pods' messages say it.
        self._pending_order = pending_order(snapshot.workloads)

    def __repr__(self) -> str:
        return (
            f"<ClusterView nodes={len(self.nodes)} queues={len(self.queues)} "
            f"workloads={len(self.workloads)} pending={len(self.reasons)}>"
        )

    def pods_of(self, workload: str) -> WorkloadPods:
        """The namespace and pods of `workload` (empty when the driver did not report them)."""
        return self.status.pods.get(workload, _NO_PODS)

    # -- queues -------------------------------------------------------------------------

    def queue_pools(self, queue: Queue, pools: Iterable[str] | None = None) -> list[QueuePoolView]:
        """The queue's standing in `pools` (default: every pool the plan or the queue names)."""
        shares = {share.pool: share for share in self._shares.get(queue.name, ())}
        names = (
            sorted(set(shares) | {entry.pool for entry in queue.quotas})
            if pools is None
            else list(pools)
        )
        views = []
        for pool in names:
            entry = queue.quota_in(pool)
            share = shares.get(pool)
            views.append(
                QueuePoolView(
                    pool=pool,
                    quota_gpus=entry.quota,
                    limit_gpus=entry.limit,
                    over_quota_weight=entry.over_quota_weight,
                    fair_share_gpus=_gpus(share.fair_share_milli) if share else 0.0,
                    allocated_gpus=_gpus(share.allocated_milli) if share else 0.0,
                    demand_gpus=_gpus(share.demand_milli) if share else 0.0,
                )
            )
        return views

    def _subtree(self, name: str) -> list[str]:
        names, stack = [], [name]
        while stack:
            current = stack.pop()
            names.append(current)
            stack.extend(self._children.get(current, ()))
        return names

    def queue_view(self, queue: Queue, counts: Mapping[str, Mapping[str, int]]) -> QueueView:
        """One queue, with `counts` (workloads by queue and state) summed over its subtree."""
        totals = dict.fromkeys(WorkloadState, 0)
        for name in self._subtree(queue.name):
            for state, count in counts.get(name, {}).items():
                totals[WorkloadState(state)] += count
        return QueueView(
            name=queue.name,
            parent=queue.parent,
            children=sorted(self._children.get(queue.name, ())),
            priority=queue.priority,
            reclaim_min_runtime_seconds=queue.reclaim_min_runtime_seconds,
            preempt_min_runtime_seconds=queue.preempt_min_runtime_seconds,
            pools=self.queue_pools(queue),
            workloads=WorkloadCounts(
                pending=totals[WorkloadState.PENDING],
                running=totals[WorkloadState.RUNNING],
                evicting=totals[WorkloadState.EVICTING],
            ),
        )

    def workload_counts(self) -> Mapping[str, Mapping[str, int]]:
        """Workloads by queue and state (only the queue each was submitted to)."""
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for workload in self.workloads.values():
            counts[workload.queue][workload.state] += 1
        return counts

    def queue_views(self) -> list[QueueView]:
        """Every queue, sorted by name."""
        counts = self.workload_counts()
        return [self.queue_view(self.queues[name], counts) for name in sorted(self.queues)]

    # -- workloads ----------------------------------------------------------------------

    def _placements(self, workload: Workload, pods: WorkloadPods) -> list[PodPlacement] | None:
        if workload.allocation is None:
            return None
        placements = []
        for i, pod in enumerate(workload.allocation):
            node = self.nodes.get(pod.node)
            index_of = {gpu.uuid: gpu.index for gpu in node.gpus} if node else {}
            placements.append(
                PodPlacement(
                    pod=pods.pods[i] if i < len(pods.pods) else "",
                    node=pod.node,
                    gpus=list(pod.gpus),
                    gpu_indexes=[index_of[uuid] for uuid in pod.gpus if uuid in index_of],
                    slice=None
                    if pod.slice is None
                    else GpuSliceView(
                        memory_mib=pod.slice.memory_mib, compute_percent=pod.slice.compute_percent
                    ),
                )
            )
        return placements

    def workload_view(self, workload: Workload) -> WorkloadView:
        """One workload, with its pods, allocation and (if pending) reason."""
        pods = self.pods_of(workload.name)
        request = workload.request
        reason = self.reasons.get(workload.name)
        return WorkloadView(
            name=workload.name,
            namespace=pods.namespace,
            pods=list(pods.pods),
            pod_count=workload.pods,
            queue=workload.queue,
            kind=workload.kind,
            preemptible=workload.is_preemptible,
            state=workload.state,
            request=RequestView(
                gpus=request.gpus,
                gpu_memory_mib=request.gpu_memory_mib,
                gpu_compute_percent=request.gpu_compute_percent,
                cpu_milli=request.cpu_milli,
                memory_mib=request.memory_mib,
            ),
            priority=workload.priority,
            submitted_at=workload.submitted_at,
            started_at=workload.started_at,
            allocation=self._placements(workload, pods),
            reason=reason_view(reason)
            if reason is not None and workload.state is WorkloadState.PENDING
            else None,
            workflow=pods.workflow or None,
        )

    def find_workload(self, namespace: str, name: str) -> Workload | None:
        """The workload in `namespace` called `name`, or the one with a pod called `name`.

        A workload's name may carry its namespace as a prefix (the cluster driver names them
        `<namespace>/<gang or pod>`), so `name` is tried with and without it.
        """
        for candidate in (name, f"{namespace}/{name}"):
            workload = self.workloads.get(candidate)
            if workload is not None and self.pods_of(candidate).namespace == namespace:
                return workload
        owner = self.by_pod.get((namespace, name))
        return None if owner is None else self.workloads.get(owner)

    # -- nodes --------------------------------------------------------------------------

    def _gpu_uses(self) -> Mapping[str, list[tuple[bool, GpuUse]]]:
        """Every placed pod's use of each GPU it holds, by GPU uuid (True: a slice)."""
        uses: dict[str, list[tuple[bool, GpuUse]]] = defaultdict(list)
        memory_of = {gpu.uuid: gpu.memory_mib for node in self.nodes.values() for gpu in node.gpus}
        for workload in self.workloads.values():
            pods = self.pods_of(workload.name)
            for i, pod in enumerate(workload.allocation or ()):
                for uuid in pod.gpus:
                    uses[uuid].append(
                        (
                            pod.slice is not None,
                            GpuUse(
                                workload=workload.name,
                                namespace=pods.namespace,
                                pod=pods.pods[i] if i < len(pods.pods) else "",
                                state=workload.state,
                                memory_mib=pod.slice.memory_mib
                                if pod.slice
                                else memory_of.get(uuid, 0),
                                compute_percent=pod.slice.compute_percent if pod.slice else 100,
                            ),
                        )
                    )
        return uses

    def node_views(self, names: Iterable[str] | None = None) -> list[NodeView]:
        """The nodes called `names` (default all, sorted by name) and what is on their GPUs."""
        uses = self._gpu_uses()
        views = []
        for name in sorted(self.nodes) if names is None else names:
            node = self.nodes[name]
            gpus = []
            for gpu in node.gpus:
                on_gpu = uses.get(gpu.uuid, [])
                whole = [use for is_slice, use in on_gpu if not is_slice]
                slices = [use for is_slice, use in on_gpu if is_slice]
                held = whole + slices
                gpus.append(
                    GpuView(
                        index=gpu.index,
                        uuid=gpu.uuid,
                        model=gpu.model,
                        memory_mib=gpu.memory_mib,
                        numa_node=gpu.numa_node,
                        whole=whole[0] if whole else None,
                        slices=slices,
                        free_memory_mib=max(0, gpu.memory_mib - sum(u.memory_mib for u in held)),
                        free_compute_percent=max(0, 100 - sum(u.compute_percent for u in held)),
                    )
                )
            views.append(
                NodeView(
                    name=node.name,
                    pool=node.pool,
                    ready=node.ready,
                    gpu_model=node.gpu_model,
                    topology=dict(node.topology),
                    gpus=gpus,
                    free_gpus=sum(1 for g in gpus if g.whole is None and not g.slices),
                )
            )
        return views

    # -- explain ------------------------------------------------------------------------

    def explain(self, namespace: str, pod: str, workload: Workload) -> Explanation:
        """Why `workload` (the one `pod` belongs to) is pending, running or evicting."""
        view = self.workload_view(workload)
        order = self._pending_order.get(workload.queue, [])
        position = order.index(workload.name) + 1 if workload.name in order else None
        queue = self.queues.get(workload.queue)
        pools = self._relevant_pools(workload, queue)
        return Explanation(
            pod=pod,
            namespace=namespace,
            workload=view,
            summary=self._summary(workload, view, position, len(order)),
            queue_pools=[] if queue is None else self.queue_pools(queue, pools),
            queue_position=position,
            queue_pending=len(order),
        )

    def _relevant_pools(self, workload: Workload, queue: Queue | None) -> list[str]:
        """The pools the workload may use, else those where its queue has a standing."""
        if workload.pools:
            return list(workload.pools)
        if workload.allocation:
            return sorted({self.nodes[p.node].pool for p in workload.allocation})
        if queue is None:
            return []
        return [view.pool for view in self.queue_pools(queue)]

    def _summary(
        self, workload: Workload, view: WorkloadView, position: int | None, pending: int
    ) -> str:
        if view.state is WorkloadState.PENDING:
            admitted = self.admitted.get(view.name)
            if admitted is not None:
                return (
                    f"admitted by the last cycle onto {_nodes(p.node for p in admitted)}; its "
                    "pods are being bound to their GPUs and released"
                )
            reason = self.reasons.get(view.name)
            if reason is None or position is None:
                return (
                    f"pending in queue {view.queue}: not yet considered by a scheduling cycle; "
                    "ask again in a few seconds"
                )
            # The words of the pod's message (the Argo UI), with the exact place in the queue.
            shares = {s.pool: s for s in self._shares.get(view.queue, ())}
            place = queue_place(position, pending)
            return f"pending in {waiting_summary(workload, place, shares, reason)}"
        where = _nodes(p.node for p in view.allocation or ())
        if view.state is WorkloadState.EVICTING:
            return (
                f"being evicted from {where}; it holds its GPUs until its pods are gone, then "
                f"waits in queue {view.queue} again"
            )
        since = (
            datetime.fromtimestamp(view.started_at, tz=UTC).isoformat()
            if view.started_at is not None
            else "an unknown time"
        )
        return f"running on {where} since {since}, in queue {view.queue}"


def _nodes(names: Iterable[str]) -> str:
    """`node n1` or `nodes n1, n2`."""
    unique = sorted(set(names))
    return f"node{'s' if len(unique) > 1 else ''} {', '.join(unique)}"
