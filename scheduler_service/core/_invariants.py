"""DESIGN.md's invariants, checked on a plan applied to the snapshot it was made for.

`check_plan(snapshot, plan)` returns every violation it finds, an empty list for a sound plan.
The simulator runs it after every step and the property tests after every cycle, so it recounts
everything from the snapshot's frozen values and shares no bookkeeping with the cycle (`_state`):
a bug in the cycle's accounting cannot hide itself by being counted the same way twice.

The world after the plan, as the checker sees it:

- admitted workloads hold their allocations, together with everything RUNNING or EVICTING in the
  snapshot; evictions free nothing yet (an evicted workload keeps its GPUs until its pods are
  gone);
- a queue's usage in a pool is what its subtree's RUNNING workloads that are not evicted plus its
  admissions count against quota: per pod `Request.milli_gpus` on the pool's smallest GPU
  memory. EVICTING workloads no longer count: they are on their way back to pending.

Shape checks (node ready, right GPU count, share equal to the request, pools, models, labels,
taints) apply to admissions only: RUNNING work was placed by earlier cycles, and a node may have
gone not ready under it since. Over-commitment is checked on everything, because a plan that adds
to an over-committed GPU is as wrong as one that over-commits it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

from scheduler_service.core._model import (
    GPU,
    Allocation,
    Node,
    PodAllocation,
    Snapshot,
    Workload,
    WorkloadState,
    gpus_to_milli,
)
from scheduler_service.core._plan import EvictionCause, Plan, format_gpus

__all__ = ["Violation", "check_plan"]

_FULL_PERCENT = 100


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant: which one (`invariant`, one of the names below) and the numbers."""

    WORKLOAD_STATE: ClassVar[str] = "workload-state"
    """A workload lost, duplicated, or named by the plan in a state it is not in."""
    ALLOCATION: ClassVar[str] = "allocation"
    """An admission's pod is not on a ready node, not on its GPUs, or not the size it asked for."""
    TARGET: ClassVar[str] = "target"
    """An admission is placed outside the pools, models, labels or taints the workload accepts."""
    OVERCOMMIT: ClassVar[str] = "overcommit"
    """A GPU, a GPU slice or a node's CPU or memory is given out more than once over."""
    GANG: ClassVar[str] = "gang"
    """An admission does not place every pod of its gang, or spreads it over pools."""
    TOPOLOGY: ClassVar[str] = "topology"
    """A gang that requires one topology domain is spread over several, or placed outside any."""
    NON_PREEMPTIBLE_EVICTED: ClassVar[str] = "non-preemptible-evicted"
    """Work that is not preemptible (build steps, protected inference) is evicted."""
    RECLAIM_BELOW_QUOTA: ClassVar[str] = "reclaim-below-quota"
    """Reclaim takes a queue below its quota (or below what it held, if that was less)."""
    OVER_LIMIT: ClassVar[str] = "over-limit"
    """An admission takes a queue, or one of its ancestors, past its limit."""
    NON_PREEMPTIBLE_OVER_QUOTA: ClassVar[str] = "non-preemptible-over-quota"
    """Non-preemptible admissions take a queue's non-preemptible usage past its quota."""

    invariant: str
    message: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.message}"


def check_plan(snapshot: Snapshot, plan: Plan) -> list[Violation]:
    """Every invariant `plan` breaks when applied to `snapshot`; see the module docstring.

    Pure and total: it never raises on a bad plan (that is what it reports), and the order of the
    violations is deterministic (by invariant check, then by name).
    """
    world = _World(snapshot)
    violations = _check_states(world, plan)
    admitted = _valid_admissions(world, plan)
    evicted = _valid_evictions(world, plan)
    for workload, allocation in admitted:
        violations += _check_admission(world, workload, allocation)
    violations += _check_overcommit(world, admitted)
    violations += _check_evictions(world, plan)
    violations += _check_queues(world, plan, admitted, evicted)
    return violations


