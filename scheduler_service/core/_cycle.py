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
from collections import deque
from collections.abc import Callable, Iterator
from fractions import Fraction

from scheduler_service.core._fairshare import ShareInput, fair_shares
from scheduler_service.core._fragmentation import Fragmentation, ShapeMix
from scheduler_service.core._model import (
    Allocation,
    Snapshot,
    Workload,
    WorkloadState,
    gpus_to_milli,
)
from scheduler_service.core._placement import (
    describe_pod,
    domain_capacity,
    place,
    pod_capacity,
    static_fit,
)
from scheduler_service.core._placement import shape as placement_shape
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


def schedule(snapshot: Snapshot, now: float) -> Plan:
    """Decide one cycle: what to admit and where, what to evict, and why the rest waits.

    Pure and deterministic: no I/O, no clock, no randomness; the same snapshot and `now` give
    the same plan, whatever the order of the snapshot's entries.
    """
    return run_cycle(World(snapshot), now)


def run_cycle(world: World, now: float) -> Plan:
    """One cycle on `world`, which is left as it was found (see `_Cycle.undo`)."""
    cycle = _Cycle(world, now)
    try:
        cycle.validate()  # 0
        cycle.fair_share()  # 1
        cycle.allocate()  # 2 and 3: the order drives allocation as queues' standing changes
        cycle.reclaim()  # 4
        cycle.preempt()  # 5
        return cycle.explain()  # 6
    finally:
        cycle.undo()


