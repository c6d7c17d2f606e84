"""Phases 4 and 5 of a cycle: reclaim across queues, then preemption inside a queue.

Both look at the workloads still pending in phase-2 order (`_runs`), search victims on the
live cycle state (`_victims.find_victims`, which leaves it as it found it) and record what they
decide on the `Cycle` (`_commit`): the evictions, and the beneficiary's `WaitingForEviction`.
Phase 4 also notes why reclaim did not help, for phase 6 to word.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from scheduler_service.core._model import MILLI_GPU, Workload, WorkloadState
from scheduler_service.core._pending import workload_order
from scheduler_service.core._plan import (
    Eviction,
    EvictionCause,
    OverQuotaNotAllowed,
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
from scheduler_service.core._world import TallyKey

if TYPE_CHECKING:
    from scheduler_service.core._cycle import Cycle

__all__ = ["preempt", "reclaim"]

_EVICTING_TALLY: TallyKey = (None, 0, False)
"""The `World.reclaim_tally` key of evicting workloads (`tally_key`)."""
_NO_ROOM = (
    "reclaim found no room: other queues' work here is within their quota, "
    "not preemptible, or inside its minimum runtime"
)


def reclaim(cycle: Cycle) -> None:
    """Phase 4: queues below their fair share take back GPUs lent to queues above theirs."""
    _Reclaim(cycle).run()


def preempt(cycle: Cycle) -> None:
    """Phase 5: inside a queue, higher-priority work evicts lower-priority preemptible work."""
    _Preempt(cycle).run()


class _Reclaim:
    """Phase 4 of one cycle, with what it remembers while it runs."""

    def __init__(self, cycle: Cycle) -> None:
        self.cycle = cycle
        self.world = cycle.world
        self.state = cycle.state
        self.candidates: dict[str, LazyOrder] = {}
        """Per pool, everything reclaim may take, in search order (`_candidates`)."""
        self.unordered: dict[str, list[Candidate]] = {}
        """Per pool, the same candidates unordered (`_unordered`)."""
        self.room: ReclaimRoom | None = None
        """Where reclaim could make room, made on first use (`_room`)."""

    def run(self) -> None:
        cycle = self.cycle
        if cycle.shortcuts and not cycle.explaining and self._nothing_to_take():
            return  # every search would fail; only phase 6 would read what it noted
        failed: set[tuple[str, str, int]] = set()
        for group, items in _runs(cycle):
            if group is not None and cycle.shortcuts and self._none_entitled(*group):
                continue
            for workload in items:
                if workload.name not in cycle.admitted and workload.name not in cycle.nominated:
                    self._reclaim_for(workload, failed)

    def _nothing_to_take(self) -> bool:
        """Whether no reclaim search can find victims: nothing is being evicted, one queue alone.

        That is, one queue alone has work waiting or placed, and reclaim never takes a queue's
        own work.
        """
        in_order = self.cycle.in_order
        if len(in_order) > 1:
            return False
        if any(tally.get(_EVICTING_TALLY) for tally in self.world.reclaim_tally.values()):
            return False
        queues = set(in_order)
        queues.update(
            queue for (queue, _), placed in self.world.placed_by_queue_pool.items() if placed
        )
        return len(queues) <= 1

    def _none_entitled(self, queue: str, pool: str) -> bool:
        """Whether no workload of the ungated group (queue, pool) may reclaim.

        Each of them then gets the note that says so (`Cycle.over_share_groups`). Within a
        group only its own commits change the queue's holdings, and they only grow, so when
        even the least of them does not fit the queue's entitlement, none does.
        """
        waiting = self.cycle.waiting
        needs = waiting.ungated_needs.get((queue, pool))
        if not needs or waiting.may_be_gated[queue]:
            return False
        least = min(needs)
        held = self.state.allocated(queue, pool)
        if held + least <= self._entitlement_of(queue, pool):
            return False
        self.cycle.over_share_groups[queue, pool] = held
        return True

    def _entitlement_of(self, queue: str, pool: str) -> int:
        """The larger of `queue`'s fair share and quota in `pool` (milli-GPUs).

        A workload of the queue may reclaim only if the queue stays within it.
        """
        share, quota, _ = self.cycle.standing_of(queue, pool)
        return max(share, quota)

    def _reclaim_for(self, workload: Workload, failed: set[tuple[str, str, int]]) -> None:
        """Reclaim for one workload, in its first pool where that may work."""
        cycle = self.cycle
        if workload.name in cycle.reasons:
            return  # held back by a queue gate in phase 3 (the only reasons so far)
        for pool in cycle.pools_for[workload.name]:
            if cycle.gate(workload, pool) is not None:
                continue
            held = self.state.allocated(workload.queue, pool)
            need = self.state.charge(workload, pool)
            if held + need > self._entitlement_of(workload.queue, pool):
                if workload.name not in cycle.notes:
                    cycle.notes[workload.name] = (workload.queue, pool, held, need)
                continue
            shape = (workload.queue, pool, cycle.shape_of[workload.name])
            if shape in failed:
                continue
            found = None
            lifted = self._lift_borrowers_reservations(workload, pool, held + need)
            if not cycle.shortcuts or self._room().may_fit(workload, pool):
                order = self._candidates(pool)
                eligible, forget = self._eligible(workload, pool)
                found = find_victims(
                    self.state,
                    workload,
                    pool,
                    order,
                    eligible=eligible,
                    admissible=_admissible(cycle, workload, pool),
                    on_node=order.on_node,
                    restored=forget,
                )
            self._settle_lifted(lifted, found)
            if found is None:
                failed.add(shape)
                cycle.notes.setdefault(workload.name, _NO_ROOM)
                continue
            if self.room is not None:
                self.room.claim(pool, found.victims)  # before they count as claimed
            _commit(cycle, workload, pool, found, EvictionCause.RECLAIM)
            return

    def _lift_borrowers_reservations(
        self, workload: Workload, pool: str, after: int
    ) -> dict[str, Reservation]:
        """Lift, for `workload`'s search, the reservations of gangs that only borrow.

        Only when `workload` stays within its quota (`after`: what its queue holds with it): a
        guarantee comes before a reservation made for a gang beyond its own queue's quota, or
        that gang's nodes, which reclaim may be the only way to free, stay out of the
        owner's reach. Returns the reservations lifted, by holder (see `_settle_lifted`).
        """
        cycle = self.cycle
        if not cycle.reservations or after > self.world.entitlement(workload.queue, pool).quota:
            return {}
        lifted = {
            r.workload: r
            for r in cycle.reservations
            if r.pool == pool and r.workload in cycle.borrowing_reservations
        }
        for reservation in lifted.values():
            for name in reservation.nodes:
                self.state.node_by_name[name].reserved_for = None
        return lifted

    def _settle_lifted(self, lifted: dict[str, Reservation], found: VictimSearch | None) -> None:
        """After a search: the lifted reservations on nodes the workload uses are gone.

        The others are held again.
        """
        cycle = self.cycle
        used = set() if found is None else {pod.node for pod in found.allocation}
        for holder, reservation in lifted.items():
            if used.intersection(reservation.nodes):
                cycle.reservations.remove(reservation)
                cycle.borrowing_reservations.discard(holder)
                continue
            for name in reservation.nodes:
                self.state.node_by_name[name].reserved_for = holder

    def _candidates(self, pool: str) -> LazyOrder:
        """Everything in `pool` that reclaim may take, in search order.

        Built once per pool and cycle; `_eligible` skips the workload's own queue and what is
        already claimed. Each queue's give (what it holds beyond its quota, whole GPUs) goes to
        `by_locality`, which puts nodes that would use up less of it first.
        """
        if pool not in self.candidates:
            candidates = self._unordered(pool)
            gives = {}
            for queue in {c.workload.queue for c in candidates if c.accounted}:
                held = self.state.allocated(queue, pool) - self.cycle.promised.get((queue, pool), 0)
                give = held - self.world.entitlement(queue, pool).quota
                gives[queue] = max(0, give) // MILLI_GPU
            self.candidates[pool] = by_locality(self.state, candidates, gives)
        return self.candidates[pool]

    def _unordered(self, pool: str) -> list[Candidate]:
        """The candidates of `_candidates`, unordered (built once per pool and cycle)."""
        if pool not in self.unordered:
            cycle = self.cycle
            candidates = []
            evicting = WorkloadState.EVICTING
            protected = {name: _min_runtime(cycle, name, reclaim=True) for name in cycle.queues}
            for other in self.world.placed_by_pool.get(pool, {}).values():
                started = other.started_at or 0.0
                if other.state is evicting:
                    candidates.append(Candidate(other, (-math.inf, other.name), accounted=False))
                elif other.is_preemptible and cycle.now - started >= protected.get(
                    other.queue, cycle.policy.reclaim_min_runtime_seconds
                ):
                    candidates.append(
                        Candidate(other, (other.priority, -started, other.name), accounted=True)
                    )
            self.unordered[pool] = candidates
        return self.unordered[pool]

    def _room(self) -> ReclaimRoom:
        """The cycle's `ReclaimRoom`, made on first use."""
        if self.room is None:
            cycle = self.cycle
            self.room = ReclaimRoom(
                self.world,
                shares=cycle.shares,
                promised=cycle.promised,
                claimed=cycle.claimed,
                candidates=self._unordered,
                runtime_moot=self._runtime_moot(),
                takeable=lambda other: (
                    other.state is WorkloadState.EVICTING
                    or (other.is_preemptible and _past_min_runtime(cycle, other, reclaim=True))
                ),
            )
        return self.room

    def _runtime_moot(self) -> bool:
        """Whether no placed workload is protected by a minimum runtime in this cycle."""
        cycle = self.cycle
        if self.world.latest_start > cycle.now or cycle.policy.reclaim_min_runtime_seconds > 0:
            return False
        return all(
            not queue.reclaim_min_runtime_seconds or queue.reclaim_min_runtime_seconds <= 0
            for queue in cycle.queues.values()
        )

    def _eligible(
        self, workload: Workload, pool: str
    ) -> tuple[Callable[[Candidate], bool], Callable[[], None]]:
        """`_reclaimable` for one search, remembering refusals; and what forgets them.

        While a search releases victims, queues only lose usage, so a (queue, size) once
        refused stays refused: the memo turns a scan of thousands of ineligible candidates into
        dictionary hits. When the search puts victims back, it calls the second function.
        """
        refused: set[tuple[str, int]] = set()
        claimed = self.cycle.claimed

        def eligible(candidate: Candidate) -> bool:
            other = candidate.workload
            if other.name in claimed:
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

        return eligible, refused.clear

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
        shares = self.cycle.shares
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
            within_share &= after <= shares.get((name, pool), 0)
            within_quota &= after <= self.world.entitlement(name, pool).quota
        if not (within_share or within_quota):
            return False
        charge = self.state.charge(victim, pool)
        for name in theirs:
            if name in common:
                break
            # What the queue runs: a nominee of this cycle counts for its queue's own
            # decisions, but it is not work that runs and can be taken.
            held = self.state.allocated(name, pool) - self.cycle.promised.get((name, pool), 0)
            quota = self.world.entitlement(name, pool).quota
            if held - charge < quota:
                return False
            if not within_quota and held <= shares.get((name, pool), 0):
                return False
        return True


