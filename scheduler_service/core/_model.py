"""The snapshot the core decides on: nodes, GPUs, queues and workloads, as frozen values.

Drivers (the Kubernetes driver, the simulator, the local runner) translate their world into
these types; the core never sees a pod, a trace line or a process. Every type validates itself
on construction and raises `SnapshotError` with a message that says what is wrong and what to do,
so a driver bug is caught at the seam and not deep inside a cycle.

Units: GPU amounts that can be fractional (quotas, fair shares, slices) are carried inside the
core as integer milli-GPUs (`MILLI_GPU` per GPU) so that arithmetic is exact and deterministic;
users see GPUs.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "GPU",
    "MILLI_GPU",
    "Allocation",
    "GpuSlice",
    "Kind",
    "Node",
    "PodAllocation",
    "Policy",
    "PoolQuota",
    "Queue",
    "Request",
    "Snapshot",
    "SnapshotError",
    "TopologyWish",
    "Workload",
    "WorkloadState",
]

MILLI_GPU = 1000
"""Milli-GPUs in one GPU: the integer unit of every GPU amount inside the core."""


class SnapshotError(ValueError):
    """The snapshot handed to the core is inconsistent; the message names the offending part."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SnapshotError(message)


def gpus_to_milli(gpus: float) -> int:
    """Convert a user-facing GPU amount to milli-GPUs, rounding to the nearest milli-GPU."""
    return round(gpus * MILLI_GPU)


@dataclass(frozen=True, slots=True)
class GPU:
    """One device of a node. `numa_node` groups GPUs that share a NUMA node / NVLink island."""

    index: int
    uuid: str
    model: str
    memory_mib: int
    numa_node: int = 0

    def __post_init__(self) -> None:
        _require(self.index >= 0, f"GPU {self.uuid!r}: index must be >= 0, got {self.index}")
        _require(bool(self.uuid), "GPU: uuid must not be empty")
        _require(bool(self.model), f"GPU {self.uuid!r}: model must not be empty")
        _require(
            self.memory_mib > 0, f"GPU {self.uuid!r}: memory_mib must be > 0, got {self.memory_mib}"
        )


@dataclass(frozen=True, slots=True)
class Node:
    """A machine in one pool.

    `topology` is the node's path from the widest domain to the narrowest, as (level, value)
    pairs, e.g. `(("block", "b1"), ("rack", "r3"))`. `taints` lists taint keys; a workload must
    tolerate every one of them. A node that is not `ready` receives no new work.
    """

    name: str
    pool: str
    gpus: tuple[GPU, ...] = ()
    cpu_milli: int = 64_000
    memory_mib: int = 512 * 1024
    labels: tuple[tuple[str, str], ...] = ()
    taints: tuple[str, ...] = ()
    topology: tuple[tuple[str, str], ...] = ()
    ready: bool = True

    def __post_init__(self) -> None:
        _require(bool(self.name), "node: name must not be empty")
        _require(bool(self.pool), f"node {self.name!r}: pool must not be empty")
        _require(
            self.cpu_milli >= 0 and self.memory_mib >= 0,
            f"node {self.name!r}: cpu_milli and memory_mib must be >= 0",
        )
        models = {gpu.model for gpu in self.gpus}
        _require(
            len(models) <= 1,
            f"node {self.name!r}: all GPUs of a node must be one model, got {sorted(models)}",
        )
        uuids = [gpu.uuid for gpu in self.gpus]
        _require(len(set(uuids)) == len(uuids), f"node {self.name!r}: duplicate GPU uuids")
        levels = [level for level, _ in self.topology]
        _require(
            len(set(levels)) == len(levels),
            f"node {self.name!r}: topology levels must be distinct, got {levels}",
        )

    @property
    def gpu_model(self) -> str:
        """The model of this node's GPUs, or "" for a node without GPUs."""
        return self.gpus[0].model if self.gpus else ""

    def domain(self, level: str) -> str | None:
        """The node's domain at `level`, as the path down to it, or None if it has no such level.

        The path (not the bare value) identifies a domain, so rack "r1" of block "b1" and rack
        "r1" of block "b2" are different domains.
        """
        path: list[str] = []
        for name, value in self.topology:
            path.append(f"{name}={value}")
            if name == level:
                return "/".join(path)
        return None