class _Cycle:
    """Scratch data of one cycle; see the module docstring for the phases."""

    def __init__(self, world: World, now: float) -> None:
        self.world = world
        self.now = now
        self.policy = world.policy
        self.queues = world.queues
        self.state = world.state
        self.all_pending = world.sorted_pending()
        self.pending = self.all_pending  # phase 0 narrows it to workloads with a valid target
        self.placed_by_pool = world.placed_by_pool
        self.placed_by_queue_pool = world.placed_by_queue_pool
        self._reclaim_order: dict[str, LazyOrder] = {}
        self._preempt_order: dict[tuple[str, str], list[Candidate]] = {}
        self._lowest_priority: dict[tuple[str, str], int] = {}
        self._evicting: dict[str, list[Candidate]] = {}
        self.pools_for: dict[str, list[str]] = {}
        self.reasons: dict[str, Reason] = {}
        self.notes: dict[str, str] = {}
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
        self._explain_cache: dict[tuple[object, ...], object] = {}

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
        """Give workloads with an impossible target an InvalidTarget reason; the rest go on."""
        valid = []
        for workload in self.pending:
            problem = self.world.targets.check(workload)
            if isinstance(problem, str):
                self.reasons[workload.name] = InvalidTarget(problem)
            else:
                self.pools_for[workload.name] = problem
                valid.append(workload)
        self.pending = valid

    # -- 1. fair share --------------------------------------------------------------------

    def fair_share(self) -> None:
        """Phase 1: compute every queue's fair share in every pool."""
        leaf_demand = dict(self.state.placed_charge)
        for workload in self.pending:
            for pool in self.pools_for[workload.name]:
                key = (workload.queue, pool)
                leaf_demand[key] = leaf_demand.get(key, 0) + self.state.charge(workload, pool)
        for (leaf, pool), amount in sorted(leaf_demand.items()):
            for name in self.state.ancestry(leaf):
                self.demand[name, pool] = self.demand.get((name, pool), 0) + amount
        for pool, pool_state in self.state.pools.items():
            inputs = []
            for queue in self.queues.values():
                entry = queue.quota_in(pool)
                inputs.append(
                    ShareInput(
                        name=queue.name,
                        parent=queue.parent,
                        quota=gpus_to_milli(entry.quota),
                        limit=None if entry.limit is None else gpus_to_milli(entry.limit),
                        weight=Fraction(entry.over_quota_weight),
                        priority=queue.priority,
                        demand=self.demand.get((queue.name, pool), 0),
                    )
                )
            for name, share in fair_shares(pool_state.capacity_milli, inputs).items():
                self.shares[name, pool] = share

    # -- 2 and 3. order and allocate ------------------------------------------------------

    def allocate(self) -> None:
        """Phases 2 and 3: admit what fits, queue by queue in fair-share order."""
        by_queue: dict[str, deque[Workload]] = {}
        for workload in sorted(self.pending, key=_workload_order):
            by_queue.setdefault(workload.queue, deque()).append(workload)
        heap = [(self._queue_key(queue, items[0]), queue) for queue, items in by_queue.items()]
        heapq.heapify(heap)
        blocked_heads: set[str] = set()
        while heap:
            _, queue = heapq.heappop(heap)
            items = by_queue[queue]
            workload = items.popleft()
            if not self._admit(workload) and queue not in blocked_heads:
                blocked_heads.add(queue)
                self._reserve_for(workload)
            if items:
                heapq.heappush(heap, (self._queue_key(queue, items[0]), queue))

    def _queue_key(self, queue: str, head: Workload) -> tuple[float, int, str]:
        """Queues furthest below their fair share first, then queue priority, then name."""
        pool = self.pools_for[head.name][0]
        share = self.shares.get((queue, pool), 0)
        allocated = self.state.allocated(queue, pool)
        # A queue with no fair share in the pool (weight 0, no quota) only gets idle leftovers.
        ratio = allocated / share if share else math.inf
        return (ratio, -self.queues[queue].priority, queue)

    def _admit(self, workload: Workload) -> bool:
        gate_reason: Reason | None = None
        for pool in self.pools_for[workload.name]:
            gate = self._gate(workload, pool)
            if gate is not None:
                gate_reason = gate_reason or gate
                continue
            allocation = place(self.state, workload, pool, scorer=self._scorer_for(workload))
            if allocation is not None:
                self.admitted[workload.name] = (workload, allocation)
                return True
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
            workloads = [*self.all_pending, *self.world.placed.values()]
            self._scorer = Fragmentation(ShapeMix.of_workloads(workloads))
        return self._scorer

    def _gate(self, workload: Workload, pool: str) -> _GateReason | None:
        """Queue gates: no queue past its limit; non-preemptible work only within quota."""
        charge = self.state.charge(workload, pool)
        for name in self.state.ancestry(workload.queue):
            queue = self.queues[name]
            entry = queue.quota_in(pool)
            allocated = self.state.allocated(name, pool)
            if entry.limit is not None and allocated + charge > gpus_to_milli(entry.limit):
                return QueueAtLimit(name, pool, allocated, charge, gpus_to_milli(entry.limit))
            explicit = name == workload.queue or any(q.pool == pool for q in queue.quotas)
            if not workload.is_preemptible and explicit:
                protected = self.state.usage[name].non_preemptible.get(pool, 0)
                quota = gpus_to_milli(entry.quota)
                if protected + charge > quota:
                    return OverQuotaNotAllowed(
                        name, pool, workload.kind.value, protected, charge, quota
                    )
        return None

    def _admissible(self, workload: Workload, pool: str) -> Callable[[], bool]:
        """Whether the workload passes its queue gates, asked again as a what-if changes usage."""
        return lambda: self._gate(workload, pool) is None

    def _entitled(self, workload: Workload, pool: str) -> bool:
        """Whether the workload's queue stays within its fair share or its quota if it runs."""
        after = self.state.allocated(workload.queue, pool) + self.state.charge(workload, pool)
        quota = gpus_to_milli(self.queues[workload.queue].quota_in(pool).quota)
        return after <= max(self.shares.get((workload.queue, pool), 0), quota)

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
            gpus_to_milli(self.queues[workload.queue].quota_in(pool).quota),
        )
        if self.state.charge(workload, pool) > entitlement:
            return
        request = workload.request
        nodes = [self.state.nodes[n] for n in self.state.pools[pool].nodes]
        nodes = [n for n in nodes if static_fit(n, workload) and n.reserved_for is None]
        level = (
            workload.topology.level if workload.topology and workload.topology.required else None
        )
        groups: dict[str | None, list[int]] = {}
        for node in nodes:
            if level is None or node.domain(level) is not None:
                groups.setdefault(node.domain(level) if level else None, []).append(node.id)

        def empty_slots(node_id: int) -> int:
            spec = self.state.nodes[node_id].node
            return len(spec.gpus) // request.gpus if request.gpus else len(spec.gpus)

        best: list[int] | None = None
        best_free = -1
        for members in groups.values():
            members.sort(key=lambda n: (-pod_capacity(self.state.nodes[n], request), n))
            chosen, slots = [], 0
            for node_id in members:
                chosen.append(node_id)
                slots += empty_slots(node_id)
                if slots >= workload.pods:
                    break
            if slots < workload.pods:
                continue
            free = sum(self.state.nodes[n].free_milli() for n in chosen)
            if free > best_free:
                best, best_free = chosen, free
        if best is None:
            return
        for node_id in best:
            self.state.nodes[node_id].reserved_for = workload.name
        self.reservations.append(
            Reservation(
                workload=workload.name,
                pool=pool,
                nodes=tuple(self.state.nodes[n].node.name for n in best),
                free_milli=best_free,
                needed_milli=self.state.charge(workload, pool),
            )
        )

    # -- 4. reclaim -----------------------------------------------------------------------

    def reclaim(self) -> None:
        """Phase 4: queues below their fair share take back GPUs lent to queues above theirs."""
        failed: set[tuple[object, ...]] = set()
        for workload in self._still_pending():
            if isinstance(self.reasons.get(workload.name), OverQuotaNotAllowed | QueueAtLimit):
                continue
            for pool in self.pools_for[workload.name]:
                if self._gate(workload, pool) is not None:
                    continue
                if not self._entitled(workload, pool):
                    self.notes.setdefault(workload.name, self._over_share_note(workload, pool))
                    continue
                shape = (workload.queue, pool, *placement_shape(workload))
                if shape in failed:
                    continue
                found = find_victims(
                    self.state,
                    workload,
                    pool,
                    self._reclaim_candidates(workload, pool),
                    eligible=self._reclaim_filter(workload, pool),
                    admissible=self._admissible(workload, pool),
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
                break

    def _reclaim_candidates(self, workload: Workload, pool: str) -> LazyOrder:
        """Everything in `pool` that reclaim may take, in search order.

        Built once per pool and cycle; `_reclaim_filter` skips the workload's own queue and
        what is already claimed.
        """
        if pool not in self._reclaim_order:
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
            self._reclaim_order[pool] = by_locality(self.state, candidates)
        return self._reclaim_order[pool]

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
            within_quota &= after <= gpus_to_milli(self.queues[name].quota_in(pool).quota)
        if not (within_share or within_quota):
            return False
        charge = self.state.charge(victim, pool)
        for name in theirs:
            if name in common:
                break
            # What the queue runs: a nominee of this cycle counts for its queue's own
            # decisions, but it is not work that runs and can be taken.
            held = self.state.allocated(name, pool) - self.promised.get((name, pool), 0)
            quota = gpus_to_milli(self.queues[name].quota_in(pool).quota)
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
        quota = gpus_to_milli(self.queues[victim.queue].quota_in(pool).quota)
        return (
            f"reclaimed for {beneficiary.name}: queue {victim.queue} held "
            f"{format_gpus(held)} GPUs in pool {pool}, beyond its quota of "
            f"{format_gpus(quota)}; queue {beneficiary.queue} takes back its guaranteed "
            f"quota"
        )

    def _over_share_note(self, workload: Workload, pool: str) -> str:
        share = self.shares.get((workload.queue, pool), 0)
        held = self.state.allocated(workload.queue, pool)
        need = self.state.charge(workload, pool)
        return (
            f"queue {workload.queue} holds {format_gpus(held)} GPUs of its "
            f"{format_gpus(share)}-GPU fair share in pool {pool}; this step's "
            f"{format_gpus(need)} more would take it to {format_gpus(held + need)}, so it "
            f"may only use idle GPUs, not reclaim"
        )

    # -- 5. preempt -----------------------------------------------------------------------

    def preempt(self) -> None:
        """Phase 5: inside a queue, higher-priority work evicts lower-priority preemptible work."""
        for workload in self._still_pending():
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
        placed = self.placed_by_queue_pool.get(key, {}).values()
        if key not in self._lowest_priority:
            self._lowest_priority[key] = min((w.priority for w in placed), default=below)
        if self._lowest_priority[key] >= below:
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

    def _still_pending(self) -> Iterator[Workload]:
        """Pending workloads not yet admitted or nominated, in phase-2 order."""
        queue_keys: dict[tuple[str, str], tuple[float, int, str]] = {}

        def key(workload: Workload) -> tuple[object, ...]:
            pool = self.pools_for[workload.name][0]
            if (workload.queue, pool) not in queue_keys:
                queue_keys[workload.queue, pool] = self._queue_key(workload.queue, workload)
            return (*queue_keys[workload.queue, pool], _workload_order(workload))

        for workload in sorted(self.pending, key=key):
            if workload.name not in self.admitted and workload.name not in self.nominated:
                yield workload

    # -- 6. explain -----------------------------------------------------------------------

    def explain(self) -> Plan:
        """Phase 6: the plan, with one typed reason for every workload still pending."""
        for _, workload, pool in self.nominated.values():
            self.state.account(workload, pool, -1)  # the beneficiary is not running yet
        pending = [
            Pending(workload.name, self._reason(workload))
            for workload in self.all_pending
            if workload.name not in self.admitted
        ]
        admissions = tuple(
            Admission(name, allocation) for name, (_, allocation) in sorted(self.admitted.items())
        )
        return Plan(
            admissions=admissions,
            evictions=tuple(sorted(self.evictions, key=lambda e: e.workload)),
            pending=tuple(pending),
            reservations=tuple(self.reservations),
            shares=self._queue_shares(),
        )

    def _reason(self, workload: Workload) -> Reason:
        if workload.name in self.nominated:
            return self.nominated[workload.name][0]
        if workload.name in self.reasons:
            return self.reasons[workload.name]
        pool = self.pools_for[workload.name][0]
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
                per_pod=describe_pod(request),
                best_domain=best[0],
                best_domain_pods=best[1],
            )
        note = self.notes.get(workload.name, "")
        for reservation in self.reservations:
            if reservation.workload == workload.name:
                note = (
                    f"holding {len(reservation.nodes)} reserved node(s) with "
                    f"{format_gpus(reservation.free_milli)} of "
                    f"{format_gpus(reservation.needed_milli)} GPUs free"
                )
        if ("free", pool) not in self._explain_cache:
            self._explain_cache["free", pool] = self.state.free_milli(pool)
        free = self._explain_cache["free", pool]
        assert isinstance(free, int)
        return InsufficientCapacity(
            pool=pool,
            pods=workload.pods,
            per_pod=describe_pod(request),
            free_milli=free,
            largest_free_node=self._largest_free(pool),
            fair_share_note=note,
        )

    def _reservation_holder(self, workload: Workload, pool: str) -> Reservation | None:
        """The gang whose reservation keeps `workload` out, if lifting it would let it fit."""
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
            entry = self.queues[queue].quota_in(pool)
            allocated = self.state.allocated(queue, pool)
            demand = self.demand.get((queue, pool), 0)
            explicit = any(q.pool == pool for q in self.queues[queue].quotas)
            if not (explicit or share or allocated or demand):
                continue
            shares.append(
                QueueShare(
                    queue=queue,
                    pool=pool,
                    quota_milli=gpus_to_milli(entry.quota),
                    limit_milli=None if entry.limit is None else gpus_to_milli(entry.limit),
                    fair_share_milli=share,
                    allocated_milli=allocated,
                    demand_milli=demand,
                )
            )
        return tuple(shares)


def _workload_order(workload: Workload) -> tuple[int, float, str]:
    """Inside a queue: higher priority first, then earlier submission, then name."""
    return (-workload.priority, workload.submitted_at, workload.name)
