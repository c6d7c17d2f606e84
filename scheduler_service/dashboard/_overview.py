"""The overview: GPUs per pool (total, allocated, borrowed, idle, waiting) and who waits longest."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_service.api import ClusterView
from scheduler_service.core import MILLI_GPU, WorkloadState
from scheduler_service.dashboard._access import Scope
from scheduler_service.dashboard._index import PoolTotals, derived
from scheduler_service.dashboard._svg import Segment
from scheduler_service.dashboard._workloads import WorkloadRow, workload_row

__all__ = ["Overview", "PoolRow", "build_overview"]

_LONGEST_WAITS = 10


@dataclass(frozen=True, slots=True)
class PoolRow:
    """One pool's line of the overview, in GPUs (slices as the fraction they are charged)."""

    pool: str
    models: str
    nodes: int
    ready_nodes: int
    gpus: int
    allocated_gpus: float
    borrowed_gpus: float
    idle_gpus: float
    free_gpus: int
    shared_gpus: int
    slices: int
    waiting_gpus: float
    quota_gpus: float
    segments: tuple[Segment, ...]
    """The pool's GPUs as a bar: in-quota use, borrowed use, idle."""


@dataclass(frozen=True, slots=True)
class Overview:
    """The overview page: pools, totals, counts by state, the longest waits the viewer may see."""

    pools: tuple[PoolRow, ...]
    total: PoolRow | None
    counts: dict[str, int]
    longest_waits: tuple[WorkloadRow, ...]
    hidden_waits: bool
    """Some pending work is in namespaces the viewer may not see (not listed above)."""


def _row(totals: PoolTotals) -> PoolRow:
    allocated = totals.allocated_milli / MILLI_GPU
    # Borrowing is the plan's standing after the cycle, allocation the snapshot's: for the one
    # cycle in which an admission is being carried out, the first may run ahead of the second.
    borrowed = min(totals.borrowed_milli, totals.allocated_milli) / MILLI_GPU
    idle = totals.idle_milli / MILLI_GPU
    return PoolRow(
        pool=totals.pool,
        models=", ".join(totals.models),
        nodes=totals.nodes,
        ready_nodes=totals.ready_nodes,
        gpus=totals.gpus,
        allocated_gpus=allocated,
        borrowed_gpus=borrowed,
        idle_gpus=idle,
        free_gpus=totals.free_gpus,
        shared_gpus=totals.shared_gpus,
        slices=totals.slices,
        waiting_gpus=totals.waiting_milli / MILLI_GPU,
        quota_gpus=totals.quota_milli / MILLI_GPU,
        segments=(
            Segment(allocated - borrowed, "used", f"{allocated - borrowed:g} GPUs within quota"),
            Segment(borrowed, "borrowed", f"{borrowed:g} GPUs borrowed beyond quota"),
            Segment(idle, "idle", f"{idle:g} GPUs idle"),
        ),
    )


def _sum(rows: tuple[PoolTotals, ...]) -> PoolTotals:
    return PoolTotals(
        pool="all pools",
        models=tuple(sorted({m for r in rows for m in r.models})),
        nodes=sum(r.nodes for r in rows),
        ready_nodes=sum(r.ready_nodes for r in rows),
        gpus=sum(r.gpus for r in rows),
        allocated_milli=sum(r.allocated_milli for r in rows),
        borrowed_milli=sum(min(r.borrowed_milli, r.allocated_milli) for r in rows),
        waiting_milli=sum(r.waiting_milli for r in rows),
        quota_milli=sum(r.quota_milli for r in rows),
        free_gpus=sum(r.free_gpus for r in rows),
        shared_gpus=sum(r.shared_gpus for r in rows),
        slices=sum(r.slices for r in rows),
    )


def build_overview(view: ClusterView, scope: Scope, now: float) -> Overview:
    """The overview as `scope` may see it at `now` (Unix seconds).

    Pool totals and counts are aggregates (no node, pod or namespace named) and need only the
    right to list queues, which shows the same numbers per queue; the longest waits list only
    workloads of namespaces the viewer may list pods in.
    """
    scope.require_queues()
    index = derived(view)
    waits: list[WorkloadRow] = []
    hidden = False
    for workload in index.waiting_longest:
        if len(waits) == _LONGEST_WAITS:
            break
        namespace = view.pods_of(workload.name).namespace
        if scope.sees_namespace(namespace):
            waits.append(workload_row(view, workload, now))
        else:
            hidden = True
    return Overview(
        pools=tuple(_row(p) for p in index.pools),
        total=_row(_sum(index.pools)) if len(index.pools) > 1 else None,
        counts={state.value: index.counts[state] for state in WorkloadState},
        longest_waits=tuple(waits),
        hidden_waits=hidden,
    )
