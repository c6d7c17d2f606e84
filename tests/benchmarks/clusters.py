"""Cluster and workload generators for the core benchmarks, sized like real GPU clusters.

Deterministic for a seed. Nodes are 8-GPU H100 servers in racks of 16 and blocks of 8 racks;
queues are a two-level tree (departments > teams) with quotas that add up to the cluster.
"""

from __future__ import annotations

import random
from dataclasses import replace

from scheduler_service.core import (
    GPU,
    Kind,
    Node,
    PoolQuota,
    Queue,
    Request,
    Snapshot,
    Workload,
    WorkloadState,
    schedule,
)

GPUS_PER_NODE = 8
DEPARTMENTS = 4
TEAMS_PER_DEPARTMENT = 5


def make_nodes(count: int) -> tuple[Node, ...]:
    """`count` ready 8 x H100 nodes with block/rack topology."""
    nodes = []
    for i in range(count):
        name = f"node-{i:05d}"
        gpus = tuple(
            GPU(index=g, uuid=f"{name}-gpu{g}", model="H100", memory_mib=81559, numa_node=g // 4)
            for g in range(GPUS_PER_NODE)
        )
        nodes.append(
            Node(
                name=name,
                pool="h100",
                gpus=gpus,
                cpu_milli=192_000,
                memory_mib=2_048_000,
                topology=(("block", f"b{i // 128}"), ("rack", f"r{i // 16}")),
            )
        )
    return tuple(nodes)


def make_queues(total_gpus: int) -> tuple[Queue, ...]:
    """Departments and teams whose quotas add up to the cluster, weights 1."""
    teams = DEPARTMENTS * TEAMS_PER_DEPARTMENT
    team_quota = total_gpus // teams
    queues = []
    for d in range(DEPARTMENTS):
        dept = f"dept-{d}"
        queues.append(
            Queue(name=dept, quotas=(PoolQuota("h100", quota=team_quota * TEAMS_PER_DEPARTMENT),))
        )
        queues.extend(
            Queue(
                name=f"{dept}-team-{t}", parent=dept, quotas=(PoolQuota("h100", quota=team_quota),)
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
    rng = random.Random(seed)
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
    rng.shuffle(workloads)
    return [replace(w, submitted_at=start + i * 0.01) for i, w in enumerate(workloads)]


def full_cluster(
    nodes: int, seed: int = 1, teams: list[str] | None = None
) -> tuple[Snapshot, list[Workload]]:
    """A cluster filled by one cycle of the fill benchmark, and the workloads left pending.

    The cluster is filled with single-GPU steps and 4-pod gangs by one `schedule` call; the
    result is returned as a snapshot of running workloads.

    `teams` limits who submits (default: every team); the others stay idle and the submitting
    teams borrow their quota.
    """
    node_specs = make_nodes(nodes)
    queues = make_queues(nodes * GPUS_PER_NODE)
    pending = make_pending(singles=nodes * 8, gangs=nodes // 2, gang_pods=4, seed=seed, teams=teams)
    snapshot = Snapshot(nodes=node_specs, queues=queues, workloads=tuple(pending))
    plan = schedule(snapshot, now=0.0)
    placed = {a.workload: a.allocation for a in plan.admissions}
    running = [
        replace(w, state=WorkloadState.RUNNING, allocation=placed[w.name], started_at=0.0)
        for w in pending
        if w.name in placed
    ]
    leftover = [w for w in pending if w.name not in placed]
    return Snapshot(nodes=node_specs, queues=queues, workloads=tuple(running)), leftover
