"""Builders for the core's test objects, in the spirit of Kubernetes' test wrappers.

Every builder takes the few arguments a test cares about and fills the rest with defaults that
are valid and unremarkable, so a test reads as the situation it sets up:

    nodes = [make_node("n1", gpus=8), make_node("n2", gpus=4, model="A100", pool="a100")]
    queues = [make_queue("team-a", quota=4), make_queue("team-b", quota=4)]
    workloads = [make_step("train", "team-a", gpus=2, pods=2)]

GPU uuids are `<node>-gpu<index>`, so a test can name them (`gpu_of("n1", 0)`) or place pods by
index (`pod_on("n1", 0, 1)`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from scheduler_service.core import (
    GPU,
    Allocation,
    GpuSlice,
    Kind,
    Node,
    Plan,
    PodAllocation,
    Policy,
    PoolQuota,
    Queue,
    Reason,
    Request,
    Snapshot,
    TopologyWish,
    Workload,
    WorkloadState,
    check_plan,
    schedule,
)

H100_MIB = 81920
A100_MIB = 40960


def gpu_of(node: str, index: int) -> str:
    """The uuid `make_node` gives GPU `index` of `node`."""
    return f"{node}-gpu{index}"


def make_node(
    name: str,
    gpus: int = 8,
    model: str = "H100",
    pool: str = "h100",
    memory_mib: int = H100_MIB,
    *,
    topology: Mapping[str, str] | None = None,
    numa_groups: int = 1,
    cpu_milli: int = 64_000,
    node_memory_mib: int = 512 * 1024,
    labels: Mapping[str, str] | None = None,
    taints: Iterable[str] = (),
    ready: bool = True,
) -> Node:
    """A node of `gpus` GPUs of `model` with `memory_mib` each, in `pool`.

    `topology` maps levels to values, widest first (`{"block": "b1", "rack": "r1"}`); GPUs are
    split evenly over `numa_groups` NUMA groups.
    """
    return Node(
        name=name,
        pool=pool,
        gpus=tuple(
            GPU(
                index=i,
                uuid=gpu_of(name, i),
                model=model,
                memory_mib=memory_mib,
                numa_node=i * numa_groups // gpus,
            )
            for i in range(gpus)
        ),
        cpu_milli=cpu_milli,
        memory_mib=node_memory_mib,
        labels=tuple((labels or {}).items()),
        taints=tuple(taints),
        topology=tuple((topology or {}).items()),
        ready=ready,
    )


def make_queue(
    name: str,
    parent: str | None = None,
    *,
    quota: float | None = None,
    limit: float | None = None,
    weight: float = 1.0,
    pool: str = "h100",
    quotas: Iterable[PoolQuota] = (),
    priority: int = 0,
    reclaim_min_runtime_seconds: float | None = None,
    preempt_min_runtime_seconds: float | None = None,
) -> Queue:
    """A queue; `quota`/`limit`/`weight` give it one `PoolQuota` in `pool`, `quotas` more."""
    entries = list(quotas)
    if quota is not None or limit is not None or weight != 1.0:
        entries.append(
            PoolQuota(pool=pool, quota=quota or 0.0, limit=limit, over_quota_weight=weight)
        )
    return Queue(
        name=name,
        parent=parent,
        priority=priority,
        quotas=tuple(entries),
        reclaim_min_runtime_seconds=reclaim_min_runtime_seconds,
        preempt_min_runtime_seconds=preempt_min_runtime_seconds,
    )


def make_step(
    name: str,
    queue: str = "team",
    *,
    gpus: int | None = None,
    slice: tuple[int, int] | None = None,
    pods: int = 1,
    kind: Kind = Kind.TRAIN,
    priority: int = 0,
    submitted_at: float = 0.0,
    pools: Iterable[str] = (),
    models: Iterable[str] = (),
    topology: str | None = None,
    topology_required: bool = True,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Iterable[str] = (),
    preemptible: bool | None = None,
    cpu_milli: int = 0,
    memory_mib: int = 0,
) -> Workload:
    """A pending step, or a gang of `pods` identical pods.

    Each pod asks for `gpus` whole GPUs (default 1), or a `slice` of (memory MiB, compute
    percent) of one GPU; `topology` names the level to keep the gang inside.
    """
    if slice is not None:
        request = Request(
            gpu_memory_mib=slice[0],
            gpu_compute_percent=slice[1],
            cpu_milli=cpu_milli,
            memory_mib=memory_mib,
        )
    else:
        request = Request(
            gpus=1 if gpus is None else gpus, cpu_milli=cpu_milli, memory_mib=memory_mib
        )
    return Workload(
        name=name,
        queue=queue,
        kind=kind,
        request=request,
        pods=pods,
        priority=priority,
        submitted_at=submitted_at,
        pools=tuple(pools),
        models=tuple(models),
        topology=None if topology is None else TopologyWish(topology, topology_required),
        node_selector=tuple((node_selector or {}).items()),
        tolerations=tuple(tolerations),
        preemptible=preemptible,
    )


def pod_on(node: str, *gpus: int, slice: tuple[int, int] | None = None) -> PodAllocation:
    """One pod on `node`'s GPUs of the given indexes; `slice` is its (memory MiB, compute %)."""
    return PodAllocation(
        node=node,
        gpus=tuple(gpu_of(node, i) for i in gpus),
        slice=None if slice is None else GpuSlice(memory_mib=slice[0], compute_percent=slice[1]),
    )