class _World:
    """Indexes over the snapshot that every check needs."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.nodes: dict[str, Node] = {node.name: node for node in snapshot.nodes}
        self.gpus: dict[str, tuple[Node, GPU]] = {
            gpu.uuid: (node, gpu) for node in snapshot.nodes for gpu in node.gpus
        }
        self.workloads: dict[str, Workload] = {w.name: w for w in snapshot.workloads}
        self.queues = snapshot.queue_map()
        pool_memory: dict[str, int] = {}
        for node in snapshot.nodes:
            for gpu in node.gpus:
                pool_memory[node.pool] = min(
                    pool_memory.get(node.pool, gpu.memory_mib), gpu.memory_mib
                )
        self.pool_memory_mib = pool_memory

    def ancestry(self, queue: str) -> Iterator[str]:
        """`queue` and its ancestors, leaf first; nothing for a queue that does not exist."""
        current: str | None = queue
        while current is not None and current in self.queues:
            yield current
            current = self.queues[current].parent

    def pool_of(self, allocation: Allocation) -> str | None:
        """The pool of the first pod's node (None for an unknown node or an empty allocation)."""
        if not allocation or allocation[0].node not in self.nodes:
            return None
        return self.nodes[allocation[0].node].pool

    def charge(self, workload: Workload, pool: str) -> int:
        """What `workload` counts against quota in `pool`, in milli-GPUs."""
        reference = self.pool_memory_mib.get(pool, 1)
        return workload.request.milli_gpus(reference) * workload.pods


# -- every workload in exactly one state ------------------------------------------------------


def _check_states(world: _World, plan: Plan) -> list[Violation]:
    found: list[Violation] = []

    def bad(message: str) -> None:
        found.append(Violation(Violation.WORKLOAD_STATE, message))

    admitted = Counter(a.workload for a in plan.admissions)
    pending = Counter(p.workload for p in plan.pending)
    evicted = Counter(e.workload for e in plan.evictions)
    for what, names, wanted in (
        ("admits", admitted, WorkloadState.PENDING),
        ("lists as pending", pending, WorkloadState.PENDING),
        ("evicts", evicted, WorkloadState.RUNNING),
    ):
        for name, count in sorted(names.items()):
            workload = world.workloads.get(name)
            if workload is None:
                bad(f"the plan {what} {name!r}, which is not in the snapshot")
            elif workload.state is not wanted:
                bad(f"the plan {what} {name!r}, which is {workload.state}, not {wanted}")
            if count > 1:
                bad(f"the plan {what} {name!r} {count} times")
    for workload in sorted(world.workloads.values(), key=lambda w: w.name):
        if workload.state is not WorkloadState.PENDING:
            continue
        places = admitted[workload.name] + pending[workload.name]
        if places == 0:
            bad(f"pending workload {workload.name!r} is lost: neither admitted nor pending")
        elif admitted[workload.name] and pending[workload.name]:
            bad(f"workload {workload.name!r} is both admitted and pending")
    for eviction in plan.evictions:
        beneficiary = world.workloads.get(eviction.beneficiary)
        if beneficiary is None or beneficiary.state is not WorkloadState.PENDING:
            bad(
                f"eviction of {eviction.workload!r} is for {eviction.beneficiary!r}, "
                "which is not a pending workload of the snapshot"
            )
        elif admitted[eviction.beneficiary]:
            bad(
                f"eviction of {eviction.workload!r} is for {eviction.beneficiary!r}, which the "
                "same plan admits: room being made must not be needed by admitted work"
            )
    return found


def _valid_admissions(world: _World, plan: Plan) -> list[tuple[Workload, Allocation]]:
    """Admissions of pending workloads of the snapshot, first of each name, in plan order."""
    seen: set[str] = set()
    valid = []
    for admission in plan.admissions:
        workload = world.workloads.get(admission.workload)
        if workload is None or workload.state is not WorkloadState.PENDING:
            continue
        if admission.workload in seen:
            continue
        seen.add(admission.workload)
        valid.append((workload, admission.allocation))
    return valid


