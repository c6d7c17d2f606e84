"""Experiment 2: static GPUs against pooled queues, on the Philly trace.

The cluster is one pool (`POOL`) of the VCs' nodes, 8 GPUs each (2,816 GPUs at native size).
A job of n GPUs is a gang of `ceil(n / 8)` pods of `n / pods` GPUs each (12 -> 2 x 6, 32 ->
4 x 8); every size in the trace divides evenly, so no GPU is added or dropped. Jobs are
training (preemptible). Policies, all decided by the real core on the same jobs:

- `static`: each VC is a queue with quota = limit = its GPUs: it uses only as many GPUs as it
  owns, FIFO inside (the core's order: submission time; a head gang that does not fit reserves
  nodes, so small jobs cannot starve it);
- `fifo`: one shared queue, no quota, no limit: the whole cluster in submission order;
- `aistack`: each VC a queue with quota = its GPUs and no limit: idle GPUs are borrowed over
  quota, shared by fair share, and reclaimed (with checkpoint/resume) when the owner asks.

`scale_cluster` shrinks the cluster to the number of nodes on which the trace offers the load
asked for, shared among the VCs in proportion to their native sizes; every VC keeps at least
one node and at least enough for its largest job (so every job fits its own VC in the static
split), and the others shrink further to make up for it. Only when those floors alone exceed
the nodes wanted does the load reached fall short; it is reported beside the load asked for.

What-if questions (`WhatIf`) change the scaled cluster: some VCs' node counts (more or fewer
servers) and some VCs' quotas (GPUs guaranteed, apart from the nodes they brought). A VC's
quota is its GPUs unless a what-if sets it; in the static split the quota is also its limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from scheduler_service.core import (
    GPU,
    Kind,
    Node,
    Policy,
    PoolQuota,
    Queue,
    Request,
    Workload,
)
from scheduler_service.sim._decider import Decider, new_decider
from scheduler_service.sim._gate import IdleGate
from scheduler_service.sim._inputs import EngineSettings, Faults
from scheduler_service.sim._ledger import GpuTimeLedger
from scheduler_service.sim._philly import GPUS_PER_NODE, PhillyTrace
from scheduler_service.sim._replay import JobRecord, ReplayJob, replay

__all__ = [
    "POLICIES",
    "POOL",
    "Cluster",
    "PolicyRun",
    "WhatIf",
    "run_policy",
    "scale_cluster",
]

POOL = "philly"
POLICIES = ("static", "fifo", "aistack")
_SHARED = "shared"
_GPU_MIB = 24_576  # Philly's GPUs (P100/P40 class); the value plays no part: no slices here


@dataclass(frozen=True, slots=True)
class Cluster:
    """Nodes per VC, and the load the trace offers on them (GPU time asked / available).

    `quotas` holds the quotas (GPUs) a what-if set apart from a VC's own GPUs (`quota_of`).
    """

    vc_nodes: Mapping[str, int]
    offered_load: float
    quotas: Mapping[str, int] = field(default_factory=dict)
    target: float | None = None
    """The offered load asked for (None: native size); `offered_load` is the load reached."""
    floored: bool = False
    """Whether the VCs' floors (the nodes of each one's largest job) alone exceed the nodes
    that `target` wants, so the cluster could not shrink to it (`offered_load` falls short)."""

    @property
    def gpus(self) -> int:
        """All GPUs of the cluster."""
        return sum(self.vc_nodes.values()) * GPUS_PER_NODE

    def quota_of(self, vc: str) -> int:
        """The GPUs guaranteed to `vc`: its own GPUs unless a what-if set its quota."""
        return self.quotas.get(vc, self.vc_nodes[vc] * GPUS_PER_NODE)


@dataclass(frozen=True, slots=True)
class WhatIf:
    """Changes to the (scaled) cluster: node counts and quotas (GPUs) of some VCs."""

    vc_nodes: Mapping[str, int] = field(default_factory=dict)
    quotas: Mapping[str, int] = field(default_factory=dict)

    def apply(self, cluster: Cluster, trace: PhillyTrace) -> Cluster:
        """`cluster` with these changes; `ValueError` names a VC or number that cannot be."""
        known = set(cluster.vc_nodes)
        for option, changes in (("--vc-nodes", self.vc_nodes), ("--quota", self.quotas)):
            for vc, count in changes.items():
                if vc not in known:
                    raise ValueError(
                        f"{option} {vc}={count}: no VC {vc!r} in the trace; "
                        f"choose from {', '.join(sorted(known))}"
                    )
                if count < 0:
                    raise ValueError(f"{option} {vc}={count}: give a count >= 0")
        nodes = {**cluster.vc_nodes, **self.vc_nodes}
        if not sum(nodes.values()):
            raise ValueError("--vc-nodes leaves the cluster without nodes; keep at least one")
        changed = Cluster(nodes, trace.offered_load(sum(nodes.values()) * GPUS_PER_NODE))
        quotas = {vc: changed.quota_of(vc) for vc in nodes} | dict(self.quotas)
        if sum(quotas.values()) > changed.gpus:
            raise ValueError(
                f"the quotas add up to {sum(quotas.values()):,} GPUs, more than the cluster's "
                f"{changed.gpus:,}: lower some with --quota VC=GPUS or add nodes with "
                "--vc-nodes VC=N"
            )
        return Cluster(
            nodes, changed.offered_load, dict(self.quotas), cluster.target, cluster.floored
        )


@dataclass(frozen=True, slots=True)
class PolicyRun:
    """One policy's replay: the job records, the ledger's integrals, the cycles run / skipped."""

    policy: str
    cluster: Cluster
    records: list[JobRecord]
    ledger: GpuTimeLedger
    cycles: int
    skipped_cycles: int
    settings: EngineSettings


def scale_cluster(trace: PhillyTrace, load: float | None, what_if: WhatIf | None = None) -> Cluster:
    """The native cluster (`load` None) or one scaled so the trace offers about `load`.

    `what_if`, when given, then changes it (see `WhatIf`).
    """
    scaled = _scaled(trace, load)
    return scaled if what_if is None else what_if.apply(scaled, trace)


def _scaled(trace: PhillyTrace, load: float | None) -> Cluster:
    native = dict(trace.vc_nodes)
    native_load = trace.offered_load(sum(native.values()) * GPUS_PER_NODE)
    if load is None:
        return Cluster(native, native_load)
    if load <= 0:
        raise ValueError(f"load must be > 0, got {load}")
    floors = {vc: 1 if count else 0 for vc, count in native.items()}
    for job in trace.jobs:
        if native[job.vc]:
            floors[job.vc] = max(floors[job.vc], math.ceil(job.gpus / GPUS_PER_NODE))
    wanted = _nodes_for(trace, load, sum(native.values()))
    nodes = _share_out(native, floors, wanted)
    offered = trace.offered_load(sum(nodes.values()) * GPUS_PER_NODE)
    return Cluster(nodes, offered, target=load, floored=sum(floors.values()) > wanted)


def _nodes_for(trace: PhillyTrace, load: float, native_nodes: int) -> int:
    """The whole number of nodes on which the trace offers the load closest to `load`."""
    exact = native_nodes * trace.offered_load(native_nodes * GPUS_PER_NODE) / load
    low = max(1, math.floor(exact))
    return min(
        (low, low + 1),
        key=lambda n: abs(trace.offered_load(n * GPUS_PER_NODE) - load),
    )


def _share_out(native: Mapping[str, int], floors: Mapping[str, int], total: int) -> dict[str, int]:
    """`total` nodes shared among the VCs in proportion to `native`, none below its floor.

    A VC whose proportional part falls below its floor gets the floor, and the rest is shared
    again among the others (largest remainders get the odd nodes). When the floors alone
    exceed `total`, every VC gets its floor: the cluster cannot shrink further.
    """
    fixed = {vc: floors[vc] for vc, count in native.items() if not count}
    while True:
        free = {vc: count for vc, count in native.items() if vc not in fixed}
        budget = total - sum(fixed.values())
        weight = sum(free.values())
        if not free or budget <= 0 or not weight:
            return {vc: fixed.get(vc, floors[vc]) for vc in native}
        ideal = {vc: budget * count / weight for vc, count in free.items()}
        below = {vc for vc, part in ideal.items() if part < floors[vc]}
        if not below:
            break
        fixed.update({vc: floors[vc] for vc in below})
    nodes = {vc: math.floor(part) for vc, part in ideal.items()}
    odd = budget - sum(nodes.values())
    for vc in sorted(ideal, key=lambda v: (nodes[v] - ideal[v], v))[:odd]:
        nodes[vc] += 1
    return {vc: fixed.get(vc, nodes.get(vc, 0)) for vc in native}


def nodes_of(cluster: Cluster) -> list[Node]:
    """The cluster's nodes, `<vc>-<index>`, all in `POOL`."""
    return [
        Node(
            name=f"{vc}-{index:02d}",
            pool=POOL,
            gpus=tuple(
                GPU(index=i, uuid=f"{vc}-{index:02d}-{i}", model="P100", memory_mib=_GPU_MIB)
                for i in range(GPUS_PER_NODE)
            ),
        )
        for vc, count in sorted(cluster.vc_nodes.items())
        for index in range(count)
    ]


