"""The scratch state of one cycle: free resources per node and GPU, usage per queue.

Built once per cycle from a snapshot and mutated as the cycle decides. Every change is a
`take` or a `give` of one workload's allocation, and each undoes the other exactly, so a
what-if (can this gang fit if those workloads leave?) is a few gives, a try, and the takes
back, never a copy of the world.

Indexes keep placement cheap on large clusters: per pool, nodes are bucketed by their number
of whole free GPUs, and partly used GPUs by their free compute percent, so finding the
tightest fit scans a handful of buckets instead of every node; and nodes are grouped by their
*signature* (GPU model, free CPU, sorted free compute of their GPUs), which is all a
fragmentation score depends on, so scoring a pod costs one score per distinct signature (a
few on a cluster of identical nodes) rather than one per node.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field

from scheduler_service.core._model import (
    MILLI_GPU,
    Allocation,
    Node,
    Request,
    Snapshot,
    Workload,
    WorkloadState,
)

__all__ = ["CycleState", "GpuState", "NodeState", "PoolState", "QueueUsage", "Signature"]

_FULL = 100

Signature = tuple[str, int, tuple[int, ...]]
"""A node's (GPU model, free CPU milli, sorted free compute percent of each GPU); a GPU whose
memory is gone counts as full. What a node's fragmentation depends on (`_fragmentation`)."""


class GpuState:
    """One GPU's free share. A GPU with no holders is whole; slices share it while sums fit."""

    __slots__ = (
        "free_compute",
        "free_memory_mib",
        "holders",
        "id",
        "index",
        "memory_mib",
        "node",
        "numa",
        "uuid",
    )

    def __init__(
        self, *, gpu_id: int, node: int, index: int, uuid: str, memory_mib: int, numa: int
    ) -> None:
        self.id = gpu_id
        self.node = node
        self.index = index
        self.uuid = uuid
        self.memory_mib = memory_mib
        self.numa = numa
        self.free_compute = _FULL
        self.free_memory_mib = memory_mib
        self.holders = 0

    def partial_key(self) -> int | None:
        """The partial-bucket a GPU belongs in: its free compute if shared and still usable."""
        if self.holders == 0 or self.free_compute == 0 or self.free_memory_mib == 0:
            return None
        return self.free_compute

    def __repr__(self) -> str:
        return (
            f"<GPU {self.uuid} compute {self.free_compute}% free, "
            f"{self.free_memory_mib}/{self.memory_mib} MiB free, {self.holders} holders>"
        )


class NodeState:
    """One node's free CPU, memory and whole GPUs, and its place in the pool's indexes."""

    __slots__ = (
        "domains",
        "free_cpu_milli",
        "free_memory_mib",
        "free_whole",
        "gpus",
        "id",
        "node",
        "reserved_for",
        "schedulable",
        "signature",
    )

    def __init__(self, node_id: int, node: Node, gpus: list[GpuState]) -> None:
        self.id = node_id
        self.node = node
        self.gpus = gpus
        self.free_cpu_milli = node.cpu_milli
        self.free_memory_mib = node.memory_mib
        self.free_whole = len(gpus)
        self.schedulable = node.ready
        self.reserved_for: str | None = None
        self.domains: dict[str, str | None] = {}
        self.signature: Signature = self.current_signature()

    def current_signature(self) -> Signature:
        """The node's signature as its resources stand now."""
        frees = sorted(g.free_compute if g.free_memory_mib else 0 for g in self.gpus)
        return (self.node.gpu_model, self.free_cpu_milli, tuple(frees))

    def domain(self, level: str) -> str | None:
        """The node's domain at `level` (cached per cycle)."""
        if level not in self.domains:
            self.domains[level] = self.node.domain(level)
        return self.domains[level]

    def free_milli(self) -> int:
        """Free GPU capacity on the node in milli-GPUs (whole GPUs plus free compute shares)."""
        return sum(g.free_compute for g in self.gpus if g.free_memory_mib) * MILLI_GPU // _FULL

    def __repr__(self) -> str:
        return (
            f"<Node {self.node.name} {self.free_whole}/{len(self.gpus)} whole GPUs free, "
            f"cpu {self.free_cpu_milli}m, mem {self.free_memory_mib} MiB>"
        )


