"""Phases 0 to 3 of a cycle: validate, fair share, order, and allocate (or reserve).

Each takes the `Cycle` and records its decisions there: phase 0 the reasons of invalid targets,
phase 1 every queue's fair share and demand, phases 2 and 3 the admissions, the gate reasons
of workloads a queue gate holds back, and the reservations of blocked gangs.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from fractions import Fraction
from typing import TYPE_CHECKING

from scheduler_service.core._fairshare import ShareInput, fair_shares
from scheduler_service.core._model import Allocation, Workload, gpus_to_milli
from scheduler_service.core._pending import OrderKey, workload_order
from scheduler_service.core._placement import place, place_least_harm, pod_capacity, static_fit
from scheduler_service.core._plan import InvalidTarget, Reason, Reservation

if TYPE_CHECKING:
    from scheduler_service.core._cycle import Cycle

__all__ = ["allocate", "fair_share", "validate"]

_ShapeKey = tuple[str, int, int]
"""(pool, shape, charge) of a workload only its queue's limit can gate (`Target.limit_only`)."""


def validate(cycle: Cycle) -> None:
    """Phase 0: workloads with an impossible target get an InvalidTarget reason; the rest go on.

    The verdict depends on the workload and on nodes and queues, which a world never changes:
    the world's `PendingIndex` keeps it while the workload waits.
    """
    for name, problem in cycle.waiting.invalid.items():
        cycle.reasons[name] = InvalidTarget(problem)


def fair_share(cycle: Cycle) -> None:
    """Phase 1: compute every queue's fair share in every pool."""
    state = cycle.state
    leaf_demand = dict(state.placed_charge)
    for key, amount in cycle.waiting.demand.items():
        leaf_demand[key] = leaf_demand.get(key, 0) + amount
    for (leaf, pool), amount in sorted(leaf_demand.items()):
        for name in state.ancestry(leaf):
            cycle.demand[name, pool] = cycle.demand.get((name, pool), 0) + amount
    for pool, pool_state in state.pools.items():
        demands = tuple(cycle.demand.get((name, pool), 0) for name in cycle.queues)
        shares = _fair_shares(cycle, pool, pool_state.capacity_milli, demands)
        for name, share in shares.items():
            cycle.shares[name, pool] = share


def _fair_shares(
    cycle: Cycle, pool: str, capacity: int, demands: tuple[int, ...]
) -> dict[str, int]:
    """`fair_shares` of `pool` for the queues' `demands` (in `cycle.queues` order).

    Remembered per pool by the world until capacity or demand changes: demand changes when
    work is submitted or leaves, not when it is admitted, so consecutive cycles often share
    it, and water-filling with fractions is not cheap.
    """
    key = (capacity, demands)
    remembered = cycle.world.fair_share_memo.get(pool)
    if remembered is not None and remembered[0] == key:
        return remembered[1]
    inputs = []
    for queue, demand in zip(cycle.queues.values(), demands, strict=True):
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
    cycle.world.fair_share_memo[pool] = (key, shares)
    return shares


def allocate(cycle: Cycle) -> None:
    """Phases 2 and 3: admit what fits, queue by queue in fair-share order."""
    _Allocator(cycle).run()