class _Preempt:
    """Phase 5 of one cycle, with what it remembers while it runs."""

    def __init__(self, cycle: Cycle) -> None:
        self.cycle = cycle
        self.state = cycle.state
        self.candidates: dict[tuple[str, str], list[Candidate]] = {}
        """Per (queue, pool), what preemption may take, lowest priority first (`_candidates`)."""
        self.lowest_priority: dict[tuple[str, str], int | None] = {}
        """Per (queue, pool), the lowest priority it runs (`_lowest_placed_priority`)."""
        self.evicting: dict[str, list[Candidate]] = {}
        """Per pool, the workloads already on their way out (`_evicting_in`)."""

    def run(self) -> None:
        cycle = self.cycle
        for workload in _still_pending(cycle, self._queue_may_preempt):
            if not self._may_preempt(workload):
                continue
            if isinstance(cycle.reasons.get(workload.name), OverQuotaNotAllowed):
                continue
            for pool in cycle.pools_for[workload.name]:
                candidates = []
                for candidate in self._candidates(workload.queue, pool, workload.priority):
                    if candidate.workload.priority >= workload.priority:
                        break  # sorted by priority: nothing further is preemptible by it
                    if candidate.workload.name not in cycle.claimed:
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
                    eligible=lambda candidate: candidate.workload.name not in cycle.claimed,
                    admissible=_admissible(cycle, workload, pool),
                )
                if found is not None:
                    cycle.reasons.pop(workload.name, None)
                    _commit(cycle, workload, pool, found, EvictionCause.PREEMPT)
                    break

    def _candidates(self, queue: str, pool: str, below: int) -> list[Candidate]:
        """Running preemptible work of `queue` in `pool` past its minimum runtime.

        Lowest priority first; built once per queue, pool and cycle, and only when some of it
        has a priority under `below`.
        """
        key = (queue, pool)
        lowest = self._lowest_placed_priority(queue, pool)
        if lowest is None or lowest >= below:
            return []
        if key not in self.candidates:
            cycle = self.cycle
            self.candidates[key] = sorted(
                (
                    Candidate(
                        other,
                        (other.priority, -(other.started_at or 0.0), other.name),
                        accounted=True,
                    )
                    for other in cycle.world.placed_by_queue_pool.get(key, {}).values()
                    if other.state is WorkloadState.RUNNING
                    and other.is_preemptible
                    and _past_min_runtime(cycle, other, reclaim=False)
                ),
                key=lambda c: c.cost,
            )
        return self.candidates[key]

    def _evicting_in(self, pool: str) -> list[Candidate]:
        """Workloads of `pool` already on their way out, offered at no cost.

        Built once per pool and cycle; the search's `eligible` skips those claimed since.
        """
        if pool not in self.evicting:
            self.evicting[pool] = sorted(
                (
                    Candidate(other, (-math.inf, other.name), accounted=False)
                    for other in self.cycle.world.placed_by_pool.get(pool, {}).values()
                    if other.state is WorkloadState.EVICTING
                ),
                key=lambda c: c.cost,
            )
        return self.evicting[pool]

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
        for pool in self.cycle.pools_for[workload.name]:
            lowest = self._lowest_placed_priority(workload.queue, pool)
            if lowest is not None and lowest < workload.priority:
                return True
        return False

    def _lowest_placed_priority(self, queue: str, pool: str) -> int | None:
        """The lowest priority `queue` runs in `pool` (None: nothing), once per cycle."""
        key = (queue, pool)
        if key not in self.lowest_priority:
            priorities = self.cycle.world.placed_priorities.get(key, ())
            self.lowest_priority[key] = min(priorities, default=None)
        return self.lowest_priority[key]


