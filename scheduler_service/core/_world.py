"""What a cycle starts from: the cycle state plus the workloads, indexed.

A `World` is built from a `Snapshot` for every call of `schedule`, or kept up to date event by
event by `Scheduler`. Both give the same world for the same snapshot: the indexes are keyed by
name, everything the cycle reads from them is sorted or order-free, and the cycle state's
buckets are sorted, so history leaves no trace.
"""

from __future__ import annotations

from dataclasses import replace

from scheduler_service.core._model import (
    Node,
    Policy,
    Queue,
    Snapshot,
    Workload,
    WorkloadState,
)
from scheduler_service.core._state import CycleState
from scheduler_service.core._targets import Targets

__all__ = ["World"]


class World:
    """Queues, policy, cycle state and workloads by state, for one or many cycles."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.nodes: tuple[Node, ...] = snapshot.nodes
        self.queue_list: tuple[Queue, ...] = snapshot.queues
        self.policy: Policy = snapshot.policy
        self.queues: dict[str, Queue] = {q.name: q for q in snapshot.queues}
        self.state = CycleState(snapshot)
        self.targets = Targets(self.state, self.queues)
        self.pending: dict[str, Workload] = {}
        self.placed: dict[str, Workload] = {}
        self.placed_by_pool: dict[str, dict[str, Workload]] = {}
        self.placed_by_queue_pool: dict[tuple[str, str], dict[str, Workload]] = {}
        for workload in snapshot.workloads:
            if workload.state is WorkloadState.PENDING:
                self.pending[workload.name] = workload
            else:
                self._index(workload)

    def snapshot(self) -> Snapshot:
        """The world as a snapshot (workloads sorted by name)."""
        workloads = sorted([*self.pending.values(), *self.placed.values()], key=lambda w: w.name)
        return Snapshot(
            nodes=self.nodes,
            queues=self.queue_list,
            workloads=tuple(workloads),
            policy=self.policy,
        )

    def sorted_pending(self) -> list[Workload]:
        """Pending workloads by name."""
        return sorted(self.pending.values(), key=lambda w: w.name)

    # -- incremental changes (used by Scheduler) ------------------------------------------

    def add_pending(self, workload: Workload) -> None:
        """A new PENDING workload."""
        self.pending[workload.name] = workload

    def place(self, workload: Workload) -> None:
        """A workload becomes RUNNING or EVICTING with its allocation (it is not in the world)."""
        assert workload.allocation is not None
        self.state.load_one(workload)
        self._index(workload)

    def unplace(self, name: str) -> Workload:
        """Remove a placed workload and give back what it holds; returns it."""
        workload = self.placed.pop(name)
        pool = self.state.placed_pool[name]
        del self.placed_by_pool[pool][name]
        del self.placed_by_queue_pool[workload.queue, pool][name]
        self.state.unload_one(workload)
        return workload

    def start_evicting(self, name: str) -> None:
        """RUNNING -> EVICTING: still holds its resources, no longer counts for its queue."""
        workload = self.placed[name]
        if workload.state is WorkloadState.EVICTING:
            return
        self.unplace(name)
        self.place(replace(workload, state=WorkloadState.EVICTING))

    def _index(self, workload: Workload) -> None:
        pool = self.state.placed_pool[workload.name]
        self.placed[workload.name] = workload
        self.placed_by_pool.setdefault(pool, {})[workload.name] = workload
        self.placed_by_queue_pool.setdefault((workload.queue, pool), {})[workload.name] = workload