class _Allocator:
    """Phases 2 and 3 of one cycle, with what they remember while they run."""

    def __init__(self, cycle: Cycle) -> None:
        self.cycle = cycle
        self.world = cycle.world
        self.state = cycle.state
        self.waiting = cycle.waiting
        self.pools_for = cycle.pools_for
        self.shape_of = cycle.shape_of
        self.unplaceable: set[tuple[str, int]] = set()
        """(pool, shape) that failed to place and cannot fit later in the phase."""
        self.lanes: dict[tuple[str, str], deque[Workload]] = {}
        """Per (queue, pool), the workloads whose first attempt starts there (`run`)."""
        self.moved: dict[tuple[str, str], list[tuple[OrderKey, Workload]]] = {}
        """Per lane, the workloads that moved in after failing an earlier attempt (a heap)."""
        self.tried: dict[str, tuple[str, ...]] = {}
        """The pools each moved workload has tried."""
        self.heap: list[_LaneEntry] = []
        """The lanes in order (`_entry`)."""

    def run(self) -> None:
        """Take lanes in order (`Cycle.queue_key` of each lane's head), re-keyed as they go.

        A lane is the workloads of one queue that try the same pool next, in queue order; most
        queues have one. Room in one pool is not room in another, so a workload competes for
        each pool with the standing its queue has there, and tries its pools in turn
        (`Cycle.attempt`): one that fails moves on to the lane of its next attempt. A queue
        whose head borrows in one pool thus does not hold back its work owed quota in another,
        and a workload owed quota in one pool does not take another's room at that rank
        (docs/core.md, "Order"). Lanes of one queue with equal keys go in queue order.
        """
        cycle = self.cycle
        lanes = self.lanes = self._lanes()
        moved = self.moved
        shapes_left = {lane: self._limit_only_shapes(lane, items) for lane, items in lanes.items()}
        heap = self.heap = [self._entry(lane, items[0]) for lane, items in lanes.items()]
        heapq.heapify(heap)
        blocked_heads: set[tuple[str, str]] = set()
        while heap:
            *_, lane = heapq.heappop(heap)
            queue = lane[0]
            items = lanes.get(lane, deque())
            shapes = shapes_left.get(lane)
            while (workload := self._head(lane)) is not None:
                if (
                    lane in blocked_heads
                    and cycle.shortcuts
                    and not moved.get(lane)
                    and self._rest_cannot_change(queue, shapes)
                ):
                    self._gate_all(queue, items)  # the rest leaves the order: it changes nothing
                    break
                if items and workload is items[0]:
                    items.popleft()
                else:
                    heapq.heappop(moved[lane])
                if shapes is not None:
                    _use_one(shapes, self.waiting.limit_only_key[workload.name])
                after = self._attempt(workload, self.tried.pop(workload.name, ()))
                if after is None:
                    pass  # admitted
                elif len(after) < len(self.pools_for[workload.name]):
                    self._move_on(workload, after)
                elif lane not in blocked_heads:
                    blocked_heads.add(lane)
                    self._reserve_for(workload)
                following = self._head(lane)
                if following is None:
                    break
                position = self._entry(lane, following)
                if heap and heap[0] < position:  # another lane comes first now
                    heapq.heappush(heap, position)
                    break

    def _head(self, lane: tuple[str, str]) -> Workload | None:
        """The first workload of `lane` in queue order, None when it is empty."""
        items, late = self.lanes.get(lane), self.moved.get(lane)
        if late and (not items or late[0][0] < workload_order(items[0])):
            return late[0][1]
        return items[0] if items else None

    def _entry(self, lane: tuple[str, str], head: Workload) -> _LaneEntry:
        """A lane's place in the order: its queue's key for its head, then queue order."""
        key = self.cycle.queue_key(lane[0], head, self.tried.get(head.name, ()))
        return (key, workload_order(head), lane)

    def _move_on(self, workload: Workload, tried: tuple[str, ...]) -> None:
        """`workload` failed in the pools `tried`: it joins the lane of its next attempt."""
        self.tried[workload.name] = tried
        lane = (workload.queue, self.cycle.attempt(workload, tried)[0])
        late = self.moved.setdefault(lane, [])
        if not late and not self.lanes.get(lane):  # the lane is not in the order: it joins
            heapq.heappush(self.heap, self._entry(lane, workload))
        heapq.heappush(late, (workload_order(workload), workload))

    def _attempt(self, workload: Workload, before: tuple[str, ...]) -> tuple[str, ...] | None:
        """Admit `workload` in its next pools (`Cycle.attempt`) after `before`.

        None if admitted, else every pool tried so far. The reason told is the first queue
        gate met.
        """
        cycle = self.cycle
        pools = cycle.attempt(workload, before)
        earlier = cycle.reasons.get(workload.name)
        if self._admit(workload, pools):
            cycle.reasons.pop(workload.name, None)
            return None
        if earlier is not None:
            cycle.reasons[workload.name] = earlier
        return (*before, *pools)

    def _lanes(self) -> dict[tuple[str, str], deque[Workload]]:
        """Every queue's pending workloads by (queue, first pool of its first attempt).

        Each lane in queue order (`Cycle.attempt`).
        """
        cycle = self.cycle
        lanes: dict[tuple[str, str], deque[Workload]] = {}
        for queue, items in cycle.in_order.items():
            first_pools = self.waiting.first_pools[queue]
            if len(first_pools) == 1 and not self.waiting.multi_pool[queue]:
                (pool,) = first_pools  # the usual case: the queue is one lane
                lanes[queue, pool] = deque(items)
                continue
            for workload in items:
                lane = (queue, cycle.attempt(workload, ())[0])
                lanes.setdefault(lane, deque()).append(workload)
        return lanes

    def _limit_only_shapes(
        self, lane: tuple[str, str], items: Iterable[Workload]
    ) -> Counter[_ShapeKey] | None:
        """A lane's (pool, shape, charge)s when all of its queue is limit-only, else None.

        Limit-only workloads accept one pool, so such a queue's lanes never change.
        """
        queue = lane[0]
        if self.waiting.not_limit_only[queue]:
            return None
        if len(self.waiting.first_pools[queue]) == 1:
            return Counter(self.waiting.limit_only_shapes[queue])
        return Counter(self.waiting.limit_only_key[w.name] for w in items)

    def _rest_cannot_change(self, queue: str, shapes: Counter[_ShapeKey] | None) -> bool:
        """Whether what is left of a queue whose head is blocked can change nothing in phase 3.

        True when it is all limit-only (`Target.limit_only`: at most the queue's own limit
        gates it) and each (pool, shape, charge) of it either already failed to place for good
        or goes past the queue's limit: each would be tried and fail, gated or not placed, and
        leave everything as it was but its gate reason (`_gate_all`). The queue's holdings do
        not change meanwhile, for nothing of it is admitted.
        """
        if shapes is None:
            return False
        for pool, shape, charge in shapes:
            if (pool, shape) in self.unplaceable:
                continue
            limit = self.world.entitlement(queue, pool).limit
            if limit is None or self.state.allocated(queue, pool) + charge <= limit:
                return False
        return True

    def _gate_all(self, queue: str, items: Iterable[Workload]) -> None:
        """Give the gate reason to each of `items` (limit-only, of `queue`) its limit holds back.

        One value per (pool, charge), as the queue's holdings stand (they do not change while
        nothing of the queue is admitted).
        """
        if not self.waiting.may_be_gated[queue]:
            return  # every one ungated: no limit, no gate
        gated: dict[tuple[str, int], Reason | None] = {}
        for workload in items:
            pool, _, charge = self.waiting.limit_only_key[workload.name]
            if (pool, charge) not in gated:
                gate = self.cycle.gate(workload, pool)
                gated[pool, charge] = None if gate is None else self.cycle.shared(gate)
            reason = gated[pool, charge]
            if reason is not None:
                self.cycle.reasons[workload.name] = reason

    def _admit(self, workload: Workload, pools: Iterable[str]) -> bool:
        gate_reason: Reason | None = None
        shape = self.shape_of[workload.name]
        open_pools = []
        for pool in pools:
            gate = self.cycle.gate(workload, pool)
            if gate is not None:
                gate_reason = gate_reason or gate
            elif (pool, shape) not in self.unplaceable:
                open_pools.append(pool)
        allocation = self._place(workload, open_pools)
        if allocation is not None:
            self.cycle.admitted[workload.name] = (workload, allocation)
            return True
        if self.cycle.shortcuts and _fails_for_good(workload):
            self.unplaceable.update((pool, shape) for pool in open_pools)
        if gate_reason is not None:
            self.cycle.reasons[workload.name] = gate_reason
        return False

    def _place(self, workload: Workload, pools: list[str]) -> Allocation | None:
        """Place `workload` in one of `pools`, each scored against its learned request mix.

        Pools the user listed are tried in the user's order (a preference wins); pools the
        workload merely accepts (any pool, or every pool with one of its GPU models) compete:
        it goes where it stays within its queue's quota if it can, and there where it adds the
        least fragmentation (`place_least_harm`).
        """
        if workload.pools or len(pools) == 1:
            for pool in pools:
                allocation = place(self.state, workload, pool, scorer=self.world.scorer(pool))
                if allocation is not None:
                    return allocation
            return None

        def borrowing(pool: str) -> bool:
            held = self.state.allocated(workload.queue, pool)
            quota = self.world.entitlement(workload.queue, pool).quota
            return held + self.state.charge(workload, pool) > quota

        placed = place_least_harm(self.state, workload, pools, self.world.scorer, borrowing)
        return None if placed is None else placed[1]

    # -- reservations ---------------------------------------------------------------------

    def _reserve_for(self, workload: Workload) -> None:
        """Hold nodes for a blocked gang at the head of its lane, if its queue is entitled."""
        cycle = self.cycle
        if not cycle.policy.reserve_for_gangs or (
            workload.pods == 1 and workload.request.gpus <= 1
        ):
            return
        if workload.name in cycle.reasons:
            return  # held back by a queue gate, not by capacity: nothing to reserve
        pool = self.pools_for[workload.name][0]
        # The gang alone must fit its queue's entitlement. The queue's own running work does not
        # count against it: that work finishes, and the reservation makes sure the room it
        # frees goes to the gang rather than to the queue's later small steps.
        entitlement = max(
            cycle.shares.get((workload.queue, pool), 0),
            self.world.entitlement(workload.queue, pool).quota,
        )
        if self.state.charge(workload, pool) > entitlement:
            return
        best = self._reservation_nodes(workload, pool)
        if best is None:
            return
        for node_id in best:
            self.state.nodes[node_id].reserved_for = workload.name
        if (
            self.state.allocated(workload.queue, pool) + self.state.charge(workload, pool)
            > self.world.entitlement(workload.queue, pool).quota
        ):
            cycle.borrowing_reservations.add(workload.name)
        cycle.reservations.append(
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
        if (
            self.cycle.shortcuts
            and level is None
            and request.gpus
            and not (request.cpu_milli or request.memory_mib)
        ):
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


_LaneEntry = tuple[tuple[bool, float, float, int, str], OrderKey, tuple[str, str]]
"""A lane's place in phase 3's heap: its queue's key for its head, then queue order."""


def _use_one(shapes: Counter[_ShapeKey], key: _ShapeKey) -> None:
    shapes[key] -= 1
    if not shapes[key]:
        del shapes[key]


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