# -- shared by both phases ----------------------------------------------------------------


def _still_pending(
    cycle: Cycle, queues: Callable[[str, list[Workload]], bool] | None = None
) -> Iterator[Workload]:
    """Pending workloads not yet admitted or nominated, in phase-2 order (see `_runs`)."""
    for _, items in _runs(cycle, queues):
        for workload in items:
            if workload.name not in cycle.admitted and workload.name not in cycle.nominated:
                yield workload


def _waits(cycle: Cycle, workload: Workload) -> bool:
    """Not admitted and not nominated in this cycle (yet)."""
    return workload.name not in cycle.admitted and workload.name not in cycle.nominated


def _runs(
    cycle: Cycle, queues: Callable[[str, list[Workload]], bool] | None = None
) -> Iterator[tuple[tuple[str, str] | None, Iterable[Workload]]]:
    """The still-pending workloads of the queues `queues` accepts, in phase-2 order, in runs.

    The order is taken when the iteration starts, as the queues stand then: by the key of
    each queue and first pool (`Cycle.queue_key` of its first workload), then queue order. The
    queue order is phase 3's, so only the groups are sorted, not every workload. A run is
    one group, named by its (queue, pool), or several with equal keys (one queue, several
    pools) merged in queue order, named None. A run may hold workloads admitted or
    nominated: callers skip them (`_waits`), also those admitted or nominated since.
    """
    keyed = []
    for queue, items in cycle.in_order.items():
        if queues is not None and not queues(queue, items):
            continue
        first_pools = cycle.waiting.first_pools[queue]
        if len(first_pools) == 1:  # the usual case: the queue's list is one group
            head = next((w for w in items if _waits(cycle, w)), None)
            if head is not None:
                (pool,) = first_pools
                keyed.append((cycle.queue_key(queue, head), (queue, pool), items))
            continue
        groups: dict[tuple[str, str], list[Workload]] = {}
        for workload in items:
            if _waits(cycle, workload):
                groups.setdefault((queue, cycle.pools_for[workload.name][0]), []).append(workload)
        for group, members in groups.items():
            keyed.append((cycle.queue_key(queue, members[0]), group, members))
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