def _valid_evictions(world: _World, plan: Plan) -> dict[str, Workload]:
    """Evicted workloads that are RUNNING in the snapshot, by name."""
    evicted: dict[str, Workload] = {}
    for eviction in plan.evictions:
        workload = world.workloads.get(eviction.workload)
        if workload is not None and workload.state is WorkloadState.RUNNING:
            evicted[workload.name] = workload
    return evicted


# -- allocation shape, target and gangs, per admission -----------------------------------------


def _check_admission(world: _World, workload: Workload, allocation: Allocation) -> list[Violation]:
    found: list[Violation] = []
    name = workload.name
    if len(allocation) != workload.pods:
        found.append(
            Violation(
                Violation.GANG,
                f"{name!r} is a gang of {workload.pods} pod(s) but is admitted with "
                f"{len(allocation)} pod allocation(s)",
            )
        )
    pools = sorted({world.nodes[pod.node].pool for pod in allocation if pod.node in world.nodes})
    if len(pools) > 1:
        found.append(Violation(Violation.GANG, f"{name!r} is spread over pools {', '.join(pools)}"))
    for index, pod in enumerate(allocation):
        found += _check_pod(world, workload, index, pod)
    wish = workload.topology
    if wish is not None and wish.required and workload.pods > 1:
        domains = {
            world.nodes[pod.node].domain(wish.level)
            for pod in allocation
            if pod.node in world.nodes
        }
        if None in domains or len(domains) > 1:
            shown = sorted(domain or f"(no {wish.level})" for domain in domains)
            found.append(
                Violation(
                    Violation.TOPOLOGY,
                    f"{name!r} requires one {wish.level} but its {workload.pods} pods are in "
                    f"{len(domains)}: {', '.join(shown)}",
                )
            )
    return found


def _check_pod(
    world: _World, workload: Workload, index: int, pod: PodAllocation
) -> list[Violation]:
    found: list[Violation] = []
    where = f"pod {index} of {workload.name!r}"

    def bad(invariant: str, message: str) -> None:
        found.append(Violation(invariant, f"{where}: {message}"))

    node = world.nodes.get(pod.node)
    if node is None:
        bad(Violation.ALLOCATION, f"node {pod.node!r} does not exist")
        return found
    if not node.ready:
        bad(Violation.ALLOCATION, f"node {node.name!r} is not ready")
    for uuid in pod.gpus:
        owner = world.gpus.get(uuid)
        if owner is None or owner[0].name != node.name:
            bad(Violation.ALLOCATION, f"GPU {uuid!r} is not on node {node.name!r}")
    if len(set(pod.gpus)) != len(pod.gpus):
        bad(Violation.ALLOCATION, f"names a GPU twice: {list(pod.gpus)}")
    request = workload.request
    if request.is_slice:
        if len(pod.gpus) != 1:
            bad(Violation.ALLOCATION, f"a slice needs exactly 1 GPU, got {len(pod.gpus)}")
        share = pod.slice
        if share is None or (share.memory_mib, share.compute_percent) != (
            request.gpu_memory_mib,
            request.gpu_compute_percent,
        ):
            given = "none" if share is None else f"{share.compute_percent}%/{share.memory_mib} MiB"
            bad(
                Violation.ALLOCATION,
                f"slice share {given}, requested {request.gpu_compute_percent}%/"
                f"{request.gpu_memory_mib} MiB",
            )
    else:
        if len(pod.gpus) != request.gpus:
            bad(Violation.ALLOCATION, f"{len(pod.gpus)} GPU(s), requested {request.gpus}")
        if pod.slice is not None:
            bad(Violation.ALLOCATION, "a whole-GPU pod carries a slice share")
    if workload.pools and node.pool not in workload.pools:
        bad(Violation.TARGET, f"pool {node.pool!r} is not one of {list(workload.pools)}")
    if workload.models and node.gpu_model not in workload.models:
        bad(Violation.TARGET, f"model {node.gpu_model!r} is not one of {list(workload.models)}")
    labels = dict(node.labels)
    for key, value in workload.node_selector:
        if labels.get(key) != value:
            bad(Violation.TARGET, f"node {node.name!r} lacks label {key}={value}")
    for taint in node.taints:
        if taint not in workload.tolerations:
            bad(Violation.TARGET, f"node {node.name!r} has taint {taint!r}, not tolerated")
    return found