def queues_of(policy: str, cluster: Cluster) -> list[Queue]:
    """The queues of `policy`; see the module docstring."""
    if policy == "fifo":
        return [Queue(name=_SHARED)]
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
    queues = []
    for vc in sorted(cluster.vc_nodes):
        gpus = float(cluster.quota_of(vc))
        limit = gpus if policy == "static" else None
        queues.append(Queue(name=vc, quotas=(PoolQuota(pool=POOL, quota=gpus, limit=limit),)))
    return queues


def jobs_of(trace: PhillyTrace, policy: str) -> list[ReplayJob]:
    """The trace's jobs as gangs, in submission order, queued as `policy` says."""
    jobs = []
    for job in trace.jobs:
        pods = math.ceil(job.gpus / GPUS_PER_NODE)
        workload = Workload(
            name=job.name,
            queue=_SHARED if policy == "fifo" else job.vc,
            kind=Kind.TRAIN,
            request=Request(gpus=math.ceil(job.gpus / pods)),
            pods=pods,
            submitted_at=job.submitted_seconds,
        )
        jobs.append(ReplayJob(workload, job.vc, job.submitted_seconds, job.duration_seconds))
    return jobs


def run_policy(
    trace: PhillyTrace,
    cluster: Cluster,
    policy: str,
    settings: EngineSettings,
    *,
    decider_factory: Callable[[list[Node], list[Queue], Policy], Decider] = new_decider,
    skip_idle_cycles: bool = True,
    progress: Callable[[float, int], None] | None = None,
    faults: Faults | None = None,
) -> PolicyRun:
    """Replay the whole trace under `policy` on `cluster` (idle cycles skipped: see `IdleGate`).

    `faults` injects failed patches and crashed pods (see `replay`).
    """
    nodes = nodes_of(cluster)
    queues = queues_of(policy, cluster)
    decider = decider_factory(nodes, queues, Policy())
    gate = IdleGate(queues, POOL, cluster.gpus) if skip_idle_cycles else None
    quotas = {vc: cluster.quota_of(vc) for vc in cluster.vc_nodes}
    window = trace.jobs[-1].submitted_seconds if trace.jobs else 0.0
    ledger = GpuTimeLedger(total_gpus=cluster.gpus, quotas=quotas, window_end=window)
    jobs = jobs_of(trace, policy)
    outcome = replay(jobs, decider, ledger, settings, gate=gate, progress=progress, faults=faults)
    return PolicyRun(
        policy, cluster, outcome.records, ledger, outcome.cycles, outcome.skipped_cycles, settings
    )