def run(
    workload: Workload, allocation: Allocation | PodAllocation, started_at: float = 0.0
) -> Workload:
    """`workload` RUNNING on `allocation` (one `PodAllocation` is taken as a one-pod allocation)."""
    pods = (allocation,) if isinstance(allocation, PodAllocation) else allocation
    return replace(
        workload, state=WorkloadState.RUNNING, allocation=tuple(pods), started_at=started_at
    )


def evicting(workload: Workload) -> Workload:
    """A RUNNING `workload` on its way out: it keeps its GPUs until its pods are gone."""
    assert workload.state is WorkloadState.RUNNING
    return replace(workload, state=WorkloadState.EVICTING)


def make_snapshot(
    nodes: Iterable[Node],
    queues: Iterable[Queue],
    workloads: Iterable[Workload] = (),
    policy: Policy | None = None,
) -> Snapshot:
    """A snapshot of the given parts (the default policy when none is given)."""
    return Snapshot(
        nodes=tuple(nodes),
        queues=tuple(queues),
        workloads=tuple(workloads),
        policy=policy or Policy(),
    )


def apply(snapshot: Snapshot, plan: Plan, now: float) -> Snapshot:
    """The next snapshot, as a driver would report it once `plan` is carried out.

    Admitted workloads become RUNNING with `started_at=now`; evicted ones become EVICTING and
    keep their GPUs (the driver reports them gone later: see `complete_evictions`).
    """
    admitted = {a.workload: a.allocation for a in plan.admissions}
    evicted = {e.workload for e in plan.evictions}

    def after(workload: Workload) -> Workload:
        if workload.name in admitted:
            return run(workload, admitted[workload.name], started_at=now)
        if workload.name in evicted:
            return evicting(workload)
        return workload

    return replace(snapshot, workloads=tuple(after(w) for w in snapshot.workloads))


def back_to_pending(workload: Workload) -> Workload:
    """`workload` returned to PENDING (evicted, or its node lost), without an allocation."""
    return replace(workload, state=WorkloadState.PENDING, allocation=None, started_at=None)


def complete_evictions(snapshot: Snapshot) -> Snapshot:
    """Every EVICTING workload's pods are gone: it is PENDING again."""
    return replace(
        snapshot,
        workloads=tuple(
            back_to_pending(w) if w.state is WorkloadState.EVICTING else w
            for w in snapshot.workloads
        ),
    )


LATER = 1000.0
"""`decide`'s default time: well after the builders' start and submission times (0), so every
minimum runtime a test sets has passed unless the test passes an earlier `now`."""


def decide(snapshot: Snapshot, now: float = LATER) -> Plan:
    """The plan for `snapshot` at `now`; fails the test if it breaks an invariant (`check_plan`)."""
    plan = schedule(snapshot, now)
    assert check_plan(snapshot, plan) == []
    return plan


def decide_workloads(
    nodes: Iterable[Node], queues: Iterable[Queue], *workloads: Workload, now: float = LATER
) -> Plan:
    """`decide` on a snapshot of `nodes`, `queues` and `workloads` (the default policy)."""
    return decide(make_snapshot(nodes, queues, workloads), now)


def schedule_and_apply(snapshot: Snapshot, now: float) -> tuple[Plan, Snapshot]:
    """One cycle: the plan for `snapshot`, and the snapshot after it."""
    plan = schedule(snapshot, now)
    return plan, apply(snapshot, plan, now)


def admitted(plan: Plan) -> dict[str, Allocation]:
    """The plan's admissions, by workload name."""
    return {a.workload: a.allocation for a in plan.admissions}


def reason(plan: Plan, workload: str) -> Reason:
    """Why `workload` waits in `plan` (fails the test when it is not pending)."""
    found = plan.reason_for(workload)
    assert found is not None, f"{workload} is not pending in the plan"
    return found


def nodes_of(allocation: Allocation) -> list[str]:
    """The node of each pod, in pod order."""
    return [pod.node for pod in allocation]
