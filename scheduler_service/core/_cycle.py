"""`schedule(snapshot, now) -> Plan`: one scheduling cycle, as DESIGN.md's numbered phases.

A `Cycle` holds what one cycle starts from and what it has decided so far; each phase reads
it and records its decisions on it, in this order (`run_cycle`):

0. validate each pending workload's target (queue, pools, models, shape) - a mistake the user
   must fix is reported at once and the workload takes no further part (`_allocate`);
1. fair share per pool, top-down through the queue tree (`_allocate`, with `_fairshare`);
2. order: queues furthest below their fair share first, then queue priority; inside a queue,
   workload priority, then submission time (`Cycle.queue_key`);
3. allocate in that order, whole or not at all; a gang at the head of an entitled queue that
   does not fit reserves nodes so smaller work cannot starve it (`_allocate`);
4. reclaim: a queue below its fair share takes back from queues above theirs, only preemptible
   work, never below a victim queue's quota, respecting the minimum runtime (`_reclaim`);
5. preempt: inside a queue, higher priority evicts lower priority preemptible work (`_reclaim`);
6. explain: every workload still pending gets one typed reason with numbers (`_explain`).

Evicted work is not placed again in the same cycle: it keeps its GPUs until its pods are gone
and returns as pending in a later snapshot. The result depends only on the snapshot and `now`.

Shortcuts: a replay runs tens of thousands of cycles, so the phases skip work they can prove
useless (a search that cannot succeed, a scan whose answer is already known). With
`shortcuts=False` they search, sort and scan as if they knew nothing; the plan is the same,
which a property test checks (the fast algorithm against the naive one).
"""

from __future__ import annotations

import math
from typing import TypeVar

from scheduler_service.core._allocate import allocate, fair_share, validate
from scheduler_service.core._explain import decisions, explain_pending
from scheduler_service.core._model import Allocation, Snapshot, Workload
from scheduler_service.core._plan import (
    Eviction,
    OverQuotaNotAllowed,
    Plan,
    QueueAtLimit,
    Reason,
    Reservation,
    WaitingForEviction,
)
from scheduler_service.core._reclaim import preempt, reclaim
from scheduler_service.core._world import World

__all__ = ["Cycle", "GateReason", "Note", "run_cycle", "schedule"]

GateReason = QueueAtLimit | OverQuotaNotAllowed
QueueKey = tuple[bool, float, float, int, str]
_R = TypeVar("_R", bound=Reason)
Note = str | tuple[str, str, int, int]
"""Why reclaim did not help a workload: a text, or (queue, pool, held, need) for a queue that
holds its entitlement already, worded in phase 6 only for the workloads that need it."""


def schedule(snapshot: Snapshot, now: float) -> Plan:
    """Decide one cycle: what to admit and where, what to evict, and why the rest waits.

    Pure and deterministic: no I/O, no clock, no randomness; the same snapshot and `now` give
    the same plan, whatever the order of the snapshot's entries.
    """
    return run_cycle(World(snapshot), now)


def run_cycle(world: World, now: float, *, explain: bool = True, shortcuts: bool = True) -> Plan:
    """One cycle on `world`, which is left as it was found (see `Cycle.undo`).

    With `explain` False, phase 6 is skipped: the plan's decisions are the same, and its
    `pending` is empty (see `Scheduler.cycle`). With `shortcuts` False every phase does its
    work the long way (see the module docstring): the same plan, slower.
    """
    cycle = Cycle(world, now, explain=explain, shortcuts=shortcuts)
    try:
        validate(cycle)  # 0
        fair_share(cycle)  # 1
        allocate(cycle)  # 2 and 3: the order drives allocation as queues' standing changes
        reclaim(cycle)  # 4
        preempt(cycle)  # 5
        return explain_pending(cycle) if explain else decisions(cycle)  # 6, or decisions alone
    finally:
        cycle.undo()


