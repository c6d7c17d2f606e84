"""What every page reads of one status and no viewer changes: worked out once per status.

The driver publishes a new `ClusterStatus` after each cycle and the API indexes it once
(`ClusterView`); the dashboard adds its own aggregates here (pool totals, places in line, the
order of the workload list), kept beside that view for as long as it is current. They depend on
the status alone, so every viewer, page and live update of one cycle shares them.
"""

from __future__ import annotations

import threading
import weakref
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from scheduler_service.api import ClusterView
from scheduler_service.core import MILLI_GPU, Workload, WorkloadState, pending_order

__all__ = ["Derived", "PoolTotals", "derived"]


@dataclass(frozen=True, slots=True)
class PoolTotals:
    """One pool's GPUs after a cycle; GPU amounts in milli-GPUs, slices as their charge."""

    pool: str
    models: tuple[str, ...]
    nodes: int
    ready_nodes: int
    gpus: int
    allocated_milli: int
    """Held by running and evicting work (the `aistack_pool_allocated_gpus` metric)."""
    borrowed_milli: int
    """Held by leaf queues beyond their own quota in the pool."""
    waiting_milli: int
    """Asked for by leaf queues' pending work beyond what they hold (demand - allocated)."""
    quota_milli: int
    """Guaranteed to the root queues in the pool."""
    free_gpus: int
    """GPUs with nothing on them."""
    shared_gpus: int
    """GPUs that slices share (no whole-GPU pod on them)."""
    slices: int
    """Slice pods placed in the pool."""

    @property
    def idle_milli(self) -> int:
        """GPUs not held by anything (a GPU partly sliced counts its unsliced part)."""
        return max(0, self.gpus * MILLI_GPU - self.allocated_milli)


@dataclass(frozen=True, slots=True)
class Derived:
    """The dashboard's aggregates of one `ClusterView`."""

    pools: tuple[PoolTotals, ...]
    positions: Mapping[str, tuple[int, int]]
    """Pending workload -> (its place in its queue's pending order, how many wait there)."""
    ordered: tuple[Workload, ...]
    """Every workload, by namespace and name (the API's order of the workload list)."""
    waiting_longest: tuple[Workload, ...]
    """Pending workloads, longest waiting first."""
    namespaces: tuple[str, ...]
    """Namespaces that have workloads, sorted."""
    leaves: frozenset[str]
    """Queues without children: where workloads are submitted."""
    counts: Mapping[WorkloadState, int]
    """Workloads by state."""


_cache: weakref.WeakKeyDictionary[ClusterView, Derived] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def derived(view: ClusterView) -> Derived:
    """The aggregates of `view`, worked out on first use and kept while `view` lives."""
    with _lock:
        found = _cache.get(view)
    if found is None:
        # Two threads may both work it out: the result is the same, the first one stays.
        found = _derive(view)
        with _lock:
            found = _cache.setdefault(view, found)
    return found


def _derive(view: ClusterView) -> Derived:
    snapshot = view.status.snapshot
    parents = {q.parent for q in snapshot.queues if q.parent is not None}
    leaves = frozenset(q.name for q in snapshot.queues if q.name not in parents)
    positions = {
        name: (i + 1, len(order))
        for order in pending_order(snapshot.workloads).values()
        for i, name in enumerate(order)
    }
    namespace_of = {name: pods.namespace for name, pods in view.status.pods.items()}
    ordered = tuple(
        sorted(snapshot.workloads, key=lambda w: (namespace_of.get(w.name, ""), w.name))
    )
    pending = [w for w in snapshot.workloads if w.state is WorkloadState.PENDING]
    counts: dict[WorkloadState, int] = dict.fromkeys(WorkloadState, 0)
    for workload in snapshot.workloads:
        counts[workload.state] += 1
    return Derived(
        pools=_pool_totals(view, leaves),
        positions=positions,
        ordered=ordered,
        waiting_longest=tuple(sorted(pending, key=lambda w: (w.submitted_at, w.name))),
        namespaces=tuple(sorted({ns for ns in namespace_of.values() if ns})),
        leaves=leaves,
        counts=counts,
    )


def _pool_totals(view: ClusterView, leaves: frozenset[str]) -> tuple[PoolTotals, ...]:
    snapshot = view.status.snapshot
    pool_of_node = {n.name: n.pool for n in snapshot.nodes}
    memory_of = {g.uuid: g.memory_mib for n in snapshot.nodes for g in n.gpus}
    allocated: dict[str, int] = defaultdict(int)
    slices: dict[str, int] = defaultdict(int)
    whole: set[str] = set()
    sliced: set[str] = set()
    for workload in snapshot.workloads:
        request = workload.request
        for pod in workload.allocation or ():
            pool = pool_of_node[pod.node]
            if request.is_slice:
                slices[pool] += 1
                sliced.update(pod.gpus)
                allocated[pool] += sum(request.milli_gpus(memory_of[g]) for g in pod.gpus)
            else:
                whole.update(pod.gpus)
                allocated[pool] += len(pod.gpus) * MILLI_GPU
    borrowed: dict[str, int] = defaultdict(int)
    waiting: dict[str, int] = defaultdict(int)
    quota: dict[str, int] = defaultdict(int)
    roots = {q.name for q in snapshot.queues if q.parent is None}
    for share in view.status.plan.shares:
        if share.queue in leaves:
            borrowed[share.pool] += max(0, share.allocated_milli - share.quota_milli)
            waiting[share.pool] += max(0, share.demand_milli - share.allocated_milli)
        if share.queue in roots:
            quota[share.pool] += share.quota_milli
    by_pool: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    models: dict[str, set[str]] = defaultdict(set)
    for node in snapshot.nodes:
        counts = by_pool[node.pool]
        counts[0] += 1
        counts[1] += node.ready
        counts[2] += len(node.gpus)
        for gpu in node.gpus:
            if gpu.uuid in whole:
                continue
            if gpu.uuid in sliced:
                counts[4] += 1
            else:
                counts[3] += 1
        if node.gpu_model:
            models[node.pool].add(node.gpu_model)
    return tuple(
        PoolTotals(
            pool=pool,
            models=tuple(sorted(models[pool])),
            nodes=counts[0],
            ready_nodes=counts[1],
            gpus=counts[2],
            allocated_milli=allocated[pool],
            borrowed_milli=borrowed[pool],
            waiting_milli=waiting[pool],
            quota_milli=quota[pool],
            free_gpus=counts[3],
            shared_gpus=counts[4],
            slices=slices[pool],
        )
        for pool, counts in sorted(by_pool.items())
    )