@dataclass(slots=True)
class PoolState:
    """The indexes of one pool."""

    name: str
    nodes: list[int] = field(default_factory=list)
    # whole[k] holds the ids of schedulable nodes with exactly k whole free GPUs, sorted: the
    # order never depends on history, so a state rebuilt from a snapshot and one kept up to
    # date event by event place identically.
    whole: list[list[int]] = field(default_factory=list)
    # partial[c] holds the ids of shared GPUs with c percent of compute free, sorted.
    partial: list[list[int]] = field(default_factory=lambda: [[] for _ in range(_FULL)])
    # signatures maps each signature of the pool's schedulable nodes to their ids, sorted.
    signatures: dict[Signature, list[int]] = field(default_factory=dict)
    capacity_milli: int = 0
    free_whole: int = 0
    gpu_memory_mib: int = 0

    def whole_bucket(self, count: int) -> list[int]:
        """The bucket for `count` whole free GPUs, grown on demand."""
        while len(self.whole) <= count:
            self.whole.append([])
        return self.whole[count]


@dataclass(slots=True)
class QueueUsage:
    """What a queue (with its subtree) holds in each pool, in milli-GPUs."""

    allocated: dict[str, int] = field(default_factory=dict)
    non_preemptible: dict[str, int] = field(default_factory=dict)