@dataclass(frozen=True, slots=True)
class PoolQuota:
    """A queue's entitlement in one pool, in GPUs.

    `quota` is guaranteed; `limit` caps what the queue may hold (None: no cap);
    `over_quota_weight` is the queue's weight when idle GPUs beyond quotas are shared out.
    """

    pool: str
    quota: float = 0.0
    limit: float | None = None
    over_quota_weight: float = 1.0

    def __post_init__(self) -> None:
        _require(bool(self.pool), "pool quota: pool must not be empty")
        _require(
            math.isfinite(self.quota) and self.quota >= 0,
            f"pool quota {self.pool!r}: quota must be a finite number >= 0, got {self.quota}",
        )
        _require(
            self.limit is None or (math.isfinite(self.limit) and self.limit >= self.quota),
            f"pool quota {self.pool!r}: limit must be >= quota ({self.quota}), got {self.limit}",
        )
        _require(
            math.isfinite(self.over_quota_weight) and self.over_quota_weight >= 0,
            f"pool quota {self.pool!r}: over_quota_weight must be >= 0, "
            f"got {self.over_quota_weight}",
        )


@dataclass(frozen=True, slots=True)
class Queue:
    """A node of the queue tree (department > project > user). Workloads go to leaf queues.

    Pools without an entry in `quotas` give the queue no guarantee, no limit and weight 1:
    it may borrow idle GPUs there like anyone else. The min-runtime fields protect the queue's
    freshly started work from reclaim (by other queues) and preemption (inside the queue);
    None takes the snapshot policy's default.
    """

    name: str
    parent: str | None = None
    priority: int = 0
    quotas: tuple[PoolQuota, ...] = ()
    reclaim_min_runtime_seconds: float | None = None
    preempt_min_runtime_seconds: float | None = None

    def __post_init__(self) -> None:
        _require(bool(self.name), "queue: name must not be empty")
        _require(self.parent != self.name, f"queue {self.name!r}: a queue cannot be its own parent")
        pools = [q.pool for q in self.quotas]
        _require(
            len(set(pools)) == len(pools),
            f"queue {self.name!r}: each pool may appear once in quotas, got {pools}",
        )

    def quota_in(self, pool: str) -> PoolQuota:
        """The queue's entitlement in `pool` (the defaults when the pool is not listed)."""
        for quota in self.quotas:
            if quota.pool == pool:
                return quota
        return PoolQuota(pool=pool)


class Kind(enum.StrEnum):
    """What a step is for; it sets the default preemptibility (see DESIGN.md)."""

    BUILD = "build"
    TRAIN = "train"
    INFER = "infer"


_TRAIN = Kind.TRAIN  # a module constant: enum attribute lookup is slow on hot paths


class WorkloadState(enum.StrEnum):
    """Where a workload is. EVICTING still holds its resources until its pods are gone."""

    PENDING = "pending"
    RUNNING = "running"
    EVICTING = "evicting"


