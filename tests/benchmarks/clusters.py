"""Cluster and workload generators for the core benchmarks, sized like real GPU clusters.

Deterministic for a seed. Nodes are 8-GPU servers in racks of 16 and blocks of 8 racks; queues
are a two-level tree (departments > teams) whose quotas add up to the cluster in every pool.

Two cluster shapes:
- homogeneous: every node an 8 x H100 in pool `h100`, the work one-GPU steps and gangs of 4;
- heterogeneous (`MIXED_POOLS`): four pools of different GPU models and memory, and a mix of
  whole-GPU steps that name pools or models or none, gangs of 4 one-GPU pods, gangs of 2 x 8
  GPUs that prefer one rack, and GPU slices (inference and build steps, protected within quota,
  and preemptible training slices).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from scheduler_service.core import (
    GPU,
    Kind,
    Node,
    PoolQuota,
    Queue,
    Request,
    Scheduler,
    Snapshot,
    TopologyWish,
    Workload,
    WorkloadState,
    schedule,
)

GPUS_PER_NODE = 8
DEPARTMENTS = 4
TEAMS_PER_DEPARTMENT = 5
NODES_PER_RACK = 16
RACKS_PER_BLOCK = 8


@dataclass(frozen=True)
class PoolShape:
    """One pool of a benchmark cluster: its GPU model and memory, and its share of the nodes."""

    pool: str
    model: str
    gpu_memory_mib: int
    share: float


H100_ONLY = (PoolShape("h100", "H100", 81559, 1.0),)
MIXED_POOLS = (
    PoolShape("h100", "H100", 81559, 0.4),
    PoolShape("h200", "H200", 143771, 0.1),
    PoolShape("a100", "A100", 40960, 0.3),
    PoolShape("l40s", "L40S", 46068, 0.2),
)
"""The heterogeneous cluster: 40% H100, 10% H200, 30% A100 40 GB, 20% L40S nodes."""


def make_nodes(count: int, pools: Sequence[PoolShape] = H100_ONLY) -> tuple[Node, ...]:
    """`count` ready 8-GPU nodes with block/rack topology, pool after pool in `pools` order.

    Each pool gets its share of the nodes (the last one the rest), in whole racks where the
    share allows, so a rack holds one GPU model.
    """
    nodes = []
    for i, shape in enumerate(_pool_of_each_node(count, pools)):
        name = f"node-{i:05d}"
        gpus = tuple(
            GPU(
                index=g,
                uuid=f"{name}-gpu{g}",
                model=shape.model,
                memory_mib=shape.gpu_memory_mib,
                numa_node=g // 4,
            )
            for g in range(GPUS_PER_NODE)
        )
        nodes.append(
            Node(
                name=name,
                pool=shape.pool,
                gpus=gpus,
                cpu_milli=192_000,
                memory_mib=2_048_000,
                topology=(
                    ("block", f"b{i // (NODES_PER_RACK * RACKS_PER_BLOCK)}"),
                    ("rack", f"r{i // NODES_PER_RACK}"),
                ),
            )
        )
    return tuple(nodes)


def _pool_of_each_node(count: int, pools: Sequence[PoolShape]) -> list[PoolShape]:
    shapes: list[PoolShape] = []
    for shape in pools[:-1]:
        shapes += [shape] * round(count * shape.share)
    return shapes + [pools[-1]] * (count - len(shapes))


def make_queues(nodes: Sequence[Node]) -> tuple[Queue, ...]:
    """Departments and teams whose quotas add up to the cluster's GPUs in each pool, weights 1."""
    gpus = Counter[str]()
    for node in nodes:
        gpus[node.pool] += len(node.gpus)
    teams = DEPARTMENTS * TEAMS_PER_DEPARTMENT
    team_quota = {pool: count // teams for pool, count in sorted(gpus.items())}
    queues = []
    for d in range(DEPARTMENTS):
        dept = f"dept-{d}"
        queues.append(
            Queue(
                name=dept,
                quotas=tuple(
                    PoolQuota(pool, quota=quota * TEAMS_PER_DEPARTMENT)
                    for pool, quota in team_quota.items()
                ),
            )
        )
        queues.extend(
            Queue(
                name=f"{dept}-team-{t}",
                parent=dept,
                quotas=tuple(PoolQuota(pool, quota=quota) for pool, quota in team_quota.items()),
            )
            for t in range(TEAMS_PER_DEPARTMENT)
        )
    return tuple(queues)


def team_names() -> list[str]:
    """The leaf queues of `make_queues`."""
    return [f"dept-{d}-team-{t}" for d in range(DEPARTMENTS) for t in range(TEAMS_PER_DEPARTMENT)]


def make_pending(
    singles: int,
    gangs: int,
    gang_pods: int,
    *,
    seed: int,
    prefix: str = "w",
    start: float = 0.0,
    teams: list[str] | None = None,
) -> list[Workload]:
    """One-GPU training steps and gangs of `gang_pods` one-GPU pods, in shuffled order.

    They are spread round-robin over `teams` (default: every team).
    """
    teams = teams or team_names()
    request = Request(gpus=1, cpu_milli=8000, memory_mib=64_000)
    workloads = [
        Workload(name=f"{prefix}-single-{i:06d}", queue=teams[i % len(teams)], request=request)
        for i in range(singles)
    ]
    workloads.extend(
        Workload(
            name=f"{prefix}-gang-{i:05d}",
            queue=teams[i % len(teams)],
            kind=Kind.TRAIN,
            pods=gang_pods,
            request=request,
        )
        for i in range(gangs)
    )
    return _shuffled(workloads, seed=seed, start=start)


_ONE_GPU = Request(gpus=1, cpu_milli=8000, memory_mib=64_000)
_WHOLE_NODE = Request(gpus=8, cpu_milli=64_000, memory_mib=512_000)
_SINGLE_TARGETS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    # (pools, models) in order of preference; empty means any
    (("h100",), ()),
    (("h100",), ()),
    (("a100",), ()),
    (("a100",), ()),
    (("l40s",), ()),
    (("h200", "h100"), ()),
    ((), ("H100", "H200")),
    ((), ()),
)
_SLICES: tuple[tuple[Kind, int, int, tuple[str, ...]], ...] = (
    # (kind, GPU memory MiB, compute %, pools)
    (Kind.INFER, 20_480, 25, ("l40s",)),
    (Kind.INFER, 10_240, 20, ("a100", "l40s")),
    (Kind.BUILD, 10_240, 10, ()),
    (Kind.TRAIN, 20_480, 50, ("a100",)),
    (Kind.TRAIN, 40_960, 50, ("h100", "h200")),
)
_GANG_POOLS = (("h100",), ("a100",), ("h200", "h100"))