class CycleState:
    """Free resources and queue usage during one cycle; see the module docstring."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.nodes: list[NodeState] = []
        self.gpus: list[GpuState] = []
        self.node_by_name: dict[str, NodeState] = {}
        self.gpu_by_uuid: dict[str, GpuState] = {}
        self.pools: dict[str, PoolState] = {}
        self.parents = {q.name: q.parent for q in snapshot.queues}
        self._ancestry: dict[str, tuple[str, ...]] = {}
        self.usage: dict[str, QueueUsage] = {q.name: QueueUsage() for q in snapshot.queues}
        for node in sorted(snapshot.nodes, key=lambda n: n.name):
            self._add_node(node)
        for pool in self.pools.values():
            pool.gpu_memory_mib = min(
                (g.memory_mib for n in pool.nodes for g in self.nodes[n].gpus), default=1
            )
        self.placed_pool: dict[str, str] = {}
        """The pool of every RUNNING or EVICTING workload, by name."""
        self.placed_charge: dict[tuple[str, str], int] = {}
        """What RUNNING and EVICTING workloads charge, by (leaf queue, pool): their demand."""
        self._load(snapshot)

    def _load(self, snapshot: Snapshot) -> None:
        """Apply every placed workload in bulk, then build the indexes once.

        Equivalent to `take` for each RUNNING workload and `occupy` for each EVICTING one (an
        evicting workload still holds its GPUs until its pods are gone, but no longer counts for
        its queue: it is on its way back to pending), without moving nodes between buckets
        thousands of times.
        """
        leaf_usage: dict[tuple[str, str, bool], int] = {}
        for workload in snapshot.workloads:
            allocation = workload.allocation
            if allocation is None:
                continue
            request = workload.request
            for pod in allocation:
                node = self.node_by_name[pod.node]
                node.free_cpu_milli -= request.cpu_milli
                node.free_memory_mib -= request.memory_mib
                for uuid in pod.gpus:
                    gpu = self.gpu_by_uuid[uuid]
                    gpu.holders += 1
                    if pod.slice is None:
                        gpu.free_compute -= _FULL
                        gpu.free_memory_mib -= gpu.memory_mib
                    else:
                        gpu.free_compute -= pod.slice.compute_percent
                        gpu.free_memory_mib -= pod.slice.memory_mib
            pool = self.node_by_name[allocation[0].node].node.pool
            self.placed_pool[workload.name] = pool
            charge = self.charge(workload, pool)
            held = (workload.queue, pool)
            self.placed_charge[held] = self.placed_charge.get(held, 0) + charge
            if workload.state is WorkloadState.RUNNING:
                key = (workload.queue, pool, workload.is_preemptible)
                leaf_usage[key] = leaf_usage.get(key, 0) + charge
        for pool_state in self.pools.values():
            pool_state.free_whole = 0
            pool_state.whole = []
            pool_state.signatures = {}
            for node_id in pool_state.nodes:
                node = self.nodes[node_id]
                node.free_whole = sum(1 for g in node.gpus if g.holders == 0)
                node.signature = node.current_signature()
                if not node.schedulable:
                    continue
                pool_state.free_whole += node.free_whole
                pool_state.whole_bucket(node.free_whole).append(node_id)
                pool_state.signatures.setdefault(node.signature, []).append(node_id)
                for gpu in node.gpus:
                    bucket = gpu.partial_key()
                    if bucket is not None:
                        pool_state.partial[bucket].append(gpu.id)
        for (queue, pool_name, preemptible), amount in sorted(leaf_usage.items()):
            for name in self.ancestry(queue):
                usage = self.usage[name]
                usage.allocated[pool_name] = usage.allocated.get(pool_name, 0) + amount
                if not preemptible:
                    usage.non_preemptible[pool_name] = (
                        usage.non_preemptible.get(pool_name, 0) + amount
                    )

    def load_one(self, workload: Workload) -> None:
        """Add one RUNNING or EVICTING workload to a built state (what `_load` does in bulk)."""
        allocation = workload.allocation
        assert allocation is not None
        pool = self.pool_of(allocation)
        self.occupy(workload.request, allocation)
        self.placed_pool[workload.name] = pool
        held = (workload.queue, pool)
        self.placed_charge[held] = self.placed_charge.get(held, 0) + self.charge(workload, pool)
        if workload.state is WorkloadState.RUNNING:
            self.account(workload, pool, +1)

    def unload_one(self, workload: Workload) -> None:
        """Undo `load_one` of the same workload."""
        allocation = workload.allocation
        assert allocation is not None
        pool = self.placed_pool.pop(workload.name)
        self.vacate(workload.request, allocation)
        held = (workload.queue, pool)
        left = self.placed_charge.get(held, 0) - self.charge(workload, pool)
        if left:
            self.placed_charge[held] = left
        else:
            self.placed_charge.pop(held, None)
        if workload.state is WorkloadState.RUNNING:
            self.account(workload, pool, -1)

    def _add_node(self, node: Node) -> None:
        node_id = len(self.nodes)
        gpus = []
        for gpu in sorted(node.gpus, key=lambda g: g.index):
            state = GpuState(
                gpu_id=len(self.gpus),
                node=node_id,
                index=gpu.index,
                uuid=gpu.uuid,
                memory_mib=gpu.memory_mib,
                numa=gpu.numa_node,
            )
            self.gpus.append(state)
            self.gpu_by_uuid[gpu.uuid] = state
            gpus.append(state)
        state_node = NodeState(node_id, node, gpus)
        self.nodes.append(state_node)
        self.node_by_name[node.name] = state_node
        pool = self.pools.setdefault(node.pool, PoolState(node.pool))
        pool.nodes.append(node_id)
        if node.ready:
            pool.capacity_milli += len(gpus) * MILLI_GPU

    # -- queue usage --------------------------------------------------------------------

    def ancestry(self, queue: str) -> tuple[str, ...]:
        """`queue` and its ancestors, leaf first (only queues that exist)."""
        found = self._ancestry.get(queue)
        if found is None:
            chain = []
            current: str | None = queue
            while current is not None and current in self.parents:
                chain.append(current)
                current = self.parents[current]
            found = self._ancestry[queue] = tuple(chain)
        return found

    def charge(self, workload: Workload, pool: str) -> int:
        """What `workload` counts against quota in `pool`, in milli-GPUs."""
        request = workload.request
        if not request.gpu_compute_percent:  # whole GPUs: the same in every pool
            return request.gpus * MILLI_GPU * workload.pods
        reference = self.pools[pool].gpu_memory_mib if pool in self.pools else 1
        return request.milli_gpus(reference) * workload.pods

    def account(self, workload: Workload, pool: str, sign: int) -> None:
        """Add (`sign` +1) or remove (-1) `workload`'s charge to its queue and ancestors."""
        amount = sign * self.charge(workload, pool)
        for queue in self.ancestry(workload.queue):
            usage = self.usage[queue]
            usage.allocated[pool] = usage.allocated.get(pool, 0) + amount
            if not workload.is_preemptible:
                usage.non_preemptible[pool] = usage.non_preemptible.get(pool, 0) + amount

    def allocated(self, queue: str, pool: str) -> int:
        """What `queue` holds in `pool` now, in milli-GPUs."""
        return self.usage[queue].allocated.get(pool, 0)

    # -- take and give --------------------------------------------------------------------

    def pool_of(self, allocation: Allocation) -> str:
        """The pool an allocation lives in (a workload never spans pools)."""
        return self.node_by_name[allocation[0].node].node.pool

    def take(self, workload: Workload, allocation: Allocation) -> None:
        """Mark `allocation` of `workload` as used; `give` with the same arguments undoes it."""
        self.occupy(workload.request, allocation)
        self.account(workload, self.pool_of(allocation), +1)

    def give(self, workload: Workload, allocation: Allocation) -> None:
        """Return what `take` took."""
        self.vacate(workload.request, allocation)
        self.account(workload, self.pool_of(allocation), -1)

    def occupy(self, request: Request, allocation: Allocation) -> None:
        """Mark the resources of `allocation` as used, without queue accounting."""
        self._apply(request, allocation, -1)

    def vacate(self, request: Request, allocation: Allocation) -> None:
        """Undo `occupy`."""
        self._apply(request, allocation, +1)

    def _apply(self, request: Request, allocation: Allocation, sign: int) -> None:
        for pod in allocation:
            node = self.node_by_name[pod.node]
            node.free_cpu_milli += sign * request.cpu_milli
            node.free_memory_mib += sign * request.memory_mib
            whole_before = node.free_whole
            for uuid in pod.gpus:
                gpu = self.gpu_by_uuid[uuid]
                if pod.slice is None:
                    self._change_gpu(node, gpu, sign * _FULL, sign * gpu.memory_mib, sign)
                else:
                    self._change_gpu(
                        node,
                        gpu,
                        sign * pod.slice.compute_percent,
                        sign * pod.slice.memory_mib,
                        sign,
                    )
            if node.free_whole != whole_before:
                self._move_node(node, whole_before)
            self._resign(node)

    def _change_gpu(
        self, node: NodeState, gpu: GpuState, compute: int, memory: int, sign: int
    ) -> None:
        pool = self.pools[node.node.pool]
        old_key = gpu.partial_key()
        was_whole = gpu.holders == 0
        gpu.free_compute += compute
        gpu.free_memory_mib += memory
        gpu.holders -= sign
        if old_key is not None and node.schedulable:
            _discard(pool.partial[old_key], gpu.id)
        new_key = gpu.partial_key()
        if new_key is not None and node.schedulable:
            insort(pool.partial[new_key], gpu.id)
        is_whole = gpu.holders == 0
        if was_whole != is_whole:
            delta = 1 if is_whole else -1
            node.free_whole += delta
            if node.schedulable:
                pool.free_whole += delta

    def _move_node(self, node: NodeState, whole_before: int) -> None:
        if not node.schedulable:
            return
        pool = self.pools[node.node.pool]
        _discard(pool.whole[whole_before], node.id)
        insort(pool.whole_bucket(node.free_whole), node.id)

    def _resign(self, node: NodeState) -> None:
        """Move `node` to the group of its new signature."""
        old = node.signature
        node.signature = new = node.current_signature()
        if new == old or not node.schedulable:
            return
        groups = self.pools[node.node.pool].signatures
        members = groups[old]
        _discard(members, node.id)
        if not members:
            del groups[old]
        found = groups.get(new)
        if found is None:
            groups[new] = [node.id]
        else:
            insort(found, node.id)

    def free_milli(self, pool: str) -> int:
        """Free GPU capacity of a pool in milli-GPUs, counting shared GPUs' free compute."""
        state = self.pools[pool]
        partial = sum(c * len(bucket) for c, bucket in enumerate(state.partial))
        return state.free_whole * MILLI_GPU + partial * MILLI_GPU // _FULL


def _discard(ids: list[int], item: int) -> None:
    """Remove `item` from the sorted list `ids`, where it must be."""
    del ids[bisect_left(ids, item)]