# -- nothing over-committed -------------------------------------------------------------------


@dataclass(slots=True)
class _GpuUse:
    whole: list[str]
    slices: list[tuple[str, int, int]]
    """(holder, compute percent, memory MiB) of each slice."""


def _check_overcommit(
    world: _World, admitted: list[tuple[Workload, Allocation]]
) -> list[Violation]:
    holders: list[tuple[Workload, Allocation]] = [
        (w, w.allocation) for w in world.snapshot.workloads if w.allocation is not None
    ]
    holders += admitted
    gpu_use: dict[str, _GpuUse] = {}
    cpu_milli: Counter[str] = Counter()
    memory_mib: Counter[str] = Counter()
    for workload, allocation in holders:
        request = workload.request
        for pod in allocation:
            cpu_milli[pod.node] += request.cpu_milli
            memory_mib[pod.node] += request.memory_mib
            for uuid in pod.gpus:
                use = gpu_use.setdefault(uuid, _GpuUse([], []))
                if request.is_slice:
                    share = pod.slice
                    compute = share.compute_percent if share else request.gpu_compute_percent
                    memory = share.memory_mib if share else request.gpu_memory_mib
                    use.slices.append((workload.name, compute, memory))
                else:
                    use.whole.append(workload.name)
    found: list[Violation] = []

    def bad(message: str) -> None:
        found.append(Violation(Violation.OVERCOMMIT, message))

    for uuid, use in sorted(gpu_use.items()):
        if uuid not in world.gpus:
            continue  # reported as an allocation problem
        node, gpu = world.gpus[uuid]
        where = f"GPU {uuid} on node {node.name}"
        if len(use.whole) > 1:
            bad(f"{where} is held whole by {len(use.whole)} pods: {', '.join(use.whole)}")
        if use.whole and use.slices:
            sharers = ", ".join(holder for holder, _, _ in use.slices)
            bad(f"{where} is held whole by {use.whole[0]} and shared by slices of {sharers}")
        compute = sum(c for _, c, _ in use.slices)
        if compute > _FULL_PERCENT:
            bad(f"{where}: slices take {compute}% compute, more than 100%")
        memory = sum(m for _, _, m in use.slices)
        if memory > gpu.memory_mib:
            bad(f"{where}: slices take {memory} MiB, the GPU has {gpu.memory_mib} MiB")
    for name in sorted(cpu_milli.keys() | memory_mib.keys()):
        node_spec = world.nodes.get(name)
        if node_spec is None:
            continue
        if cpu_milli[name] > node_spec.cpu_milli:
            bad(f"node {name}: pods take {cpu_milli[name]}m CPU, it has {node_spec.cpu_milli}m")
        if memory_mib[name] > node_spec.memory_mib:
            bad(
                f"node {name}: pods take {memory_mib[name]} MiB memory, "
                f"it has {node_spec.memory_mib} MiB"
            )
    return found


# -- evictions --------------------------------------------------------------------------------


def _check_evictions(world: _World, plan: Plan) -> list[Violation]:
    found = []
    for eviction in plan.evictions:
        workload = world.workloads.get(eviction.workload)
        if workload is not None and not workload.is_preemptible:
            found.append(
                Violation(
                    Violation.NON_PREEMPTIBLE_EVICTED,
                    f"{workload.name!r} ({workload.kind} step, not preemptible) is evicted "
                    f"({eviction.cause}) for {eviction.beneficiary!r}",
                )
            )
    return found


# -- queues: limits, quotas, reclaim ----------------------------------------------------------


_Usage = Counter[tuple[str, str]]
"""Milli-GPUs by (queue, pool), a queue counting its whole subtree."""


