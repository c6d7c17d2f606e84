"""The queue tree: per pool, guaranteed quota, fair share, used, borrowed and waiting, as bars.

The numbers are the API's (`ClusterView.queue_pools`, the plan's shares); what the page adds is
the reading: who holds GPUs beyond its quota (borrowing, which reclaim may take back), and who
is below its fair share with work waiting while others hold more than theirs (who may reclaim).
Every queue is shown to a viewer who may list Queues, as `kubectl get queues` shows them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from scheduler_service.api import ClusterView, QueuePoolView
from scheduler_service.core import Queue
from scheduler_service.dashboard._access import Scope
from scheduler_service.dashboard._format import gpus
from scheduler_service.dashboard._svg import Marker, Segment

__all__ = ["QueuePoolRow", "QueueRow", "QueuesPage", "Standing", "build_queues", "pool_row"]


@dataclass(frozen=True, slots=True)
class QueuePoolRow:
    """A queue's standing in one pool, in GPUs, and its bar (drawn to the pool's `scale`)."""

    pool: str
    quota_gpus: float
    limit_gpus: float | None
    fair_share_gpus: float
    allocated_gpus: float
    demand_gpus: float
    borrowed_gpus: float
    """Held beyond the quota."""
    waiting_gpus: float
    """Asked for by pending work (demand beyond what is held)."""
    segments: tuple[Segment, ...]
    markers: tuple[Marker, ...]
    scale: float


@dataclass(frozen=True, slots=True)
class QueueRow:
    """A queue of the tree, indented by `depth`, with its workloads counted over its subtree."""

    name: str
    parent: str | None
    depth: int
    leaf: bool
    priority: int
    pending: int
    running: int
    evicting: int
    pools: tuple[QueuePoolRow, ...]


@dataclass(frozen=True, slots=True)
class Standing:
    """`queue` in `pool`: `gpus` over its quota, or that it may take back."""

    queue: str
    pool: str
    gpus: float


@dataclass(frozen=True, slots=True)
class QueuesPage:
    """The queue tree in depth-first order, and who borrows and who may reclaim."""

    rows: tuple[QueueRow, ...]
    pools: tuple[str, ...]
    """Every pool a queue has a standing in (the filter's choices)."""
    pool: str | None
    """The pool filter, or None for all."""
    over_quota: tuple[Standing, ...]
    could_reclaim: tuple[Standing, ...]


def _tree_order(queues: dict[str, Queue]) -> list[tuple[Queue, int]]:
    children: dict[str | None, list[str]] = defaultdict(list)
    for queue in queues.values():
        children[queue.parent].append(queue.name)
    ordered: list[tuple[Queue, int]] = []
    stack = [(name, 0) for name in sorted(children[None], reverse=True)]
    while stack:
        name, depth = stack.pop()
        ordered.append((queues[name], depth))
        stack.extend((child, depth + 1) for child in sorted(children[name], reverse=True))
    return ordered


def pool_row(entry: QueuePoolView, scale: float) -> QueuePoolRow:
    """A queue's standing in one pool (the API's numbers) as a row with a bar to `scale` GPUs."""
    quota, allocated = entry.quota_gpus, entry.allocated_gpus
    borrowed = max(0.0, allocated - quota)
    waiting = max(0.0, entry.demand_gpus - allocated)
    markers = [
        Marker(quota, "quota", f"quota {gpus(quota)} GPUs"),
        Marker(entry.fair_share_gpus, "share", f"fair share {gpus(entry.fair_share_gpus)} GPUs"),
    ]
    if entry.limit_gpus is not None:
        markers.append(Marker(entry.limit_gpus, "limit", f"limit {gpus(entry.limit_gpus)} GPUs"))
    return QueuePoolRow(
        pool=entry.pool,
        quota_gpus=quota,
        limit_gpus=entry.limit_gpus,
        fair_share_gpus=entry.fair_share_gpus,
        allocated_gpus=allocated,
        demand_gpus=entry.demand_gpus,
        borrowed_gpus=borrowed,
        waiting_gpus=waiting,
        segments=(
            Segment(allocated - borrowed, "used", f"{gpus(allocated - borrowed)} GPUs in quota"),
            Segment(borrowed, "borrowed", f"{gpus(borrowed)} GPUs borrowed beyond quota"),
            Segment(waiting, "waiting", f"{gpus(waiting)} GPUs asked for by waiting work"),
        ),
        markers=tuple(markers),
        scale=scale,
    )


def build_queues(view: ClusterView, scope: Scope, pool: str | None = None) -> QueuesPage:
    """The queue tree as `scope` sees it (needs the right to list Queues), in one pool or all.

    A leaf queue may reclaim when it holds less than both its fair share and its demand while
    other leaf queues of the pool hold more than their fair share: it may take back the smaller
    of what it lacks and what they hold beyond theirs (only their preemptible work, never below
    their quota: the core decides the victims).
    """
    scope.require_queues()
    counts = view.workload_counts()
    ordered = _tree_order(dict(view.queues))
    standings = {queue.name: view.queue_pools(queue) for queue, _ in ordered}
    all_pools = sorted({e.pool for entries in standings.values() for e in entries})
    scale: dict[str, float] = defaultdict(float)
    for entries in standings.values():
        for e in entries:
            top = max(e.quota_gpus, e.limit_gpus or 0.0, e.fair_share_gpus, e.demand_gpus)
            scale[e.pool] = max(scale[e.pool], top, e.allocated_gpus)
    rows = []
    for queue, depth in ordered:
        view_of = view.queue_view(queue, counts)
        rows.append(
            QueueRow(
                name=queue.name,
                parent=queue.parent,
                depth=depth,
                leaf=not view_of.children,
                priority=queue.priority,
                pending=view_of.workloads.pending,
                running=view_of.workloads.running,
                evicting=view_of.workloads.evicting,
                pools=tuple(
                    pool_row(e, scale[e.pool])
                    for e in standings[queue.name]
                    if pool is None or e.pool == pool
                ),
            )
        )
    over, reclaim = _standings(rows)
    return QueuesPage(
        rows=tuple(rows),
        pools=tuple(all_pools),
        pool=pool,
        over_quota=over,
        could_reclaim=reclaim,
    )


def _standings(rows: list[QueueRow]) -> tuple[tuple[Standing, ...], tuple[Standing, ...]]:
    over: list[Standing] = []
    above_share: dict[str, float] = defaultdict(float)
    for row in rows:
        if not row.leaf:
            continue
        for entry in row.pools:
            if entry.borrowed_gpus > 0:
                over.append(Standing(row.name, entry.pool, entry.borrowed_gpus))
            above_share[entry.pool] += max(0.0, entry.allocated_gpus - entry.fair_share_gpus)
    reclaim: list[Standing] = []
    for row in rows:
        if not row.leaf:
            continue
        for entry in row.pools:
            lacking = min(entry.fair_share_gpus, entry.demand_gpus) - entry.allocated_gpus
            if lacking > 0 and above_share[entry.pool] > 0:
                reclaim.append(
                    Standing(row.name, entry.pool, min(lacking, above_share[entry.pool]))
                )
    over.sort(key=lambda s: (-s.gpus, s.queue, s.pool))
    reclaim.sort(key=lambda s: (-s.gpus, s.queue, s.pool))
    return tuple(over), tuple(reclaim)
