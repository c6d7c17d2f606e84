"""Hypothesis strategies for random clusters, queue trees, workloads and whole snapshots.

The shapes are small (a dozen nodes, a handful of queues) but cover every feature the core has:
several pools with mixed GPU memory, topology labels, nodes that are not ready, taints, queue
trees with oversubscribed quotas, limits and zero weights, whole-GPU and slice requests, gangs,
every kind, topology wishes, pool and model preferences, and mistakes a user makes (an unknown
queue, pool or model, a parent queue, a shape no node can hold).

RUNNING work is made the way it happens for real: by running the scheduler on an earlier
snapshot and applying its plan, so allocations are valid as long as the scheduler is.

Every choice goes through `pick`, which builds each `sampled_from` strategy once: building
strategies afresh for each of the few hundred draws of an example costs more than the cycle
under test. Repeated options weight a choice (`(1, 1, 1, 2)` draws 1 three times as often);
the first option is the one Hypothesis shrinks towards, so it is always the plainest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from hypothesis import strategies as st

from scheduler_service.core import (
    Kind,
    Node,
    Policy,
    PoolQuota,
    Queue,
    Request,
    Snapshot,
    TopologyWish,
    Workload,
    WorkloadState,
    schedule,
)
from tests.core.builders import apply, back_to_pending, evicting, make_node

T = TypeVar("T")

_CHOICES: dict[tuple[object, ...], st.SearchStrategy[Any]] = {}


def pick(draw: st.DrawFn, options: Sequence[T]) -> T:
    """One of `options` (non-empty, hashable), drawn with a strategy built once per options."""
    key = tuple(options)
    strategy = _CHOICES.get(key)
    if strategy is None:
        strategy = _CHOICES[key] = st.sampled_from(key)
    choice: T = draw(strategy)
    return choice


def between(draw: st.DrawFn, low: int, high: int) -> int:
    """An integer from `low` to `high` inclusive, shrinking towards `low`."""
    return pick(draw, range(low, high + 1))


@dataclass(frozen=True, slots=True)
class PoolKind:
    """A pool of the random clusters: its name, GPU model and the GPU memories its nodes have."""

    name: str
    model: str
    memories_mib: tuple[int, ...]


POOL_KINDS = (
    PoolKind("h100", "H100", (81920,)),
    PoolKind("a100", "A100", (40960, 81920)),
    PoolKind("l4", "L4", (24576,)),
)
MODELS = {kind.name: kind.model for kind in POOL_KINDS}
TAINT = "dedicated"
LEVELS = ("block", "rack")

_TOPOLOGIES: tuple[tuple[tuple[str, str], ...], ...] = (
    (("block", "b0"), ("rack", "r0")),
    (("block", "b0"), ("rack", "r1")),
    (("block", "b1"), ("rack", "r0")),  # rack "r0" of another block: a different domain
    (("block", "b1"),),
    (),
)


@st.composite
def clusters(draw: st.DrawFn, max_nodes: int = 12) -> tuple[Node, ...]:
    """1-3 pools of 1-`max_nodes` nodes with 1-8 GPUs; some not ready, some tainted."""
    pools = POOL_KINDS[: between(draw, 1, len(POOL_KINDS))]
    nodes = []
    for i in range(between(draw, 1, max_nodes)):
        # The first nodes cover every pool, so each drawn pool exists.
        pool = pools[i] if i < len(pools) else pick(draw, pools)
        gpus = between(draw, 1, 8)
        nodes.append(
            make_node(
                f"n{i:02}",
                gpus=gpus,
                model=pool.model,
                pool=pool.name,
                memory_mib=pick(draw, pool.memories_mib),
                topology=dict(pick(draw, _TOPOLOGIES)),
                numa_groups=pick(draw, (1, 2)) if gpus > 1 else 1,
                cpu_milli=pick(draw, (64_000, 16_000)),
                node_memory_mib=pick(draw, (512 * 1024, 64 * 1024)),
                taints=pick(draw, ((), (), (), (TAINT,))),
                ready=pick(draw, (True, True, True, False)),
            )
        )
    return tuple(nodes)


@st.composite
def busy_clusters(draw: st.DrawFn) -> tuple[Node, ...]:
    """2-5 ready nodes of 4 or 8 GPUs in one pool: small enough for queues to contend."""
    return tuple(
        make_node(
            f"n{i:02}",
            gpus=pick(draw, (8, 4)),
            topology=dict(pick(draw, _TOPOLOGIES[:3])),
            numa_groups=2,
        )
        for i in range(between(draw, 2, 5))
    )


@st.composite
def queue_trees(
    draw: st.DrawFn, pools: Sequence[str], *, max_queues: int = 6, contended: bool = False
) -> tuple[Queue, ...]:
    """A forest of up to `max_queues` queues, at most 3 deep, with random entitlements.

    Quotas are drawn without regard to capacity, so they are often oversubscribed. `contended`
    gives every queue a quota in every pool and no limit, so that queues borrow and reclaim.
    """
    queues: list[Queue] = []
    depth: dict[str, int] = {}
    for i in range(between(draw, 1, max_queues)):
        parents = [q.name for q in queues if depth[q.name] < 3]
        parent = pick(draw, (None, *parents))
        name = f"q{i}"
        depth[name] = 1 if parent is None else depth[parent] + 1
        entries = []
        for pool in pools:
            if contended or pick(draw, (True, True, True, False)):
                quota = pick(
                    draw, (4.0, 8.0, 2.0) if contended else (0.0, 2.0, 4.0, 8.0, 1.0, 16.0)
                )
                headroom = None if contended else pick(draw, (None, None, 0.0, 1.0, 4.0))
                entries.append(
                    PoolQuota(
                        pool=pool,
                        quota=quota,
                        limit=None if headroom is None else quota + headroom,
                        over_quota_weight=pick(draw, (1.0, 0.0, 0.5, 2.0, 3.0)),
                    )
                )
        runtimes = (None, None, 0.0, 30.0, 600.0)
        queues.append(
            Queue(
                name=name,
                parent=parent,
                priority=between(draw, 0, 2),
                quotas=tuple(entries),
                reclaim_min_runtime_seconds=pick(draw, runtimes),
                preempt_min_runtime_seconds=pick(draw, runtimes),
            )
        )
    return tuple(queues)


def leaves(queues: Sequence[Queue]) -> list[str]:
    """Names of the queues without children (where workloads go)."""
    parents = {q.parent for q in queues}
    return [q.name for q in queues if q.name not in parents]


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """Whole GPUs (1-8, small counts likelier), a slice of one GPU, or CPU only."""
    cpu = pick(draw, (0, 0, 1000, 8000))
    memory = pick(draw, (0, 0, 4096, 32768))
    shape = pick(draw, ("whole", "whole", "slice", "cpu"))
    if shape == "whole":
        gpus = pick(draw, (1, 1, 1, 2, 2, 4, 8, 3, 6))
        return Request(gpus=gpus, cpu_milli=cpu, memory_mib=memory)
    if shape == "slice":
        return Request(
            gpu_memory_mib=pick(draw, (2048, 10240, 20480, 40960, 81920)),
            gpu_compute_percent=pick(draw, (10, 20, 25, 50, 100)),
            cpu_milli=cpu,
            memory_mib=memory,
        )
    return Request(cpu_milli=max(cpu, 500), memory_mib=memory)


_MISTAKES = ("none",) * 40 + ("queue", "parent", "pool", "model")


@st.composite
def workloads(
    draw: st.DrawFn,
    name: str,
    queues: Sequence[Queue],
    pools: Sequence[str],
    *,
    submitted_at: float = 0.0,
    only_queues: Sequence[str] = (),
) -> Workload:
    """One pending workload named `name`, usually valid, sometimes a user's mistake.

    `only_queues` narrows the leaf queues it goes to (all of them when empty).
    """
    queue = pick(draw, list(only_queues) or leaves(queues))
    request = draw(requests())
    pods = pick(draw, (1, 1, 1, 2, 3, 4, 5, 6) if not request.is_slice else (1, 1, 2, 3))
    wanted_pools: tuple[str, ...] = ()
    if pick(draw, (False, False, True)):
        wanted_pools = tuple(draw(st.permutations(pools))[: between(draw, 1, len(pools))])
    models: tuple[str, ...] = ()
    if pick(draw, (False, False, False, False, True)):
        models = (MODELS[pick(draw, pools)],)
    mistake = pick(draw, _MISTAKES)
    parents = sorted({q.parent for q in queues if q.parent})
    if mistake == "queue":
        queue = "ghost"
    elif mistake == "parent" and parents:
        queue = pick(draw, parents)
    elif mistake == "pool":
        wanted_pools = ("nowhere",)
    elif mistake == "model":
        models = ("B200",)
    level = pick(draw, (None, None, *LEVELS))
    return Workload(
        name=name,
        queue=queue,
        kind=pick(draw, (Kind.TRAIN, Kind.TRAIN, Kind.TRAIN, Kind.BUILD, Kind.INFER)),
        request=request,
        pods=pods,
        priority=between(draw, 0, 3),
        submitted_at=submitted_at + between(draw, 0, 50),
        pools=wanted_pools,
        models=models,
        topology=None if level is None else TopologyWish(level, pick(draw, (True, False))),
        tolerations=pick(draw, ((), (TAINT,))),
        preemptible=pick(draw, (None, None, None, True, False)),
    )


@st.composite
def workload_batches(
    draw: st.DrawFn,
    prefix: str,
    queues: Sequence[Queue],
    pools: Sequence[str],
    *,
    min_size: int = 0,
    max_size: int = 10,
    submitted_at: float = 0.0,
    only_queues: Sequence[str] = (),
) -> list[Workload]:
    """`min_size` to `max_size` pending workloads named `<prefix>0`, `<prefix>1`, ..."""
    return [
        draw(
            workloads(
                f"{prefix}{i}", queues, pools, submitted_at=submitted_at, only_queues=only_queues
            )
        )
        for i in range(between(draw, min_size, max_size))
    ]


@dataclass(frozen=True, slots=True)
class Cycle:
    """A snapshot and the time of the cycle that decides on it."""

    snapshot: Snapshot
    now: float


@st.composite
def cycles(
    draw: st.DrawFn,
    cluster: st.SearchStrategy[tuple[Node, ...]] | None = None,
    *,
    keep_work_on_lost_nodes: bool = False,
) -> Cycle:
    """A random snapshot with RUNNING, EVICTING and PENDING work, and `now`.

    A first batch, from some of the queues, is scheduled on the cluster with every node ready
    and the plan applied (each admitted workload started at a random time); some of it is then
    being evicted. Nodes then go not ready as drawn: their work goes back to pending, as a
    driver reports the pods of a lost node, unless `keep_work_on_lost_nodes` (a node that has
    just gone not ready still holds its pods). A second batch, from every queue, arrives.
    `cluster` draws the nodes (`clusters()` when None); a given cluster is meant to be busy,
    so the queues get quotas everywhere and no limits.
    """
    nodes = draw(clusters() if cluster is None else cluster)
    pools = sorted({node.pool for node in nodes})
    queues = draw(queue_trees(pools, contended=cluster is not None))
    policy = Policy(
        reclaim_min_runtime_seconds=pick(draw, (0.0, 60.0)),
        preempt_min_runtime_seconds=pick(draw, (0.0, 60.0)),
        reserve_for_gangs=pick(draw, (True, False)),
    )
    now = 100.0
    # The first batch comes from some queues only, so they borrow what the others will want.
    early = draw(st.lists(st.sampled_from(leaves(queues)), min_size=1, unique=True))
    first = draw(workload_batches("r", queues, pools, min_size=2, max_size=12, only_queues=early))
    all_ready = tuple(replace(node, ready=True) for node in nodes)
    earlier = Snapshot(nodes=all_ready, queues=queues, workloads=tuple(first), policy=policy)
    started = apply(earlier, schedule(earlier, now=0.0), now=0.0)
    lost = {node.name for node in nodes if not node.ready}
    placed = [
        _later(draw, workload, lost, keep_on_lost=keep_work_on_lost_nodes)
        for workload in started.workloads
    ]
    second = draw(workload_batches("w", queues, pools, submitted_at=now))
    snapshot = Snapshot(nodes=nodes, queues=queues, workloads=(*placed, *second), policy=policy)
    return Cycle(snapshot=snapshot, now=now)


def _later(draw: st.DrawFn, workload: Workload, lost: set[str], *, keep_on_lost: bool) -> Workload:
    """A workload of the first batch as the next snapshot reports it."""
    if workload.state is not WorkloadState.RUNNING:
        return workload
    if not keep_on_lost and any(pod.node in lost for pod in workload.allocation or ()):
        return back_to_pending(workload)  # the driver saw the node's pods go
    workload = replace(workload, started_at=pick(draw, (0.0, 50.0, 95.0)))
    return evicting(workload) if pick(draw, (False,) * 5 + (True,)) else workload


def any_cycles(*, keep_work_on_lost_nodes: bool = False) -> st.SearchStrategy[Cycle]:
    """Cycles on random clusters, and on busy ones where queues contend (reclaim, preemption)."""
    return st.one_of(
        cycles(keep_work_on_lost_nodes=keep_work_on_lost_nodes),
        cycles(busy_clusters(), keep_work_on_lost_nodes=keep_work_on_lost_nodes),
    )
