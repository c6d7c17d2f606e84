"""`Scheduler`: the core kept warm between cycles, for drivers that run many of them.

`schedule(snapshot, now)` is the definition: it builds the cycle state from the snapshot,
which costs time linear in everything running. A driver that runs a cycle every few seconds
(the cluster driver, the simulator) instead tells a `Scheduler` what changed, and each cycle
then costs time in what is pending and what changed. The contract, checked by a property test:

    scheduler.cycle(now) == schedule(scheduler.snapshot(), now)

Still no I/O and no clock: the driver reports facts (a workload submitted, started where the
plan said, evicting, back to pending, finished), the scheduler only keeps count. A report that
does not fit the current state raises `SchedulerError` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TypeVar

from scheduler_service.core._cycle import run_cycle
from scheduler_service.core._model import (
    Allocation,
    Node,
    Policy,
    Queue,
    Snapshot,
    SnapshotError,
    Workload,
    WorkloadState,
)
from scheduler_service.core._plan import Plan
from scheduler_service.core._world import World

__all__ = ["Scheduler", "SchedulerError"]

_T = TypeVar("_T")


class SchedulerError(ValueError):
    """A driver reported something that does not fit the scheduler's state."""


class Scheduler:
    """Incremental form of `schedule`; see the module docstring.

    Node and queue changes are rare: they rebuild the state from a snapshot on the next cycle.
    """

    def __init__(
        self, nodes: Iterable[Node], queues: Iterable[Queue], policy: Policy | None = None
    ) -> None:
        self._world = World(
            Snapshot(nodes=tuple(nodes), queues=tuple(queues), policy=policy or Policy())
        )
        self._stale: Snapshot | None = None

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> Scheduler:
        """A scheduler that starts from `snapshot` (a driver's state after a restart)."""
        scheduler = cls(snapshot.nodes, snapshot.queues, snapshot.policy)
        scheduler._world = World(snapshot)
        return scheduler

    def __repr__(self) -> str:
        world = self._world
        return (
            f"<Scheduler {len(world.nodes)} nodes, {len(world.queues)} queues, "
            f"{len(world.placed)} placed, {len(world.pending)} pending>"
        )

    # -- facts reported by the driver ---------------------------------------------------

    def submit(self, workload: Workload) -> None:
        """A new workload, PENDING."""
        world = self._current()
        if workload.state is not WorkloadState.PENDING:
            raise SchedulerError(f"submit {workload.name!r}: a new workload must be pending")
        if workload.name in world.pending or workload.name in world.placed:
            raise SchedulerError(f"submit {workload.name!r}: a workload of that name exists")
        world.submit(workload)

    def started(self, name: str, allocation: Allocation, now: float) -> None:
        """A pending workload now runs on `allocation` (the driver carried out an admission)."""
        world = self._current()
        workload = self._pending(name, "started")
        running = self._checked(
            lambda: replace(
                workload, state=WorkloadState.RUNNING, allocation=allocation, started_at=now
            )
        )
        gpus = world.state.gpu_by_uuid
        nodes = world.state.node_by_name
        for pod in allocation:
            node = nodes.get(pod.node)
            if node is None or any(
                uuid not in gpus or gpus[uuid].node != node.id for uuid in pod.gpus
            ):
                raise SchedulerError(
                    f"started {name!r}: pod on {pod.node!r} with GPUs {list(pod.gpus)} does not "
                    "match the cluster's nodes"
                )
        world.remove_pending(name)
        world.place(running)

    def evicting(self, name: str) -> None:
        """A running workload is being evicted: it holds its resources until `requeued`."""
        self._placed(name, "evicting")
        self._current().start_evicting(name)

    def requeued(self, name: str) -> None:
        """A placed workload's pods are gone and it waits again (eviction done, node lost)."""
        self._placed(name, "requeued")
        world = self._current()
        workload = world.unplace(name)
        world.add_pending(
            replace(workload, state=WorkloadState.PENDING, allocation=None, started_at=None)
        )

    def finished(self, name: str) -> None:
        """A workload is gone for good (completed, failed or deleted), in whatever state."""
        world = self._current()
        if name in world.pending:
            world.remove_pending(name)
        elif name in world.placed:
            world.unplace(name)
        else:
            raise SchedulerError(f"finished {name!r}: no such workload")

    def set_node_ready(self, name: str, ready: bool) -> None:
        """A node became (not) ready; its workloads stay where they are until reported."""
        snapshot = self.snapshot()
        if name not in {n.name for n in snapshot.nodes}:
            raise SchedulerError(f"set_node_ready {name!r}: no such node")
        nodes = tuple(replace(n, ready=ready) if n.name == name else n for n in snapshot.nodes)
        self._stale = replace(snapshot, nodes=nodes)

    def set_nodes(self, nodes: Iterable[Node]) -> None:
        """Replace the node list (validated as a snapshot would be).

        A node that goes away must first lose its workloads (`requeued` or `finished`): a placed
        workload on a node that no longer exists raises `SchedulerError` and changes nothing.
        """
        snapshot = self.snapshot()
        self._stale = self._checked(lambda: replace(snapshot, nodes=tuple(nodes)))

    def set_queues(self, queues: Iterable[Queue]) -> None:
        """Replace the queue tree (validated as a snapshot would be)."""
        snapshot = self.snapshot()
        self._stale = self._checked(lambda: replace(snapshot, queues=tuple(queues)))

    # -- decisions ------------------------------------------------------------------------

    def cycle(self, now: float, *, explain: bool = True, shortcuts: bool = True) -> Plan:
        """One scheduling cycle; equal to `schedule(self.snapshot(), now)`. Changes nothing.

        With `explain` False the cycle skips phase 6 and the plan's `pending` is empty; its
        admissions, evictions, reservations and shares are the same. For callers that act on
        the decisions and never show the reasons, such as a trace replay: phase 6 gives every
        waiting workload its reason, so it costs time in what waits, cycle after cycle.

        With `shortcuts` False the cycle skips nothing it could prove useless and searches,
        sorts and scans the long way: the same plan, slower. For tests that check the
        shortcuts against the naive algorithm.
        """
        return run_cycle(self._current(), now, explain=explain, shortcuts=shortcuts)

    def snapshot(self) -> Snapshot:
        """Everything the scheduler knows, as a snapshot."""
        return self._stale if self._stale is not None else self._world.snapshot()

    def workload(self, name: str) -> Workload:
        """The workload of that name, in its current state."""
        world = self._current()
        found = world.pending.get(name) or world.placed.get(name)
        if found is None:
            raise SchedulerError(f"no workload {name!r}")
        return found

    # -- helpers --------------------------------------------------------------------------

    def _current(self) -> World:
        if self._stale is not None:
            self._world = World(self._stale)
            self._stale = None
        return self._world

    def _pending(self, name: str, verb: str) -> Workload:
        world = self._current()
        if name not in world.pending:
            raise SchedulerError(f"{verb} {name!r}: no pending workload of that name")
        return world.pending[name]

    def _placed(self, name: str, verb: str) -> Workload:
        world = self._current()
        if name not in world.placed:
            raise SchedulerError(f"{verb} {name!r}: no running or evicting workload of that name")
        return world.placed[name]

    @staticmethod
    def _checked(build: Callable[[], _T]) -> _T:
        try:
            return build()
        except SnapshotError as error:
            raise SchedulerError(str(error)) from error