class Cycle:
    """What one cycle starts from, what it has decided so far, and what several phases read.

    The phases add to the decisions and change the world's cycle state as they go (each what-if
    is undone before the next); `undo` gives the world back at the end. What only one phase
    remembers lives in that phase's own object.
    """

    def __init__(
        self, world: World, now: float, *, explain: bool = True, shortcuts: bool = True
    ) -> None:
        self.world = world
        self.now = now
        self.explaining = explain
        """Whether phase 6 runs; without it, phase 4's notes (for reasons) are not needed."""
        self.shortcuts = shortcuts
        """Whether phases skip work they can prove useless (see the module docstring)."""
        self.policy = world.policy
        self.queues = world.queues
        self.state = world.state
        self.waiting = world.waiting
        self.pools_for = self.waiting.pools_for
        self.shape_of = self.waiting.shape_of
        self.in_order = self.waiting.in_order
        # -- decisions, by the phase that makes them
        self.shares: dict[tuple[str, str], int] = {}
        """Phase 1: fair share per (queue, pool), milli-GPUs."""
        self.demand: dict[tuple[str, str], int] = {}
        """Phase 1: what each (queue, pool) holds and asks, its subtree included."""
        self.reasons: dict[str, Reason] = {}
        """Phases 0, 3 and 5: reasons known before phase 6 (invalid targets, queue gates)."""
        self.admitted: dict[str, tuple[Workload, Allocation]] = {}
        """Phase 3: the workloads admitted, with where they go."""
        self.reservations: list[Reservation] = []
        """Phase 3: nodes held for blocked gangs (phase 4 may drop some, see `_reclaim`)."""
        self.borrowing_reservations: set[str] = set()
        """Phase 3: holders of the reservations made for gangs beyond their queue's quota,
        which phase 4 may lift for a workload within its own."""
        self.notes: dict[str, Note] = {}
        """Phase 4: why reclaim did not help, per workload (worded in phase 6)."""
        self.over_share_groups: dict[tuple[str, str], int] = {}
        """Phase 4: (queue, pool) groups none of whose workloads may reclaim, with what the
        queue held then: each of their workloads has that note (see `Note`)."""
        self.evictions: list[Eviction] = []
        """Phases 4 and 5: the evictions decided."""
        self.evicted: list[tuple[Workload, str]] = []
        """Phases 4 and 5: each evicted workload that counted for its queue, and its pool."""
        self.claimed: set[str] = set()
        """Phases 4 and 5: every workload chosen as a victim (evicting ones included)."""
        self.promised: dict[tuple[str, str], int] = {}
        """Phases 4 and 5: per (queue, pool), what its nominees count for it (milli-GPUs)."""
        self.nominated: dict[str, tuple[WaitingForEviction, Workload, str]] = {}
        """Phases 4 and 5: the workloads evictions were decided for, with reason and pool."""
        # -- remembered for the cycle by more than one phase
        self._standing: dict[tuple[str, str], tuple[int, int, int]] = {}
        """Per queue and pool: fair share, quota and minus queue priority (`standing_of`)."""
        self.shared_reasons: dict[Reason, Reason] = {}
        """Reasons handed to many workloads in this cycle, each value once (`shared`); the
        world keeps them for the next cycle."""

    def undo(self) -> None:
        """Give the world back as it was before the cycle.

        The plan is only a proposal: admissions are taken back (a driver reports them once
        carried out), evicted workloads count for their queues again until the driver reports
        them evicting, and reservations are lifted (the next cycle makes them anew).
        """
        for workload, allocation in self.admitted.values():
            self.state.give(workload, allocation)
        for victim, pool in self.evicted:
            self.state.account(victim, pool, +1)
        for reservation in self.reservations:
            for name in reservation.nodes:
                self.state.node_by_name[name].reserved_for = None

    def queue_key(self, queue: str, head: Workload, tried: tuple[str, ...] = ()) -> QueueKey:
        """Within quota first (oldest head first), then furthest below fair share, priority, name.

        "Within quota": the queue's head fits its guaranteed quota. Guaranteed quota comes
        before borrowing: room that reclaim freed for a queue taking back its quota must not go
        to a queue that only borrows, however far below its fair share that one is, or the
        owner waits while the room changes hands cycle after cycle. Among heads within quota
        the oldest goes first: every one of them is owed its room, and room reclaimed for a
        head in one cycle must not go to a head submitted since, or the older one waits another
        cycle and reclaims again (its wait would be bounded by luck, not by one cycle plus the
        eviction grace).

        The standing is the queue's in the pools the head tries next (`attempt`, after the
        pools in `tried`), the best of them: a workload takes room in a pool only at the rank
        its queue has there, as phase 4 judges it there.
        """
        pools = self.attempt(head, tried)
        key = self._key_in(queue, head, pools[0])
        for pool in pools[1:]:
            key = min(key, self._key_in(queue, head, pool))
        return key

    def attempt(self, workload: Workload, tried: tuple[str, ...]) -> list[str]:
        """The pools `workload` tries next in phase 3, having tried those in `tried` (not all).

        First every pool in which its queue stays within quota, then the others; inside one
        attempt, `_place` takes the user's order, or weighs the pools against each other. So
        the attempts' keys only grow (`queue_key`: within quota before borrowing), and a
        workload takes room at the rank its queue has where it lands: one owed quota in a pool
        does not take room in another at that rank, nor wait behind borrowers in its own.
        """
        pools = self.pools_for[workload.name]
        if len(pools) == 1:
            return pools
        untried = [pool for pool in pools if pool not in tried]
        within = [pool for pool in untried if not self._borrowing(workload, pool)]
        if within:
            return within
        queue = workload.queue
        return [min(untried, key=lambda pool: self._key_in(queue, workload, pool))]

    def _borrowing(self, workload: Workload, pool: str) -> bool:
        """Whether admitting `workload` in `pool` takes its queue past its quota there."""
        held = self.state.allocated(workload.queue, pool)
        quota = self.world.entitlement(workload.queue, pool).quota
        return held + self.state.charge(workload, pool) > quota

    def _key_in(self, queue: str, head: Workload, pool: str) -> QueueKey:
        """`queue_key` as if `pool` were the only pool `head` accepts."""
        share, quota, priority = self.standing_of(queue, pool)
        allocated = self.state.allocated(queue, pool)
        borrowing = allocated + self.state.charge(head, pool) > quota
        # A queue with no fair share in the pool (weight 0, no quota) only gets idle leftovers.
        ratio = allocated / share if share else math.inf
        age = math.inf if borrowing else head.submitted_at
        return (borrowing, age, ratio, priority, queue)

    def standing_of(self, queue: str, pool: str) -> tuple[int, int, int]:
        """`queue`'s fair share and quota in `pool`, and minus its priority (once per cycle)."""
        standing = self._standing.get((queue, pool))
        if standing is None:
            standing = self._standing[queue, pool] = (
                self.shares.get((queue, pool), 0),
                self.world.entitlement(queue, pool).quota,
                -self.queues[queue].priority,
            )
        return standing

    def gate(self, workload: Workload, pool: str) -> GateReason | None:
        """Queue gates: no queue past its limit; non-preemptible work only within quota."""
        preemptible = workload.is_preemptible
        if preemptible and not self.world.entitlement(workload.queue, pool).limited:
            return None  # the common case, asked for every pending workload: no gate applies
        charge = self.state.charge(workload, pool)
        for name in self.state.ancestry(workload.queue):
            entry = self.world.entitlement(name, pool)
            allocated = self.state.allocated(name, pool)
            if entry.limit is not None and allocated + charge > entry.limit:
                return QueueAtLimit(name, pool, allocated, charge, entry.limit)
            if not preemptible and (name == workload.queue or entry.explicit):
                protected = self.state.usage[name].non_preemptible.get(pool, 0)
                if protected + charge > entry.quota:
                    return OverQuotaNotAllowed(
                        name, pool, workload.kind.value, protected, charge, entry.quota
                    )
        return None

    def shared(self, reason: _R) -> _R:
        """`reason`, or an equal value already handed out at the last cycle or this one."""
        found = self.shared_reasons.get(reason)
        if found is None:
            found = self.shared_reasons[reason] = self.world.last_reasons.get(reason, reason)
        assert isinstance(found, type(reason))
        return found
