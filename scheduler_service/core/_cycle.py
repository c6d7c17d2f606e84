"""`schedule(snapshot, now) -> Plan`: one scheduling cycle, as DESIGN.md's numbered phases.

The parent (`_Cycle`) holds the control flow and every mutation of the cycle state; the
helpers it calls compute. Phases:

0. validate each pending workload's target (queue, pools, models, shape) - a mistake the user
   must fix is reported at once and the workload takes no further part;
1. fair share per pool, top-down through the queue tree (`_fairshare`);
2. order: queues furthest below their fair share first, then queue priority; inside a queue,
   workload priority, then submission time;
3. allocate in that order, whole or not at all; a gang at the head of an entitled queue that
   does not fit reserves nodes so smaller work cannot starve it;
4. reclaim: a queue below its fair share takes back from queues above theirs, only preemptible
   work, never below a victim queue's quota, respecting the minimum runtime;
5. preempt: inside a queue, higher priority evicts lower priority preemptible work;
6. explain: every workload still pending gets one typed reason with numbers.

Evicted work is not placed again in the same cycle: it keeps its GPUs until its pods are gone
and returns as pending in a later snapshot. The result depends only on the snapshot and `now`.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from typing import TypeVar

from scheduler_service.core._fairshare import ShareInput, fair_shares
from scheduler_service.core._fragmentation import Fragmentation, ShapeMix
from scheduler_service.core._model import (
    Allocation,
    Snapshot,
    Workload,
    WorkloadState,
    gpus_to_milli,
)
from scheduler_service.core._pending import workload_order
from scheduler_service.core._placement import (
    describe_pod,
    domain_capacity,
    place,
    pod_capacity,
    static_fit,
)
from scheduler_service.core._plan import (
    Admission,
    BlockedByReservation,
    Eviction,
    EvictionCause,
    InsufficientCapacity,
    InvalidTarget,
    NoTopologyDomain,
    OverQuotaNotAllowed,
    Pending,
    Plan,
    QueueAtLimit,
    QueueShare,
    Reason,
    Reservation,
    WaitingForEviction,
    format_gpus,
)
from scheduler_service.core._room import ReclaimRoom
from scheduler_service.core._victims import (
    Candidate,
    LazyOrder,
    VictimSearch,
    by_locality,
    find_victims,
)
from scheduler_service.core._world import World

__all__ = ["run_cycle", "schedule"]

_GateReason = QueueAtLimit | OverQuotaNotAllowed
_EVICTING_TALLY = (None, 0, False)
"""The `World.reclaim_tally` key of evicting workloads (`tally_key`)."""
_QueueKey = tuple[bool, float, float, int, str]
_R = TypeVar("_R", bound=Reason)


def schedule(snapshot: Snapshot, now: float) -> Plan:
    """Decide one cycle: what to admit and where, what to evict, and why the rest waits.

    Pure and deterministic: no I/O, no clock, no randomness; the same snapshot and `now` give
    the same plan, whatever the order of the snapshot's entries.
    """
    return run_cycle(World(snapshot), now)


def run_cycle(world: World, now: float, *, explain: bool = True) -> Plan:
    """One cycle on `world`, which is left as it was found (see `_Cycle.undo`).

    With `explain` False, phase 6 is skipped: the plan's decisions are the same, and its
    `pending` is empty (see `Scheduler.cycle`).
    """
    cycle = _Cycle(world, now, explain=explain)
    try:
        cycle.validate()  # 0
        cycle.fair_share()  # 1
        cycle.allocate()  # 2 and 3: the order drives allocation as queues' standing changes
        cycle.reclaim()  # 4
        cycle.preempt()  # 5
        return cycle.explain() if explain else cycle.decisions()  # 6, or the decisions alone
    finally:
        cycle.undo()


class _Cycle:
    """Scratch data of one cycle; see the module docstring for the phases."""

    def __init__(self, world: World, now: float, *, explain: bool = True) -> None:
        self.world = world
        self.now = now
        self.explaining = explain
        """Whether phase 6 runs; without it, phase 4's notes (for reasons) are not needed."""
        self.policy = world.policy
        self.queues = world.queues
        self.state = world.state
        self.waiting = world.waiting
        self.pools_for = self.waiting.pools_for
        self.shape_of = self.waiting.shape_of
        self._in_order = self.waiting.in_order
        self.placed_by_pool = world.placed_by_pool
        self.placed_by_queue_pool = world.placed_by_queue_pool
        self._reclaim_order: dict[str, LazyOrder] = {}
        self._reclaim_list: dict[str, list[Candidate]] = {}
        self._room: ReclaimRoom | None = None
        self._preempt_order: dict[tuple[str, str], list[Candidate]] = {}
        self._lowest_priority: dict[tuple[str, str], int | None] = {}
        self._evicting: dict[str, list[Candidate]] = {}
        self.reasons: dict[str, Reason] = {}
        self.notes: dict[str, str | tuple[str, str, int, int]] = {}
        """Why reclaim did not help, per workload: a text, or (queue, pool, held, need) for
        `_over_share_note`, worded in phase 6 only for the workloads that need it."""
        self.admitted: dict[str, tuple[Workload, Allocation]] = {}
        self.evictions: list[Eviction] = []
        self.evicted: list[tuple[Workload, str]] = []
        self.claimed: set[str] = set()
        self.promised: dict[tuple[str, str], int] = {}
        self._scorer: Fragmentation | None = None
        self.nominated: dict[str, tuple[WaitingForEviction, Workload, str]] = {}
        self.reservations: list[Reservation] = []
        self.shares: dict[tuple[str, str], int] = {}
        self.demand: dict[tuple[str, str], int] = {}
        self._standing: dict[tuple[str, str], tuple[int, int, int]] = {}
        """Per queue and pool: fair share, quota and minus queue priority (`_queue_key`)."""
        self._over_share_group: dict[tuple[str, str], int] = {}
        """Plain groups none of whose workloads may reclaim: what the queue held then."""
        self._explain_cache: dict[tuple[object, ...], object] = {}
        self._reserved_by: dict[str, Reservation] = {}
        self._shared_reasons: dict[Reason, Reason] = {}
        """Reasons handed to many workloads in this cycle, each value once (`_shared`)."""
        self._unplaceable: set[tuple[object, ...]] = set()
        """(pool, shape) that failed to place in phase 3 and cannot fit later in the phase."""

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

    # -- 0. validate ----------------------------------------------------------------------

    def validate(self) -> None:
        """Give workloads with an impossible target an InvalidTarget reason; the rest go on.

        The verdict depends on the workload and on nodes and queues, which a world never
        changes: the world's `PendingIndex` keeps it while the workload waits.
        """
        for name, problem in self.waiting.invalid.items():
            self.reasons[name] = InvalidTarget(problem)

    # -- 1. fair share --------------------------------------------------------------------

    def fair_share(self) -> None:
        """Phase 1: compute every queue's fair share in every pool."""
        leaf_demand = dict(self.state.placed_charge)
        for key, amount in self.waiting.demand.items():
            leaf_demand[key] = leaf_demand.get(key, 0) + amount
        for (leaf, pool), amount in sorted(leaf_demand.items()):
            for name in self.state.ancestry(leaf):
                self.demand[name, pool] = self.demand.get((name, pool), 0) + amount
        for pool, pool_state in self.state.pools.items():
            demands = tuple(self.demand.get((name, pool), 0) for name in self.queues)
            shares = self._fair_shares(pool, pool_state.capacity_milli, demands)
            for name, share in shares.items():
                self.shares[name, pool] = share

    def _fair_shares(self, pool: str, capacity: int, demands: tuple[int, ...]) -> dict[str, int]:
        """`fair_shares` of `pool` for the queues' `demands` (in `self.queues` order).

        Remembered per pool by the world until capacity or demand changes: demand changes when
        work is submitted or leaves, not when it is admitted, so consecutive cycles often share
        it, and water-filling with fractions is not cheap.
        """
        key = (capacity, demands)
        remembered = self.world.fair_share_memo.get(pool)
        if remembered is not None and remembered[0] == key:
            return remembered[1]
        inputs = []
        for queue, demand in zip(self.queues.values(), demands, strict=True):
            entry = queue.quota_in(pool)
            inputs.append(
                ShareInput(
                    name=queue.name,
                    parent=queue.parent,
                    quota=gpus_to_milli(entry.quota),
                    limit=None if entry.limit is None else gpus_to_milli(entry.limit),
                    weight=Fraction(entry.over_quota_weight),
                    priority=queue.priority,
                    demand=demand,
                )
            )
        shares = fair_shares(capacity, inputs)
        self.world.fair_share_memo[pool] = (key, shares)
        return shares

    # -- 2 and 3. order and allocate ------------------------------------------------------

    def allocate(self) -> None:
        """Phases 2 and 3: admit what fits, queue by queue in fair-share order."""
        by_queue = {queue: deque(items) for queue, items in self._in_order.items()}
        shapes_left = {
            queue: None
            if self.waiting.not_simple[queue]
            else Counter(self.waiting.simple_shapes[queue])
            for queue in by_queue
        }
        heap = [(self._queue_key(queue, items[0]), queue) for queue, items in by_queue.items()]
        heapq.heapify(heap)
        blocked_heads: set[str] = set()
        while heap:
            _, queue = heapq.heappop(heap)
            items = by_queue[queue]
            shapes = shapes_left[queue]
            while items:
                if queue in blocked_heads and self._inert(queue, shapes):
                    self._gate_all(queue, items)  # the rest leaves the order: it changes nothing
                    break
                workload = items.popleft()
                if shapes is not None:
                    key = self.waiting.simple_key[workload.name]
                    shapes[key] -= 1
                    if not shapes[key]:
                        del shapes[key]
                if not self._admit(workload) and queue not in blocked_heads:
                    blocked_heads.add(queue)
                    self._reserve_for(workload)
                if not items:
                    break
                entry = (self._queue_key(queue, items[0]), queue)
                if heap and heap[0] < entry:  # another queue comes first now
                    heapq.heappush(heap, entry)
                    break

    def _inert(self, queue: str, shapes: Counter[tuple[str, int, int]] | None) -> bool:
        """Whether what is left of a queue whose head is blocked can change nothing in phase 3.

        True when it is all simple (`Target.simple`: at most the queue's own limit gates it)
        and each (pool, shape, charge) of it either already failed to place for good or goes
        past the queue's limit: each would be tried and fail, gated or not placed, and leave
        everything as it was but its gate reason (`_gate_all`). The queue's holdings do not
        change meanwhile, for nothing of it is admitted.
        """
        if shapes is None:
            return False
        for pool, shape, charge in shapes:
            if (pool, shape) in self._unplaceable:
                continue
            limit = self.world.entitlement(queue, pool).limit
            if limit is None or self.state.allocated(queue, pool) + charge <= limit:
                return False
        return True

    def _gate_all(self, queue: str, items: Iterable[Workload]) -> None:
        """Give `_gate`'s reason to each of `items` (simple, of `queue`) its limit holds back.

        One value per (pool, charge), as the queue's holdings stand (they do not change while
        nothing of the queue is admitted).
        """
        if not self.waiting.not_plain[queue]:
            return  # every one plain: no limit, no gate
        gated: dict[tuple[str, int], Reason | None] = {}
        for workload in items:
            pool, _, charge = self.waiting.simple_key[workload.name]
            if (pool, charge) not in gated:
                gate = self._gate(workload, pool)
                gated[pool, charge] = None if gate is None else self._shared(gate)
            reason = gated[pool, charge]
            if reason is not None:
                self.reasons[workload.name] = reason

    def _queue_key(self, queue: str, head: Workload) -> _QueueKey:
        """Within quota first (oldest head first), then furthest below fair share, priority, name.

        "Within quota": the queue's head fits its guaranteed quota. Guaranteed quota comes
        before borrowing: room that reclaim freed for a queue taking back its quota must not go
        to a queue that only borrows, however far below its fair share that one is, or the
        owner waits while the room changes hands cycle after cycle. Among heads within quota
        the oldest goes first: every one of them is owed its room, and room reclaimed for a
        head in one cycle must not go to a head submitted since, or the older one waits another
        cycle and reclaims again (its wait would be bounded by luck, not by one cycle plus the
        eviction grace).
        """
        pool = self.pools_for[head.name][0]
        share, quota, priority = self._standing_of(queue, pool)
        allocated = self.state.allocated(queue, pool)
        borrowing = allocated + self.state.charge(head, pool) > quota
        # A queue with no fair share in the pool (weight 0, no quota) only gets idle leftovers.
        ratio = allocated / share if share else math.inf
        age = math.inf if borrowing else head.submitted_at
        return (borrowing, age, ratio, priority, queue)

    def _standing_of(self, queue: str, pool: str) -> tuple[int, int, int]:
        """`queue`'s fair share and quota in `pool`, and minus its priority (once per cycle)."""
        standing = self._standing.get((queue, pool))
        if standing is None:
            standing = self._standing[queue, pool] = (
                self.shares.get((queue, pool), 0),
                self.world.entitlement(queue, pool).quota,
                -self.queues[queue].priority,
            )
        return standing

    def _admit(self, workload: Workload) -> bool:
        gate_reason: Reason | None = None
        shape = self.shape_of[workload.name]
        for pool in self.pools_for[workload.name]:
            gate = self._gate(workload, pool)
            if gate is not None:
                gate_reason = gate_reason or gate
                continue
            key = (pool, shape)
            if key in self._unplaceable:
                continue
            allocation = place(self.state, workload, pool, scorer=self._scorer_for(workload))
            if allocation is not None:
                self.admitted[workload.name] = (workload, allocation)
                return True
            if _fails_for_good(workload):
                self._unplaceable.add(key)
        if gate_reason is not None:
            self.reasons[workload.name] = gate_reason
        return False

    def _scorer_for(self, workload: Workload) -> Fragmentation | None:
        """The fragmentation score for slices, against this cycle's mix of request shapes.

        Slices are where fragmentation bites (a 30% leftover strands capacity a 50% slice cannot
        use), so they are placed where they raise fragmentation least; whole GPUs keep the
        cheaper tightest fit. Built on the first slice of a cycle, from every workload known.
        """
        if not workload.request.is_slice:
            return None
        if self._scorer is None:
            workloads = [*self.world.sorted_pending(), *self.world.placed.values()]
            self._scorer = Fragmentation(ShapeMix.of_workloads(workloads))
        return self._scorer

    def _gate(self, workload: Workload, pool: str) -> _GateReason | None:
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

    def _admissible(self, workload: Workload, pool: str) -> Callable[[], bool]:
        """Whether the workload passes its queue gates, asked again as a what-if changes usage."""
        return lambda: self._gate(workload, pool) is None

    def _entitlement_of(self, queue: str, pool: str) -> int:
        """The larger of `queue`'s fair share and quota in `pool` (milli-GPUs).

        A workload of the queue may reclaim only if the queue stays within it.
        """
        share, quota, _ = self._standing_of(queue, pool)
        return max(share, quota)

    def _reserve_for(self, workload: Workload) -> None:
        """Hold nodes for a blocked gang at the head of its queue, if its queue is entitled."""
        if not self.policy.reserve_for_gangs or (workload.pods == 1 and workload.request.gpus <= 1):
            return
        if workload.name in self.reasons:
            return  # held back by a queue gate, not by capacity: nothing to reserve
        pool = self.pools_for[workload.name][0]
        # The gang alone must fit its queue's entitlement. The queue's own running work does not
        # count against it: that work finishes, and the reservation makes sure the room it
        # frees goes to the gang rather than to the queue's later small steps.
        entitlement = max(
            self.shares.get((workload.queue, pool), 0),
            self.world.entitlement(workload.queue, pool).quota,
        )
        if self.state.charge(workload, pool) > entitlement:
            return
        best = self._reservation_nodes(workload, pool)
        if best is None:
            return
        for node_id in best:
            self.state.nodes[node_id].reserved_for = workload.name
        self.reservations.append(
            Reservation(
                workload=workload.name,
                pool=pool,
                nodes=tuple(self.state.nodes[n].node.name for n in best),
                free_milli=sum(self.state.nodes[n].free_milli() for n in best),
                needed_milli=self.state.charge(workload, pool),
            )
        )

    def _reservation_nodes(self, workload: Workload, pool: str) -> list[int] | None:
        """The nodes to hold for `workload`: those closest to fitting it, enough for the gang.

        Nodes that could host the most pods now come first (then by id), taken until their
        capacity when empty holds every pod; with a required topology level, inside the domain
        whose chosen nodes have the most free GPUs. None if no set of nodes is large enough.
        """
        request = workload.request
        level = (
            workload.topology.level if workload.topology and workload.topology.required else None
        )
        if level is None and request.gpus and not (request.cpu_milli or request.memory_mib):
            return self._fullest_nodes(workload, pool)
        return self._closest_nodes(workload, pool, level)

    def _closest_nodes(self, workload: Workload, pool: str, level: str | None) -> list[int] | None:
        """`_reservation_nodes` by sorting every node of the pool (any request, any level)."""
        request = workload.request
        nodes = [self.state.nodes[n] for n in self.state.pools[pool].nodes]
        nodes = [n for n in nodes if static_fit(n, workload) and n.reserved_for is None]
        groups: dict[str | None, list[int]] = {}
        for node in nodes:
            if level is None or node.domain(level) is not None:
                groups.setdefault(node.domain(level) if level else None, []).append(node.id)
        best: list[int] | None = None
        best_free = -1
        for members in groups.values():
            members.sort(key=lambda n: (-pod_capacity(self.state.nodes[n], request), n))
            chosen = self._enough_for(workload, members)
            if chosen is None:
                continue
            free = sum(self.state.nodes[n].free_milli() for n in chosen)
            if free > best_free:
                best, best_free = chosen, free
        return best

    def _fullest_nodes(self, workload: Workload, pool: str) -> list[int] | None:
        """`_reservation_nodes` for whole GPUs alone, read off the pool's free-GPU buckets.

        Such a pod's capacity on a node is its whole free GPUs divided by the pod's GPUs, so
        the order wanted is the buckets from the fullest down, those of equal capacity merged
        by id: no sort of every node, and usually only a few nodes are looked at.
        """
        per_pod = workload.request.gpus
        buckets = self.state.pools[pool].whole
        top = (len(buckets) - 1) // per_pod

        def ordered() -> Iterator[int]:
            for capacity in range(top, -1, -1):
                low = capacity * per_pod
                yield from heapq.merge(*buckets[low : low + per_pod])

        candidates = (
            node_id
            for node_id in ordered()
            if self.state.nodes[node_id].reserved_for is None
            and static_fit(self.state.nodes[node_id], workload)
        )
        return self._enough_for(workload, candidates)

    def _enough_for(self, workload: Workload, node_ids: Iterable[int]) -> list[int] | None:
        """The shortest prefix of `node_ids` whose GPUs, once free, hold every pod; or None."""
        per_pod = workload.request.gpus
        chosen, slots = [], 0
        for node_id in node_ids:
            chosen.append(node_id)
            gpus = len(self.state.nodes[node_id].gpus)
            slots += gpus // per_pod if per_pod else gpus
            if slots >= workload.pods:
                return chosen
        return None

    # -- 4. reclaim -----------------------------------------------------------------------

    def reclaim(self) -> None:
        """Phase 4: queues below their fair share take back GPUs lent to queues above theirs."""
        if not self.explaining and self._nothing_to_take():
            return  # every search would fail; only phase 6 would read what it noted
        failed: set[tuple[object, ...]] = set()
        for group, items in self._runs():
            if group is not None and self._none_entitled(*group):
                continue
            for workload in items:
                if workload.name not in self.admitted and workload.name not in self.nominated:
                    self._reclaim_for(workload, failed)

    def _nothing_to_take(self) -> bool:
        """Whether no reclaim search can find victims: nothing is being evicted, one queue alone.

        That is, one queue alone has work waiting or placed, and reclaim never takes a queue's
        own work.
        """
        if len(self._in_order) > 1:
            return False
        if any(tally.get(_EVICTING_TALLY) for tally in self.world.reclaim_tally.values()):
            return False
        queues = set(self._in_order)
        queues.update(queue for (queue, _), placed in self.placed_by_queue_pool.items() if placed)
        return len(queues) <= 1

    def _none_entitled(self, queue: str, pool: str) -> bool:
        """Whether no workload of the plain group (queue, pool) may reclaim.

        Each of them then gets the note that says so, worded in phase 6 (`_note`). Within a
        group only its own commits change the queue's holdings, and they only grow, so when
        even the least of them does not fit the queue's entitlement, none does.
        """
        needs = self.waiting.plain_needs.get((queue, pool))
        if not needs or self.waiting.not_plain[queue]:
            return False
        least = min(needs)
        held = self.state.allocated(queue, pool)
        if held + least <= self._entitlement_of(queue, pool):
            return False
        self._over_share_group[queue, pool] = held
        return True

    def _reclaim_for(self, workload: Workload, failed: set[tuple[object, ...]]) -> None:
        """Phase 4 for one workload: reclaim in its first pool where that may work."""
        if workload.name in self.reasons:
            return  # held back by a queue gate in phase 3 (the only reasons so far)
        for pool in self.pools_for[workload.name]:
            if self._gate(workload, pool) is not None:
                continue
            held = self.state.allocated(workload.queue, pool)
            need = self.state.charge(workload, pool)
            if held + need > self._entitlement_of(workload.queue, pool):
                if workload.name not in self.notes:
                    self.notes[workload.name] = (workload.queue, pool, held, need)
                continue
            shape = (workload.queue, pool, self.shape_of[workload.name])
            if shape in failed:
                continue
            found = None
            if self._room_for().may_fit(workload, pool):
                order = self._reclaim_candidates(workload, pool)
                found = find_victims(
                    self.state,
                    workload,
                    pool,
                    order,
                    eligible=self._reclaim_filter(workload, pool),
                    admissible=self._admissible(workload, pool),
                    on_node=order.on_node,
                )
            if found is None:
                failed.add(shape)
                self.notes.setdefault(
                    workload.name,
                    "reclaim found no room: other queues' work here is within their quota, "
                    "not preemptible, or inside its minimum runtime",
                )
                continue
            self._commit(workload, pool, found, EvictionCause.RECLAIM)
            return

    def _reclaim_candidates(self, workload: Workload, pool: str) -> LazyOrder:
        """Everything in `pool` that reclaim may take, in search order.

        Built once per pool and cycle; `_reclaim_filter` skips the workload's own queue and
        what is already claimed.
        """
        if pool not in self._reclaim_order:
            self._reclaim_order[pool] = by_locality(self.state, self._reclaim_pool(pool))
        return self._reclaim_order[pool]

    def _reclaim_pool(self, pool: str) -> list[Candidate]:
        """The candidates of `_reclaim_candidates`, unordered (built once per pool and cycle)."""
        if pool not in self._reclaim_list:
            candidates = []
            evicting = WorkloadState.EVICTING
            protected = {name: self._min_runtime(name, reclaim=True) for name in self.queues}
            for other in self.placed_by_pool.get(pool, {}).values():
                started = other.started_at or 0.0
                if other.state is evicting:
                    candidates.append(Candidate(other, (-math.inf, other.name), accounted=False))
                elif other.is_preemptible and self.now - started >= protected.get(
                    other.queue, self.policy.reclaim_min_runtime_seconds
                ):
                    candidates.append(
                        Candidate(other, (other.priority, -started, other.name), accounted=True)
                    )
            self._reclaim_list[pool] = candidates
        return self._reclaim_list[pool]

    def _room_for(self) -> ReclaimRoom:
        """The cycle's `ReclaimRoom`, made on first use."""
        if self._room is None:
            self._room = ReclaimRoom(
                self.world,
                shares=self.shares,
                promised=self.promised,
                claimed=self.claimed,
                candidates=self._reclaim_pool,
                runtime_moot=self._runtime_moot(),
                takeable=lambda other: (
                    other.state is WorkloadState.EVICTING
                    or (other.is_preemptible and self._past_min_runtime(other, reclaim=True))
                ),
            )
        return self._room

    def _runtime_moot(self) -> bool:
        """Whether no placed workload is protected by a minimum runtime in this cycle."""
        if self.world.latest_start > self.now or self.policy.reclaim_min_runtime_seconds > 0:
            return False
        return all(
            not queue.reclaim_min_runtime_seconds or queue.reclaim_min_runtime_seconds <= 0
            for queue in self.queues.values()
        )

    def _reclaim_filter(self, workload: Workload, pool: str) -> Callable[[Candidate], bool]:
        """`_reclaimable` for one search, remembering refusals.

        Within a search, queues only lose usage, so a (queue, size) once refused stays refused:
        the memo turns a scan of thousands of ineligible candidates into dictionary hits.
        """
        refused: set[tuple[str, int]] = set()

        def eligible(candidate: Candidate) -> bool:
            other = candidate.workload
            if other.name in self.claimed:
                return False
            if not candidate.accounted:
                return True  # already evicting, whatever its queue: its room is free to use
            if other.queue == workload.queue:
                return False
            key = (other.queue, self.state.charge(other, pool))
            if key in refused:
                return False
            if self._reclaimable(candidate, workload, pool):
                return True
            refused.add(key)
            return False

        return eligible

    def _reclaimable(self, candidate: Candidate, workload: Workload, pool: str) -> bool:
        """Whether reclaim may take `candidate` for `workload`: two rules, as in DESIGN.md.

        - fair share: the reclaimer's side stays within its fair share and the victim's side is
          above its own;
        - guaranteed quota: the reclaimer's side stays within its quota, and then it may take
          from any side above its quota, even one within its fair share - a guarantee is a
          guarantee, also when the borrowed GPUs are spread over the cluster.
        Either way the victim's side never drops below its quota. Only the queues below the two
        workloads' lowest common ancestor are compared: moving GPUs between siblings does not
        change what their common parent holds. No loop: what the reclaimer gains, it holds
        within its share or quota, where it is no victim by either rule.
        """
        victim = candidate.workload
        mine = list(self.state.ancestry(workload.queue))
        theirs = list(self.state.ancestry(victim.queue))
        common = set(mine) & set(theirs)
        need = self.state.charge(workload, pool)
        within_share = within_quota = True
        for name in mine:
            if name in common:
                break
            after = self.state.allocated(name, pool) + need
            within_share &= after <= self.shares.get((name, pool), 0)
            within_quota &= after <= self.world.entitlement(name, pool).quota
        if not (within_share or within_quota):
            return False
        charge = self.state.charge(victim, pool)
        for name in theirs:
            if name in common:
                break
            # What the queue runs: a nominee of this cycle counts for its queue's own
            # decisions, but it is not work that runs and can be taken.
            held = self.state.allocated(name, pool) - self.promised.get((name, pool), 0)
            quota = self.world.entitlement(name, pool).quota
            if held - charge < quota:
                return False
            if not within_quota and held <= self.shares.get((name, pool), 0):
                return False
        return True

    def _past_min_runtime(self, workload: Workload, *, reclaim: bool) -> bool:
        started = workload.started_at or 0.0
        return self.now - started >= self._min_runtime(workload.queue, reclaim=reclaim)

    def _min_runtime(self, queue_name: str, *, reclaim: bool) -> float:
        """How long work of `queue_name` is protected from reclaim (or from preemption)."""
        queue = self.queues.get(queue_name)
        if reclaim:
            own = queue.reclaim_min_runtime_seconds if queue else None
            return self.policy.reclaim_min_runtime_seconds if own is None else own
        own = queue.preempt_min_runtime_seconds if queue else None
        return self.policy.preempt_min_runtime_seconds if own is None else own

    def _commit(
        self, workload: Workload, pool: str, found: VictimSearch, cause: EvictionCause
    ) -> None:
        """Record evictions and the beneficiary's wait.

        The victims keep their GPUs until gone but stop counting for their queue, and the
        beneficiary counts already, so later decisions see the world after the evictions.
        """
        names = []
        freed = 0
        if self._room is not None:
            self._room.claim(pool, found.victims)  # before they count as claimed
        for candidate in found.victims:
            victim = candidate.workload
            self.claimed.add(victim.name)
            names.append(victim.name)
            freed += self.state.charge(victim, pool)
            if not candidate.accounted:
                continue
            self.state.account(victim, pool, -1)
            self.evicted.append((victim, pool))
            self.evictions.append(
                Eviction(
                    workload=victim.name,
                    cause=cause,
                    beneficiary=workload.name,
                    message=self._eviction_message(victim, workload, pool, cause),
                )
            )
        self.state.account(workload, pool, +1)
        for name in self.state.ancestry(workload.queue):
            key = (name, pool)
            self.promised[key] = self.promised.get(key, 0) + self.state.charge(workload, pool)
        reason = WaitingForEviction(pool=pool, victims=tuple(names), freed_milli=freed)
        self.nominated[workload.name] = (reason, workload, pool)

    def _eviction_message(
        self, victim: Workload, beneficiary: Workload, pool: str, cause: EvictionCause
    ) -> str:
        if cause is EvictionCause.PREEMPT:
            return (
                f"preempted by {beneficiary.name} (priority {beneficiary.priority} > "
                f"{victim.priority}) in queue {victim.queue}"
            )
        held = self.state.allocated(victim.queue, pool) + self.state.charge(victim, pool)
        share = self.shares.get((victim.queue, pool), 0)
        if held > share:
            return (
                f"reclaimed for {beneficiary.name}: queue {victim.queue} held "
                f"{format_gpus(held)} GPUs in pool {pool}, above its fair share of "
                f"{format_gpus(share)}; queue {beneficiary.queue} is below its fair share"
            )
        quota = self.world.entitlement(victim.queue, pool).quota
        return (
            f"reclaimed for {beneficiary.name}: queue {victim.queue} held "
            f"{format_gpus(held)} GPUs in pool {pool}, beyond its quota of "
            f"{format_gpus(quota)}; queue {beneficiary.queue} takes back its guaranteed "
            f"quota"
        )

    def _over_share_note(self, queue: str, pool: str, held: int, need: int) -> str:
        key = ("over_share", queue, pool, held, need)
        if key not in self._explain_cache:
            self._explain_cache[key] = self._over_share_text(queue, pool, held, need)
        text = self._explain_cache[key]
        assert isinstance(text, str)
        return text

    def _over_share_text(self, queue: str, pool: str, held: int, need: int) -> str:
        share = self.shares.get((queue, pool), 0)
        return (
            f"queue {queue} holds {format_gpus(held)} of its {format_gpus(share)}-GPU fair share "
            f"in pool {pool}: this step's {format_gpus(need)} more may only use idle GPUs, "
            "not reclaim"
        )

    # -- 5. preempt -----------------------------------------------------------------------

    def preempt(self) -> None:
        """Phase 5: inside a queue, higher-priority work evicts lower-priority preemptible work."""
        for workload in self._still_pending(self._queue_may_preempt):
            if not self._may_preempt(workload):
                continue
            if isinstance(self.reasons.get(workload.name), OverQuotaNotAllowed):
                continue
            for pool in self.pools_for[workload.name]:
                candidates = []
                for candidate in self._preempt_candidates(workload.queue, pool, workload.priority):
                    if candidate.workload.priority >= workload.priority:
                        break  # sorted by priority: nothing further is preemptible by it
                    if candidate.workload.name not in self.claimed:
                        candidates.append(candidate)
                if not candidates:
                    continue
                # Room already being made is used before anything more is evicted.
                groups = [("", self._evicting_in(pool)), *by_locality(self.state, candidates)]
                found = find_victims(
                    self.state,
                    workload,
                    pool,
                    groups,
                    eligible=lambda candidate: candidate.workload.name not in self.claimed,
                    admissible=self._admissible(workload, pool),
                )
                if found is not None:
                    self.reasons.pop(workload.name, None)
                    self._commit(workload, pool, found, EvictionCause.PREEMPT)
                    break

    def _preempt_candidates(self, queue: str, pool: str, below: int) -> list[Candidate]:
        """Running preemptible work of `queue` in `pool` past its minimum runtime.

        Lowest priority first; built once per queue, pool and cycle, and only when some of it
        has a priority under `below`.
        """
        key = (queue, pool)
        lowest = self._lowest_placed_priority(queue, pool)
        if lowest is None or lowest >= below:
            return []
        if key not in self._preempt_order:
            self._preempt_order[key] = sorted(
                (
                    Candidate(
                        other,
                        (other.priority, -(other.started_at or 0.0), other.name),
                        accounted=True,
                    )
                    for other in self.placed_by_queue_pool.get(key, {}).values()
                    if other.state is WorkloadState.RUNNING
                    and other.is_preemptible
                    and self._past_min_runtime(other, reclaim=False)
                ),
                key=lambda c: c.cost,
            )
        return self._preempt_order[key]

    def _evicting_in(self, pool: str) -> list[Candidate]:
        """Workloads of `pool` already on their way out, offered at no cost.

        Built once per pool and cycle; the search's `eligible` skips those claimed since.
        """
        if pool not in self._evicting:
            self._evicting[pool] = sorted(
                (
                    Candidate(other, (-math.inf, other.name), accounted=False)
                    for other in self.placed_by_pool.get(pool, {}).values()
                    if other.state is WorkloadState.EVICTING
                ),
                key=lambda c: c.cost,
            )
        return self._evicting[pool]

    def _queue_may_preempt(self, queue: str, items: list[Workload]) -> bool:
        """Whether `queue` runs, in some pool, anything below its highest pending priority."""
        highest = items[0].priority  # in queue order: highest priority first
        for pool in self.state.pools:
            lowest = self._lowest_placed_priority(queue, pool)
            if lowest is not None and lowest < highest:
                return True
        return False

    def _may_preempt(self, workload: Workload) -> bool:
        """Whether its queue runs anything of lower priority in one of its pools.

        Only such workloads can preempt, so phase 5 orders only them (same order, fewer).
        """
        for pool in self.pools_for[workload.name]:
            lowest = self._lowest_placed_priority(workload.queue, pool)
            if lowest is not None and lowest < workload.priority:
                return True
        return False

    def _lowest_placed_priority(self, queue: str, pool: str) -> int | None:
        """The lowest priority `queue` runs in `pool` (None: nothing), once per cycle."""
        key = (queue, pool)
        if key not in self._lowest_priority:
            placed = self.placed_by_queue_pool.get(key, {}).values()
            self._lowest_priority[key] = min((w.priority for w in placed), default=None)
        return self._lowest_priority[key]

    def _still_pending(
        self, queues: Callable[[str, list[Workload]], bool] | None = None
    ) -> Iterator[Workload]:
        """Pending workloads not yet admitted or nominated, in phase-2 order (see `_runs`)."""
        for _, items in self._runs(queues):
            for workload in items:
                if workload.name not in self.admitted and workload.name not in self.nominated:
                    yield workload

    def _waits(self, workload: Workload) -> bool:
        """Not admitted and not nominated in this cycle (yet)."""
        return workload.name not in self.admitted and workload.name not in self.nominated

    def _runs(
        self, queues: Callable[[str, list[Workload]], bool] | None = None
    ) -> Iterator[tuple[tuple[str, str] | None, Iterable[Workload]]]:
        """The still-pending workloads of the queues `queues` accepts, in phase-2 order, in runs.

        The order is taken when the iteration starts, as the queues stand then: by the key of
        each queue and first pool (`_queue_key` of its first workload), then queue order. The
        queue order is phase 3's, so only the groups are sorted, not every workload. A run is
        one group, named by its (queue, pool), or several with equal keys (one queue, several
        pools) merged in queue order, named None. A run may hold workloads admitted or
        nominated: callers skip them (`_waits`), also those admitted or nominated since.
        """
        keyed = []
        for queue, items in self._in_order.items():
            if queues is not None and not queues(queue, items):
                continue
            first_pools = self.waiting.first_pools[queue]
            if len(first_pools) == 1:  # the usual case: the queue's list is one group
                head = next((w for w in items if self._waits(w)), None)
                if head is not None:
                    (pool,) = first_pools
                    keyed.append((self._queue_key(queue, head), (queue, pool), items))
                continue
            groups: dict[tuple[str, str], list[Workload]] = {}
            for workload in items:
                if self._waits(workload):
                    groups.setdefault((queue, self.pools_for[workload.name][0]), []).append(
                        workload
                    )
            for group, members in groups.items():
                keyed.append((self._queue_key(queue, members[0]), group, members))
        keyed.sort(key=lambda entry: entry[0])
        start = 0
        while start < len(keyed):
            end = start + 1
            while end < len(keyed) and keyed[end][0] == keyed[start][0]:
                end += 1  # equal keys (one queue, several pools): merged in queue order
            if end == start + 1:
                yield keyed[start][1], keyed[start][2]
            else:
                run = [items for _, _, items in keyed[start:end]]
                yield None, heapq.merge(*run, key=workload_order)
            start = end

    # -- 6. explain -----------------------------------------------------------------------

    def decisions(self) -> Plan:
        """The plan without phase 6: admissions, evictions, reservations and shares only."""
        self._unaccount_nominees()
        return Plan(
            admissions=self._admissions(),
            evictions=self._evictions(),
            reservations=tuple(self.reservations),
            shares=self._queue_shares(),
        )

    def _unaccount_nominees(self) -> None:
        """The workloads waiting for evictions stop counting for their queues: not running yet.

        Phase 4 counted each for its queue, so that later decisions saw the world after the
        evictions; the plan's shares, and the world after the cycle, must not.
        """
        for _, workload, pool in self.nominated.values():
            self.state.account(workload, pool, -1)

    def _admissions(self) -> tuple[Admission, ...]:
        return tuple(
            Admission(name, allocation) for name, (_, allocation) in sorted(self.admitted.items())
        )

    def _evictions(self) -> tuple[Eviction, ...]:
        return tuple(sorted(self.evictions, key=lambda e: e.workload))

    def explain(self) -> Plan:
        """Phase 6: the plan, with one typed reason for every workload still pending."""
        self._unaccount_nominees()
        self._reserved_by = {r.workload: r for r in self.reservations}
        # Most workloads wait for a reason that follows from their (queue, first pool, shape)
        # alone (`_reason`): worked out once per such class and handed to its members, then
        # the few with a reason of their own are set apart.
        own = self._own_reasons()
        workloads = self.waiting.workloads
        by_class = {}
        for kind, members in self.waiting.classes.items():
            sample = next((name for name in members if name not in own), None)
            if sample is not None:
                by_class[kind] = self._shared(self._reason(workloads[sample]))
        reason_of = {
            name: by_class[kind] for name, kind in self.waiting.class_of.items() if kind in by_class
        }
        for name in own:
            if name not in self.admitted and name not in self.nominated:
                reason_of[name] = self._reason(workloads[name])
        reason_of.update(self.reasons)
        reason_of.update((name, entry[0]) for name, entry in self.nominated.items())
        admitted = self.admitted
        # A workload that waits for the same reason (the very value, `_shared`) as at the last
        # cycle keeps its `Pending`: long queues wait for a few reasons, cycle after cycle.
        last = self.world.last_pending
        pending = []
        for name in self.waiting.names:
            if name in admitted:
                continue
            reason = reason_of[name]
            entry = last.get(name)
            pending.append(
                entry if entry is not None and entry.reason is reason else Pending(name, reason)
            )
        self.world.last_pending = {entry.workload: entry for entry in pending}
        self.world.last_reasons = self._shared_reasons
        return Plan(
            admissions=self._admissions(),
            evictions=self._evictions(),
            pending=tuple(pending),
            reservations=tuple(self.reservations),
            shares=self._queue_shares(),
        )

    def _shared(self, reason: _R) -> _R:
        """`reason`, or an equal value already handed out at the last cycle or this one."""
        found = self._shared_reasons.get(reason)
        if found is None:
            found = self._shared_reasons[reason] = self.world.last_reasons.get(reason, reason)
        assert isinstance(found, type(reason))
        return found

    def _own_reasons(self) -> set[str]:
        """Pending workloads whose reason may not follow from their class alone.

        Those phase 4 noted something for, and those holding a reservation.
        """
        return self.notes.keys() | self._reserved_by.keys()

    def _reason(self, workload: Workload) -> Reason:
        """Why a workload neither nominated nor held back by a gate waits.

        Unless the workload holds a reservation or needs one topology domain, the reason
        follows from its first pool, its shape and what phase 4 noted: one shared value each.
        """
        name = workload.name
        pool = self.pools_for[name][0]
        wish = workload.topology
        if name in self._reserved_by or (wish is not None and wish.required and workload.pods > 1):
            return self._reason_of(workload, pool)
        note = self.notes.get(name)
        if note is None:
            held = self._over_share_group.get((workload.queue, pool))
            if held is not None:
                note = (workload.queue, pool, held, self.state.charge(workload, pool))
        key = ("reason", pool, self.shape_of[name], note)
        found = self._explain_cache.get(key)
        if found is None:
            found = self._explain_cache[key] = self._reason_of(workload, pool)
        assert isinstance(found, Reason)
        return found

    def _reason_of(self, workload: Workload, pool: str) -> Reason:
        holder = self._reservation_holder(workload, pool)
        if holder is not None:
            return BlockedByReservation(
                pool=pool,
                holder=holder.workload,
                reserved_nodes=len(holder.nodes),
                reserved_free_milli=holder.free_milli,
                holder_needs_milli=holder.needed_milli,
            )
        request = workload.request
        wish = workload.topology
        if wish is not None and wish.required and workload.pods > 1:
            key = (
                "domain",
                pool,
                wish.level,
                request,
                workload.models,
                workload.node_selector,
                workload.tolerations,
            )
            if key not in self._explain_cache:
                capacity = domain_capacity(self.state, workload, pool, wish.level)
                self._explain_cache[key] = max(
                    capacity.items(), key=lambda item: (item[1], item[0]), default=("", 0)
                )
            best = self._explain_cache[key]
            assert isinstance(best, tuple)
            return NoTopologyDomain(
                pool=pool,
                level=wish.level,
                pods=workload.pods,
                per_pod=self._per_pod(workload),
                best_domain=best[0],
                best_domain_pods=best[1],
            )
        note = self._note(workload, pool)
        reservation = self._reserved_by.get(workload.name)
        if reservation is not None:
            note = (
                f"holding {len(reservation.nodes)} reserved node(s) with "
                f"{format_gpus(reservation.free_milli)} of "
                f"{format_gpus(reservation.needed_milli)} GPUs free"
            )
        # Many workloads wait for the same reason: one shared value per shape and note.
        shared = ("capacity", pool, self.shape_of[workload.name], note)
        found = self._explain_cache.get(shared)
        if found is None:
            found = self._explain_cache[shared] = self._insufficient(workload, pool, note)
        assert isinstance(found, InsufficientCapacity)
        return found

    def _insufficient(self, workload: Workload, pool: str, note: str) -> InsufficientCapacity:
        if ("free", pool) not in self._explain_cache:
            self._explain_cache["free", pool] = self.state.free_milli(pool)
        free = self._explain_cache["free", pool]
        assert isinstance(free, int)
        return InsufficientCapacity(
            pool=pool,
            pods=workload.pods,
            per_pod=self._per_pod(workload),
            free_milli=free,
            largest_free_node=self._largest_free(pool),
            fair_share_note=note,
        )

    def _note(self, workload: Workload, pool: str) -> str:
        """What phase 4 found for `workload` (first pool `pool`), in words; "" if nothing."""
        note = self.notes.get(workload.name)
        if note is None:
            held = self._over_share_group.get((workload.queue, pool))
            if held is None:
                return ""
            note = (workload.queue, pool, held, self.state.charge(workload, pool))
        if isinstance(note, str):
            return note
        return self._over_share_note(*note)

    def _per_pod(self, workload: Workload) -> str:
        """`describe_pod` of the workload's request, once per shape and cycle."""
        key = ("per_pod", self.shape_of[workload.name])
        if key not in self._explain_cache:
            self._explain_cache[key] = describe_pod(workload.request)
        text = self._explain_cache[key]
        assert isinstance(text, str)
        return text

    def _reservation_holder(self, workload: Workload, pool: str) -> Reservation | None:
        """The gang whose reservation keeps `workload` out, if lifting it would let it fit.

        With every reservation lifted, placement no longer depends on the workload's name, so
        the answer is shared by every workload of the same shape that holds no reservation.
        """
        if not self.reservations:
            return None
        if workload.name in self._reserved_by:
            return self._reservation_holder_uncached(workload, pool)
        key = ("holder", pool, self.shape_of[workload.name])
        if key not in self._explain_cache:
            self._explain_cache[key] = self._reservation_holder_uncached(workload, pool)
        found = self._explain_cache[key]
        assert found is None or isinstance(found, Reservation)
        return found

    def _reservation_holder_uncached(self, workload: Workload, pool: str) -> Reservation | None:
        held = [r for r in self.reservations if r.pool == pool and r.workload != workload.name]
        if not held:
            return None
        lifted = [
            (self.state.node_by_name[name], r.workload)
            for r in self.reservations
            for name in r.nodes
        ]
        for node, _ in lifted:
            node.reserved_for = None
        allocation = place(self.state, workload, pool)
        if allocation is not None:
            self.state.give(workload, allocation)
        for node, holder in lifted:
            node.reserved_for = holder
        if allocation is None:
            return None
        used = {pod.node for pod in allocation}
        for reservation in held:
            if used & set(reservation.nodes):
                return reservation
        return None

    def _largest_free(self, pool: str) -> str:
        key = ("largest", pool)
        if key not in self._explain_cache:
            self._explain_cache[key] = self._largest_free_uncached(pool)
        text = self._explain_cache[key]
        assert isinstance(text, str)
        return text

    def _largest_free_uncached(self, pool: str) -> str:
        pool_state = self.state.pools[pool]
        if any(pool_state.partial):
            return self._largest_free_scan(pool)
        # No shared GPU: a node's free capacity is its whole free GPUs, so the fullest bucket's
        # first node (lowest id) is the answer, without a scan of every node.
        fullest = next((b for b in reversed(pool_state.whole) if b), None)
        if fullest is None:
            return "no ready node"
        node = self.state.nodes[fullest[0]]
        return f"{format_gpus(node.free_milli())} GPUs free ({node.node.name})"

    def _largest_free_scan(self, pool: str) -> str:
        """`_largest_free_uncached` by looking at every node of the pool."""
        best = max(
            (
                self.state.nodes[n]
                for n in self.state.pools[pool].nodes
                if self.state.nodes[n].schedulable
            ),
            key=lambda n: (n.free_milli(), -n.id),
            default=None,
        )
        if best is None:
            return "no ready node"
        return f"{format_gpus(best.free_milli())} GPUs free ({best.node.name})"

    def _queue_shares(self) -> tuple[QueueShare, ...]:
        shares = []
        for (queue, pool), share in sorted(self.shares.items()):
            entry = self.world.entitlement(queue, pool)
            allocated = self.state.allocated(queue, pool)
            demand = self.demand.get((queue, pool), 0)
            if not (entry.explicit or share or allocated or demand):
                continue
            shares.append(
                QueueShare(
                    queue=queue,
                    pool=pool,
                    quota_milli=entry.quota,
                    limit_milli=entry.limit,
                    fair_share_milli=share,
                    allocated_milli=allocated,
                    demand_milli=demand,
                )
            )
        return tuple(shares)


def _fails_for_good(workload: Workload) -> bool:
    """Whether a failed placement of this shape stays failed while phase 3 only takes room.

    Phase 3 only admits and reserves (reservations are made for the workload that just failed,
    never for a later one), so free room only shrinks. A single pod fails when no node can
    hold it, and shrinking room makes no such node. A gang of whole-GPU pods with no CPU,
    memory or topology wish fits exactly when the nodes' free GPUs, counted in pods, add up
    to the gang, which also only shrinks. Other gangs are placed greedily pod by pod, where
    less room may lead to different, luckier choices, so their failures are not remembered.
    """
    if workload.pods == 1:
        return True
    request = workload.request
    return (
        bool(request.gpus)
        and not (request.cpu_milli or request.memory_mib)
        and workload.topology is None
    )