def _check_queues(
    world: _World,
    plan: Plan,
    admitted: list[tuple[Workload, Allocation]],
    evicted: Mapping[str, Workload],
) -> list[Violation]:
    before: _Usage = Counter()
    before_protected: _Usage = Counter()
    for workload in world.snapshot.workloads:
        if workload.state is WorkloadState.RUNNING and workload.allocation is not None:
            _add(world, before, workload, workload.allocation)
            if not workload.is_preemptible:
                _add(world, before_protected, workload, workload.allocation)
    added: _Usage = Counter()
    added_protected: _Usage = Counter()
    for workload, allocation in admitted:
        _add(world, added, workload, allocation)
        if not workload.is_preemptible:
            _add(world, added_protected, workload, allocation)
    removed: _Usage = Counter()
    reclaimed: _Usage = Counter()
    reclaim_checks: set[tuple[str, str]] = set()
    for eviction in plan.evictions:
        victim = evicted.get(eviction.workload)
        if victim is None or victim.allocation is None:
            continue
        _add(world, removed, victim, victim.allocation)
        if eviction.cause is not EvictionCause.RECLAIM:
            continue
        pool = world.pool_of(victim.allocation)
        beneficiary = world.workloads.get(eviction.beneficiary)
        # Queues shared with the beneficiary keep the GPUs in the family: not a reclaim for them,
        # neither checked nor charged with what moves inside.
        shared = set(world.ancestry(beneficiary.queue)) if beneficiary else set()
        for queue in world.ancestry(victim.queue):
            if queue in shared or pool is None:
                break
            reclaimed[queue, pool] += world.charge(victim, pool)
            reclaim_checks.add((queue, pool))

    found: list[Violation] = []
    after = before + added
    after.subtract(removed)
    for queue, pool in sorted(added):
        entry = world.queues[queue].quota_in(pool)
        if entry.limit is not None and after[queue, pool] > gpus_to_milli(entry.limit):
            found.append(
                Violation(
                    Violation.OVER_LIMIT,
                    f"queue {queue} holds {format_gpus(after[queue, pool])} GPUs in pool {pool} "
                    f"after admitting {format_gpus(added[queue, pool])}, "
                    f"past its limit of {format_gpus(gpus_to_milli(entry.limit))}",
                )
            )
    for queue, pool in sorted(added_protected):
        explicit = any(q.pool == pool for q in world.queues[queue].quotas)
        if not explicit and not _is_leaf(world, queue):
            continue  # a parent without an entry for the pool passes its children's quotas on
        quota = gpus_to_milli(world.queues[queue].quota_in(pool).quota)
        protected = before_protected[queue, pool] + added_protected[queue, pool]
        if protected > quota:
            found.append(
                Violation(
                    Violation.NON_PREEMPTIBLE_OVER_QUOTA,
                    f"queue {queue} runs {format_gpus(protected)} GPUs of non-preemptible work "
                    f"in pool {pool} after admitting {format_gpus(added_protected[queue, pool])},"
                    f" past its quota of {format_gpus(quota)}",
                )
            )
    for queue, pool in sorted(reclaim_checks):
        quota = gpus_to_milli(world.queues[queue].quota_in(pool).quota)
        floor = min(quota, before[queue, pool])
        left = before[queue, pool] + added[queue, pool] - reclaimed[queue, pool]
        if left < floor:
            found.append(
                Violation(
                    Violation.RECLAIM_BELOW_QUOTA,
                    f"reclaim takes queue {queue} in pool {pool} from "
                    f"{format_gpus(before[queue, pool])} to {format_gpus(left)} GPUs, below "
                    f"{format_gpus(floor)} (its quota is {format_gpus(quota)})",
                )
            )
    return found


def _add(world: _World, usage: _Usage, workload: Workload, allocation: Allocation) -> None:
    pool = world.pool_of(allocation)
    if pool is None:
        return
    charge = world.charge(workload, pool)
    for queue in world.ancestry(workload.queue):
        usage[queue, pool] += charge


def _is_leaf(world: _World, queue: str) -> bool:
    return not any(q.parent == queue for q in world.snapshot.queues)