@dataclass(frozen=True, slots=True)
class Request:
    """What each pod of a workload needs: `gpus` whole GPUs, or one slice of a GPU.

    A slice is `gpu_memory_mib` of memory and `gpu_compute_percent` of the compute of one GPU;
    slices share a GPU only while the sums of both fit.
    """

    gpus: int = 0
    gpu_memory_mib: int = 0
    gpu_compute_percent: int = 0
    cpu_milli: int = 0
    memory_mib: int = 0

    def __post_init__(self) -> None:
        _require(self.gpus >= 0, f"request: gpus must be >= 0, got {self.gpus}")
        _require(
            self.cpu_milli >= 0 and self.memory_mib >= 0,
            "request: cpu_milli and memory_mib must be >= 0",
        )
        is_slice = self.gpu_memory_mib > 0 or self.gpu_compute_percent > 0
        _require(
            not (is_slice and self.gpus),
            "request: ask for whole GPUs or a slice of one GPU, not both "
            f"(gpus={self.gpus}, gpu_memory_mib={self.gpu_memory_mib}, "
            f"gpu_compute_percent={self.gpu_compute_percent})",
        )
        _require(
            not is_slice or (self.gpu_memory_mib > 0 and 0 < self.gpu_compute_percent <= 100),
            "request: a slice needs gpu_memory_mib > 0 and 0 < gpu_compute_percent <= 100, got "
            f"gpu_memory_mib={self.gpu_memory_mib}, gpu_compute_percent={self.gpu_compute_percent}",
        )

    @property
    def is_slice(self) -> bool:
        """True when the pod asks for a share of one GPU rather than whole GPUs."""
        return self.gpu_compute_percent > 0

    def milli_gpus(self, gpu_memory_mib: int) -> int:
        """What one pod counts against quota, on GPUs of `gpu_memory_mib` memory.

        A slice counts as the larger of its compute share and its memory share, so a slice that
        takes most of a GPU's memory is charged for most of the GPU.
        """
        if not self.is_slice:
            return self.gpus * MILLI_GPU
        compute = self.gpu_compute_percent * MILLI_GPU // 100
        memory = -(-self.gpu_memory_mib * MILLI_GPU // max(gpu_memory_mib, 1))
        return min(MILLI_GPU, max(compute, memory))


@dataclass(frozen=True, slots=True)
class TopologyWish:
    """Keep a gang inside one domain of `level`: required, or preferred when possible."""

    level: str
    required: bool = True


@dataclass(frozen=True, slots=True)
class GpuSlice:
    """The share of one GPU a slice pod was given."""

    memory_mib: int
    compute_percent: int


@dataclass(frozen=True, slots=True)
class PodAllocation:
    """Where one pod of a workload runs: its node, its GPUs, and for a slice its share."""

    node: str
    gpus: tuple[str, ...] = ()
    slice: GpuSlice | None = None


Allocation = tuple[PodAllocation, ...]
"""One `PodAllocation` per pod of the workload, in pod order."""


@dataclass(frozen=True, slots=True)
class Workload:
    """What is admitted as a unit: one step (one pod) or a gang of `pods` identical pods.

    `pools` and `models` list acceptable pools and GPU models in order of preference (empty:
    any). `preemptible` overrides the kind's default. RUNNING and EVICTING workloads carry their
    `allocation` and `started_at`; PENDING ones carry neither.
    """

    name: str
    queue: str
    kind: Kind = Kind.TRAIN
    request: Request = field(default_factory=Request)
    pods: int = 1
    priority: int = 0
    submitted_at: float = 0.0
    pools: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    topology: TopologyWish | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[str, ...] = ()
    preemptible: bool | None = None
    state: WorkloadState = WorkloadState.PENDING
    allocation: Allocation | None = None
    started_at: float | None = None

    def __post_init__(self) -> None:
        _require(bool(self.name), "workload: name must not be empty")
        _require(bool(self.queue), f"workload {self.name!r}: queue must not be empty")
        _require(self.pods >= 1, f"workload {self.name!r}: pods must be >= 1, got {self.pods}")
        placed = self.state is not WorkloadState.PENDING
        _require(
            placed == (self.allocation is not None),
            f"workload {self.name!r}: a {self.state} workload "
            + ("needs an allocation" if placed else "must not carry an allocation"),
        )
        if self.allocation is not None:
            _require(
                len(self.allocation) == self.pods,
                f"workload {self.name!r}: allocation has {len(self.allocation)} pods, "
                f"expected {self.pods}",
            )
            _require(
                self.started_at is not None,
                f"workload {self.name!r}: a placed workload needs started_at",
            )

    @property
    def is_preemptible(self) -> bool:
        """Build steps and inference replicas are protected by default; training is not."""
        if self.preemptible is not None:
            return self.preemptible
        return self.kind is _TRAIN


@dataclass(frozen=True, slots=True)
class Policy:
    """Cluster-wide knobs; queues may override the min-runtime protections."""

    reclaim_min_runtime_seconds: float = 0.0
    preempt_min_runtime_seconds: float = 0.0
    reserve_for_gangs: bool = True


ShapeKey = tuple[Request, tuple[str, ...]]
"""A request and the GPU models it accepts: what the fragmentation score sees of a workload."""


@dataclass(frozen=True, slots=True)
class PoolHistory:
    """What the scheduler learned of one pool's requests (`_mix.RecentRequests`), as values.

    `weights` are the live, decayed weights of the shapes submitted, in units of the next
    submission's weight; `scored` is the mix cycles score against, taken when the pool had seen
    `scored_at` of its `submissions`.
    """

    pool: str
    submissions: int
    weights: tuple[tuple[ShapeKey, float], ...]
    scored: tuple[tuple[ShapeKey, float], ...]
    scored_at: int


@dataclass(frozen=True, slots=True)
class RequestHistory:
    """The request mix the scheduler learned from submissions, per pool (see `_mix`).

    A `Scheduler` learns it as workloads are submitted; a `Snapshot` carries it so that
    `schedule(scheduler.snapshot(), now)` scores placements exactly as the scheduler does.
    """

    pools: tuple[PoolHistory, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one cycle decides on. Validated on construction; order of entries is irrelevant.

    Checks: unique names, queue parents exist and form a tree, running allocations point at
    existing nodes and GPUs. Workloads naming an unknown queue are *not* an error: they stay
    pending with a reason, because that is a user's mistake, not the driver's.
    """

    nodes: tuple[Node, ...] = ()
    queues: tuple[Queue, ...] = ()
    workloads: tuple[Workload, ...] = ()
    policy: Policy = field(default_factory=Policy)
    requests: RequestHistory | None = None
    """What the scheduler learned of recent submissions; None: learn it from `workloads`."""

    def __post_init__(self) -> None:
        _unique("node", [n.name for n in self.nodes])
        _unique("queue", [q.name for q in self.queues])
        _unique("workload", [w.name for w in self.workloads])
        _unique("GPU uuid", [g.uuid for n in self.nodes for g in n.gpus])
        _check_tree({q.name: q.parent for q in self.queues})
        gpus_of = {n.name: {g.uuid for g in n.gpus} for n in self.nodes}
        for workload in self.workloads:
            for pod in workload.allocation or ():
                _require(
                    pod.node in gpus_of,
                    f"workload {workload.name!r}: allocated on unknown node {pod.node!r}",
                )
                unknown = [u for u in pod.gpus if u not in gpus_of[pod.node]]
                _require(
                    not unknown,
                    f"workload {workload.name!r}: GPUs {unknown} are not on node {pod.node!r}",
                )

    def queue_map(self) -> Mapping[str, Queue]:
        """Queues by name."""
        return {q.name: q for q in self.queues}


def _unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        _require(name not in seen, f"snapshot: duplicate {what} {name!r}")
        seen.add(name)


def _check_tree(parents: Mapping[str, str | None]) -> None:
    for name, parent in parents.items():
        _require(
            parent is None or parent in parents,
            f"queue {name!r}: parent {parent!r} does not exist; create it first",
        )
    for start in parents:
        seen = {start}
        parent = parents[start]
        while parent is not None:
            _require(parent not in seen, f"queue {start!r}: parent chain forms a cycle")
            seen.add(parent)
            parent = parents[parent]
