"""Phase 6 of a cycle: the plan, with one typed reason for every workload still pending.

`decisions` is the plan without it (admissions, evictions, reservations, shares), for callers
that never show reasons. Most workloads wait for a reason that follows from their (queue, first
pool, shape) alone: it is worked out once per such class and handed to every member, the very
same value, which the world keeps so that a workload waiting for the same reason as at the last
cycle keeps its `Pending` entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scheduler_service.core._model import Request, Workload
from scheduler_service.core._placement import describe_pod, domain_capacity, place
from scheduler_service.core._plan import (
    Admission,
    BlockedByReservation,
    Eviction,
    InsufficientCapacity,
    NoTopologyDomain,
    Pending,
    Plan,
    QueueShare,
    Reason,
    Reservation,
    format_gpus,
)

if TYPE_CHECKING:
    from scheduler_service.core._cycle import Cycle, Note

__all__ = ["decisions", "explain_pending"]

_DomainKey = tuple[str, str, Request, tuple[str, ...], tuple[tuple[str, str], ...], tuple[str, ...]]
"""(pool, level, request, models, node selector, tolerations): what decides which domains of a
level could hold a gang (`domain_capacity`)."""


def decisions(cycle: Cycle) -> Plan:
    """The plan without phase 6: admissions, evictions, reservations and shares only."""
    _unaccount_nominees(cycle)
    return Plan(
        admissions=_admissions(cycle),
        evictions=_evictions(cycle),
        reservations=tuple(cycle.reservations),
        shares=_queue_shares(cycle),
    )


def explain_pending(cycle: Cycle) -> Plan:
    """Phase 6: the plan, with one typed reason for every workload still pending."""
    _unaccount_nominees(cycle)
    pending = _Explainer(cycle).pending()
    return Plan(
        admissions=_admissions(cycle),
        evictions=_evictions(cycle),
        pending=pending,
        reservations=tuple(cycle.reservations),
        shares=_queue_shares(cycle),
    )


def _unaccount_nominees(cycle: Cycle) -> None:
    """The workloads waiting for evictions stop counting for their queues: not running yet.

    Phase 4 counted each for its queue, so that later decisions saw the world after the
    evictions; the plan's shares, and the world after the cycle, must not.
    """
    for _, workload, pool in cycle.nominated.values():
        cycle.state.account(workload, pool, -1)


def _admissions(cycle: Cycle) -> tuple[Admission, ...]:
    return tuple(
        Admission(name, allocation) for name, (_, allocation) in sorted(cycle.admitted.items())
    )


def _evictions(cycle: Cycle) -> tuple[Eviction, ...]:
    return tuple(sorted(cycle.evictions, key=lambda e: e.workload))


def _queue_shares(cycle: Cycle) -> tuple[QueueShare, ...]:
    shares = []
    for (queue, pool), share in sorted(cycle.shares.items()):
        entry = cycle.world.entitlement(queue, pool)
        allocated = cycle.state.allocated(queue, pool)
        demand = cycle.demand.get((queue, pool), 0)
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


class _Explainer:
    """Phase 6 of one cycle, with what it works out once and hands to many workloads."""

    def __init__(self, cycle: Cycle) -> None:
        self.cycle = cycle
        self.state = cycle.state
        self.shape_of = cycle.shape_of
        self.reserved_by = {r.workload: r for r in cycle.reservations}
        """The reservations, by the workload that holds each."""
        self.by_class: dict[tuple[str, int, Note | None], Reason] = {}
        """The reason of a workload with no reason of its own, by (pool, shape, note)."""
        self.by_capacity: dict[tuple[str, int, str], InsufficientCapacity] = {}
        """`InsufficientCapacity` by (pool, shape, note in words)."""
        self.best_domain: dict[_DomainKey, tuple[str, int]] = {}
        """The domain that holds the most pods of a gang, and how many (`_DomainKey`)."""
        self.free_milli: dict[str, int] = {}
        """Free GPUs per pool."""
        self.per_pod: dict[int, str] = {}
        """`describe_pod` per shape."""
        self.holders: dict[tuple[str, int], Reservation | None] = {}
        """Per (pool, shape), the reservation that keeps a workload with none of its own out."""
        self.largest_free: dict[str, str] = {}
        """Per pool, the node with the most free GPUs, in words."""
        self.over_share: dict[tuple[str, str, int, int], str] = {}
        """`_over_share_note` per (queue, pool, held, need)."""

    def pending(self) -> tuple[Pending, ...]:
        """Every pending workload not admitted, with its reason, in name order."""
        cycle = self.cycle
        waiting = cycle.waiting
        # Most workloads wait for a reason that follows from their (queue, first pool, shape)
        # alone (`_reason`): worked out once per such class and handed to its members, then
        # the few with a reason of their own are set apart.
        own = self._own_reasons()
        workloads = waiting.workloads
        by_class = {}
        for kind, members in waiting.classes.items():
            sample = next((name for name in members if name not in own), None)
            if sample is not None:
                by_class[kind] = cycle.shared(self._reason(workloads[sample]))
        reason_of = {
            name: by_class[kind] for name, kind in waiting.class_of.items() if kind in by_class
        }
        for name in own:
            if name not in cycle.admitted and name not in cycle.nominated:
                reason_of[name] = self._reason(workloads[name])
        reason_of.update(cycle.reasons)
        reason_of.update((name, entry[0]) for name, entry in cycle.nominated.items())
        admitted = cycle.admitted
        # A workload that waits for the same reason (the very value, `Cycle.shared`) as at the
        # last cycle keeps its `Pending`: long queues wait for a few reasons, cycle after cycle.
        world = cycle.world
        last = world.last_pending
        pending = []
        for name in waiting.names:
            if name in admitted:
                continue
            reason = reason_of[name]
            entry = last.get(name)
            pending.append(
                entry if entry is not None and entry.reason is reason else Pending(name, reason)
            )
        world.last_pending = {entry.workload: entry for entry in pending}
        world.last_reasons = cycle.shared_reasons
        return tuple(pending)

    def _own_reasons(self) -> set[str]:
        """Pending workloads whose reason may not follow from their class alone.

        Those phase 4 noted something for, and those holding a reservation; without shortcuts,
        every one.
        """
        if not self.cycle.shortcuts:
            return set(self.cycle.waiting.class_of)
        return self.cycle.notes.keys() | self.reserved_by.keys()

    def _reason(self, workload: Workload) -> Reason:
        """Why a workload neither nominated nor held back by a gate waits.

        Unless the workload holds a reservation or needs one topology domain, the reason
        follows from its first pool, its shape and what phase 4 noted: one shared value each.
        """
        cycle = self.cycle
        name = workload.name
        pool = cycle.pools_for[name][0]
        wish = workload.topology
        if (
            not cycle.shortcuts
            or name in self.reserved_by
            or (wish is not None and wish.required and workload.pods > 1)
        ):
            return self._reason_of(workload, pool)
        note = cycle.notes.get(name)
        if note is None:
            held = cycle.over_share_groups.get((workload.queue, pool))
            if held is not None:
                note = (workload.queue, pool, held, self.state.charge(workload, pool))
        key = (pool, self.shape_of[name], note)
        found = self.by_class.get(key)
        if found is None:
            found = self.by_class[key] = self._reason_of(workload, pool)
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
                pool,
                wish.level,
                request,
                workload.models,
                workload.node_selector,
                workload.tolerations,
            )
            best = self.best_domain.get(key)
            if best is None:
                capacity = domain_capacity(self.state, workload, pool, wish.level)
                best = self.best_domain[key] = max(
                    capacity.items(), key=lambda item: (item[1], item[0]), default=("", 0)
                )
            return NoTopologyDomain(
                pool=pool,
                level=wish.level,
                pods=workload.pods,
                per_pod=self._per_pod(workload),
                best_domain=best[0],
                best_domain_pods=best[1],
            )
        note = self._note(workload, pool)
        reservation = self.reserved_by.get(workload.name)
        if reservation is not None:
            note = (
                f"holding {len(reservation.nodes)} reserved node(s) with "
                f"{format_gpus(reservation.free_milli)} of "
                f"{format_gpus(reservation.needed_milli)} GPUs free"
            )
        # Many workloads wait for the same reason: one shared value per shape and note.
        shared = (pool, self.shape_of[workload.name], note)
        found = self.by_capacity.get(shared)
        if found is None:
            found = self.by_capacity[shared] = self._insufficient(workload, pool, note)
        return found

    def _insufficient(self, workload: Workload, pool: str, note: str) -> InsufficientCapacity:
        free = self.free_milli.get(pool)
        if free is None:
            free = self.free_milli[pool] = self.state.free_milli(pool)
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
        cycle = self.cycle
        note = cycle.notes.get(workload.name)
        if note is None:
            held = cycle.over_share_groups.get((workload.queue, pool))
            if held is None:
                return ""
            note = (workload.queue, pool, held, self.state.charge(workload, pool))
        if isinstance(note, str):
            return note
        return self._over_share_note(*note)

    def _over_share_note(self, queue: str, pool: str, held: int, need: int) -> str:
        key = (queue, pool, held, need)
        text = self.over_share.get(key)
        if text is None:
            share = self.cycle.shares.get((queue, pool), 0)
            text = self.over_share[key] = (
                f"queue {queue} holds {format_gpus(held)} of its {format_gpus(share)}-GPU fair "
                f"share in pool {pool}: this step's {format_gpus(need)} more may only use idle "
                "GPUs, not reclaim"
            )
        return text

    def _per_pod(self, workload: Workload) -> str:
        """`describe_pod` of the workload's request, once per shape and cycle."""
        shape = self.shape_of[workload.name]
        text = self.per_pod.get(shape)
        if text is None:
            text = self.per_pod[shape] = describe_pod(workload.request)
        return text

    def _reservation_holder(self, workload: Workload, pool: str) -> Reservation | None:
        """The gang whose reservation keeps `workload` out, if lifting it would let it fit.

        With every reservation lifted, placement no longer depends on the workload's name, so
        the answer is shared by every workload of the same shape that holds no reservation.
        """
        if not self.cycle.reservations:
            return None
        if not self.cycle.shortcuts or workload.name in self.reserved_by:
            return self._reservation_holder_uncached(workload, pool)
        key = (pool, self.shape_of[workload.name])
        if key not in self.holders:
            self.holders[key] = self._reservation_holder_uncached(workload, pool)
        return self.holders[key]

    def _reservation_holder_uncached(self, workload: Workload, pool: str) -> Reservation | None:
        reservations = self.cycle.reservations
        held = [r for r in reservations if r.pool == pool and r.workload != workload.name]
        if not held:
            return None
        lifted = [
            (self.state.node_by_name[name], r.workload) for r in reservations for name in r.nodes
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
        text = self.largest_free.get(pool)
        if text is None:
            text = self.largest_free[pool] = self._largest_free_uncached(pool)
        return text

    def _largest_free_uncached(self, pool: str) -> str:
        pool_state = self.state.pools[pool]
        if not self.cycle.shortcuts or any(pool_state.partial):
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