def _admissible(cycle: Cycle, workload: Workload, pool: str) -> Callable[[], bool]:
    """Whether the workload passes its queue gates, asked again as a what-if changes usage."""
    return lambda: cycle.gate(workload, pool) is None


def _past_min_runtime(cycle: Cycle, workload: Workload, *, reclaim: bool) -> bool:
    started = workload.started_at or 0.0
    return cycle.now - started >= _min_runtime(cycle, workload.queue, reclaim=reclaim)


def _min_runtime(cycle: Cycle, queue_name: str, *, reclaim: bool) -> float:
    """How long work of `queue_name` is protected from reclaim (or from preemption)."""
    queue = cycle.queues.get(queue_name)
    if reclaim:
        own = queue.reclaim_min_runtime_seconds if queue else None
        return cycle.policy.reclaim_min_runtime_seconds if own is None else own
    own = queue.preempt_min_runtime_seconds if queue else None
    return cycle.policy.preempt_min_runtime_seconds if own is None else own


def _commit(
    cycle: Cycle, workload: Workload, pool: str, found: VictimSearch, cause: EvictionCause
) -> None:
    """Record evictions and the beneficiary's wait.

    The victims keep their GPUs until gone but stop counting for their queue, and the
    beneficiary counts already, so later decisions see the world after the evictions.
    """
    state = cycle.state
    names = []
    freed = 0
    for candidate in found.victims:
        victim = candidate.workload
        cycle.claimed.add(victim.name)
        names.append(victim.name)
        freed += state.charge(victim, pool)
        if not candidate.accounted:
            continue
        state.account(victim, pool, -1)
        cycle.evicted.append((victim, pool))
        cycle.evictions.append(
            Eviction(
                workload=victim.name,
                cause=cause,
                beneficiary=workload.name,
                message=_eviction_message(cycle, victim, workload, pool, cause),
            )
        )
    state.account(workload, pool, +1)
    for name in state.ancestry(workload.queue):
        key = (name, pool)
        cycle.promised[key] = cycle.promised.get(key, 0) + state.charge(workload, pool)
    reason = WaitingForEviction(pool=pool, victims=tuple(names), freed_milli=freed)
    cycle.nominated[workload.name] = (reason, workload, pool)


def _eviction_message(
    cycle: Cycle, victim: Workload, beneficiary: Workload, pool: str, cause: EvictionCause
) -> str:
    if cause is EvictionCause.PREEMPT:
        return (
            f"preempted by {beneficiary.name} (priority {beneficiary.priority} > "
            f"{victim.priority}) in queue {victim.queue}"
        )
    held = cycle.state.allocated(victim.queue, pool) + cycle.state.charge(victim, pool)
    share = cycle.shares.get((victim.queue, pool), 0)
    if held > share:
        return (
            f"reclaimed for {beneficiary.name}: queue {victim.queue} held "
            f"{format_gpus(held)} GPUs in pool {pool}, above its fair share of "
            f"{format_gpus(share)}; queue {beneficiary.queue} is below its fair share"
        )
    quota = cycle.world.entitlement(victim.queue, pool).quota
    return (
        f"reclaimed for {beneficiary.name}: queue {victim.queue} held "
        f"{format_gpus(held)} GPUs in pool {pool}, beyond its quota of "
        f"{format_gpus(quota)}; queue {beneficiary.queue} takes back its guaranteed "
        f"quota"
    )