def make_mixed_pending(
    nodes: int,
    *,
    seed: int,
    prefix: str = "m",
    start: float = 0.0,
    teams: list[str] | None = None,
) -> list[Workload]:
    """The heterogeneous cluster's work for `nodes` nodes, in shuffled order, about 1.1 x its GPUs.

    Per 100 nodes: 600 one-GPU steps (each naming pools, models or neither), 400 GPU slices
    (inference, build and training), 25 gangs of 4 one-GPU pods and 2 gangs of 2 x 8 GPUs that
    prefer one rack. Spread round-robin over `teams` (default: every team).
    """
    rng = random.Random(seed)
    teams = teams or team_names()
    workloads: list[Workload] = []

    def add(kind: str, count: int, build: Callable[[str, str], Workload]) -> None:
        workloads.extend(
            build(f"{prefix}-{kind}-{i:06d}", teams[i % len(teams)]) for i in range(count)
        )

    def single(name: str, queue: str) -> Workload:
        pools, models = rng.choice(_SINGLE_TARGETS)
        return Workload(name=name, queue=queue, request=_ONE_GPU, pools=pools, models=models)

    def slice_(name: str, queue: str) -> Workload:
        kind, memory_mib, compute_percent, pools = rng.choice(_SLICES)
        request = Request(
            gpu_memory_mib=memory_mib,
            gpu_compute_percent=compute_percent,
            cpu_milli=4000,
            memory_mib=32_000,
        )
        return Workload(name=name, queue=queue, kind=kind, request=request, pools=pools)

    def gang(name: str, queue: str) -> Workload:
        pools = rng.choice(_GANG_POOLS)
        return Workload(name=name, queue=queue, pods=4, request=_ONE_GPU, pools=pools)

    def wide_gang(name: str, queue: str) -> Workload:
        return Workload(
            name=name,
            queue=queue,
            pods=2,
            request=_WHOLE_NODE,
            pools=("h100",),
            topology=TopologyWish("rack", required=False),
        )

    add("single", nodes * 6, single)
    add("slice", nodes * 4, slice_)
    add("gang", nodes // 4, gang)
    add("wide", nodes // 50, wide_gang)
    return _shuffled(workloads, seed=seed, start=start)


def _shuffled(workloads: list[Workload], *, seed: int, start: float) -> list[Workload]:
    random.Random(seed).shuffle(workloads)
    return [replace(w, submitted_at=start + i * 0.01) for i, w in enumerate(workloads)]


def filled(
    nodes: tuple[Node, ...], queues: tuple[Queue, ...], pending: list[Workload]
) -> tuple[Snapshot, list[Workload]]:
    """The cluster after one `schedule` cycle on `pending`, and the workloads left pending.

    What the cycle admits is RUNNING in the returned snapshot (started at 0).
    """
    snapshot = Snapshot(nodes=nodes, queues=queues, workloads=tuple(pending))
    plan = schedule(snapshot, now=0.0)
    placed = {a.workload: a.allocation for a in plan.admissions}
    running = [
        replace(w, state=WorkloadState.RUNNING, allocation=placed[w.name], started_at=0.0)
        for w in pending
        if w.name in placed
    ]
    leftover = [w for w in pending if w.name not in placed]
    return Snapshot(nodes=nodes, queues=queues, workloads=tuple(running)), leftover


def full_cluster(
    nodes: int, seed: int = 1, teams: list[str] | None = None
) -> tuple[Snapshot, list[Workload]]:
    """The homogeneous cluster filled by one cycle of the fill benchmark, and what is left.

    The cluster is filled with single-GPU steps and 4-pod gangs by one `schedule` call.
    `teams` limits who submits (default: every team); the others stay idle and the submitting
    teams borrow their quota.
    """
    node_specs = make_nodes(nodes)
    pending = make_pending(singles=nodes * 8, gangs=nodes // 2, gang_pods=4, seed=seed, teams=teams)
    return filled(node_specs, make_queues(node_specs), pending)


SETTLING_CYCLES = 5
"""Cycles the heterogeneous cluster runs after its fill before it counts as full."""


def full_mixed_cluster(
    nodes: int, seed: int = 1, teams: list[str] | None = None
) -> tuple[Snapshot, list[Workload]]:
    """`full_cluster` for the heterogeneous cluster (`MIXED_POOLS`, `make_mixed_pending`).

    One cycle does not leave this cluster at rest: the random mix leaves some teams above their
    quota in a pool and others below it, so the next cycles reclaim. The cluster is returned
    after `SETTLING_CYCLES` more cycles carried out (see `carried_out`), so a steady-state
    cycle on it measures steady state rather than the tail of the fill. Before phase 2 ordered
    per pool it never came to rest (docs/benchmarks.md); the steady-state case still reports
    its evictions, for the 1,000 steps it adds may reclaim. The reclaim case's cluster
    (only departments 0-2 submit) gets the same cycles.
    """
    node_specs = make_nodes(nodes, MIXED_POOLS)
    pending = make_mixed_pending(nodes, seed=seed, teams=teams)
    full, left = filled(node_specs, make_queues(node_specs), pending)
    after = carried_out(replace(full, workloads=full.workloads + tuple(left)), SETTLING_CYCLES)
    return _split(after)


def carried_out(snapshot: Snapshot, cycles: int) -> Snapshot:
    """`snapshot` after `cycles` cycles (one a second from 0) carried out as a driver would.

    Each cycle's admissions start at once and its evictions complete at once (back to pending).
    """
    scheduler = Scheduler.from_snapshot(snapshot)
    for cycle in range(cycles):
        now = float(cycle)
        plan = scheduler.cycle(now, explain=False)
        for admission in plan.admissions:
            scheduler.started(admission.workload, admission.allocation, now)
        for eviction in plan.evictions:
            scheduler.evicting(eviction.workload)
            scheduler.requeued(eviction.workload)
    return scheduler.snapshot()


def _split(snapshot: Snapshot) -> tuple[Snapshot, list[Workload]]:
    """The snapshot without its pending workloads (all running at 0), and those workloads."""
    running = [
        replace(w, started_at=0.0)
        for w in snapshot.workloads
        if w.state is not WorkloadState.PENDING
    ]
    pending = [w for w in snapshot.workloads if w.state is WorkloadState.PENDING]
    return replace(snapshot, workloads=tuple(running)), pending
