"""The seam between a trace replay and the scheduling core: the `Decider` protocol.

A replay tells its decider what happened (a submission, an admission carried out, an eviction
begun, pods gone, a workload finished) and asks it for a plan. `SnapshotDecider` keeps the
workloads itself and calls `schedule(snapshot, now)` on the full snapshot every cycle; it is the
reference form. `new_decider` picks the core's incremental `Scheduler` when the core has one
(the same contract, costing O(pending + changes) per cycle), so switching is one line here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol

from scheduler_service import core
from scheduler_service.core import (
    Allocation,
    Node,
    Plan,
    Policy,
    Queue,
    Snapshot,
    Workload,
    WorkloadState,
    schedule,
)

__all__ = ["Decider", "SnapshotDecider", "new_decider"]


class Decider(Protocol):
    """What a replay needs from the core. Names are workload names; calls must follow the plan.

    `submit` takes a PENDING workload; `started` carries out an admission (RUNNING from `now`);
    `evicting` marks a RUNNING workload EVICTING (it still holds its GPUs); `requeued` makes an
    EVICTING or RUNNING workload PENDING again, its allocation dropped and its submission time
    kept; `finished` forgets it. `cycle(now)` equals `schedule(self.snapshot(), now)`.
    """

    def submit(self, workload: Workload) -> None:
        """Add a PENDING workload."""

    def started(self, name: str, allocation: Allocation, now: float) -> None:
        """The admission of `name` onto `allocation` was carried out at `now`."""

    def evicting(self, name: str) -> None:
        """The eviction of RUNNING `name` began; it holds its GPUs until `requeued`."""

    def requeued(self, name: str) -> None:
        """`name`'s pods are gone; it waits again, with its original submission time."""

    def finished(self, name: str) -> None:
        """`name` completed and holds nothing any more."""

    def cycle(self, now: float, *, explain: bool = True) -> Plan:
        """One scheduling cycle at `now` over the current state.

        With `explain` False the plan may leave out the pending workloads' reasons (`pending`
        empty); its decisions are the same.
        """

    def snapshot(self) -> Snapshot:
        """The current state as the core's snapshot."""


class SnapshotDecider:
    """The reference `Decider`: the full snapshot and `schedule` every cycle (O(cluster))."""

    def __init__(self, nodes: Iterable[Node], queues: Iterable[Queue], policy: Policy) -> None:
        """Hold `nodes`, `queues` and `policy` fixed; start with no workloads."""
        self._nodes = tuple(nodes)
        self._queues = tuple(queues)
        self._policy = policy
        self._workloads: dict[str, Workload] = {}

    def submit(self, workload: Workload) -> None:
        """See `Decider.submit`."""
        self._workloads[workload.name] = workload

    def started(self, name: str, allocation: Allocation, now: float) -> None:
        """See `Decider.started`."""
        self._workloads[name] = replace(
            self._workloads[name],
            state=WorkloadState.RUNNING,
            allocation=allocation,
            started_at=now,
        )

    def evicting(self, name: str) -> None:
        """See `Decider.evicting`."""
        self._workloads[name] = replace(self._workloads[name], state=WorkloadState.EVICTING)

    def requeued(self, name: str) -> None:
        """See `Decider.requeued`."""
        self._workloads[name] = replace(
            self._workloads[name], state=WorkloadState.PENDING, allocation=None, started_at=None
        )

    def finished(self, name: str) -> None:
        """See `Decider.finished`."""
        del self._workloads[name]

    def cycle(self, now: float, *, explain: bool = True) -> Plan:
        """See `Decider.cycle`; the reference form always explains."""
        return schedule(self.snapshot(), now)

    def snapshot(self) -> Snapshot:
        """See `Decider.snapshot`."""
        return Snapshot(
            nodes=self._nodes,
            queues=self._queues,
            workloads=tuple(self._workloads.values()),
            policy=self._policy,
        )


def new_decider(nodes: Iterable[Node], queues: Iterable[Queue], policy: Policy) -> Decider:
    """The fastest decider the core offers: its incremental `Scheduler` if present."""
    incremental = getattr(core, "Scheduler", None)
    if incremental is not None:
        decider: Decider = incremental(tuple(nodes), tuple(queues), policy)
        return decider
    return SnapshotDecider(nodes, queues, policy)
