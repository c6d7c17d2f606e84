"""What a cycle starts from: the cycle state plus the workloads, indexed.

A `World` is built from a `Snapshot` for every call of `schedule`, or kept up to date event by
event by `Scheduler`. Both give the same world for the same snapshot: the indexes are keyed by
name, everything the cycle reads from them is sorted or order-free, and the cycle state's
buckets are sorted, so history leaves no trace.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import NamedTuple

from scheduler_service.core._fragmentation import LOOKAHEAD, Fragmentation
from scheduler_service.core._mix import RecentRequests
from scheduler_service.core._model import (
    Node,
    Policy,
    Queue,
    Snapshot,
    Workload,
    WorkloadState,
    gpus_to_milli,
)
from scheduler_service.core._pending import PendingIndex, Target
from scheduler_service.core._placement import shape
from scheduler_service.core._plan import Pending, Reason
from scheduler_service.core._state import CycleState
from scheduler_service.core._targets import Targets

__all__ = ["Entitlement", "Tally", "TallyKey", "World", "count_gpus", "tally_key"]


class Entitlement(NamedTuple):
    """A queue's `PoolQuota` in one pool, in milli-GPUs, as the cycle reads it many times."""

    quota: int
    limit: int | None
    explicit: bool
    """Whether the queue lists the pool (else the defaults apply)."""
    limited: bool
    """Whether the queue or an ancestor has a limit in the pool."""


TallyKey = tuple[str | None, int, bool]
Tally = dict[TallyKey, dict[int, int]]
"""GPUs per node id held by reclaim candidates, grouped by what decides whether and how much
reclaim may take of them: (queue, charge in milli-GPUs, whole GPUs?) for running preemptible
work, (None, 0, False) for work already evicting (always usable)."""


def tally_key(state: CycleState, workload: Workload, pool: str) -> TallyKey | None:
    """The `Tally` group of a placed workload, or None if reclaim can never take it."""
    if workload.state is WorkloadState.EVICTING:
        return (None, 0, False)
    if workload.is_preemptible:
        whole = not workload.request.is_slice
        return (workload.queue, state.charge(workload, pool), whole)
    return None


def count_gpus(
    tally: Tally, state: CycleState, workload: Workload, key: TallyKey, sign: int
) -> None:
    """Add (`sign` +1) or remove (-1) the GPUs of `workload` per node under `key`."""
    held = tally.setdefault(key, {})
    assert workload.allocation is not None
    for pod in workload.allocation:
        node_id = state.node_by_name[pod.node].id
        left = held.get(node_id, 0) + sign * len(pod.gpus)
        if left:
            held[node_id] = left
        else:
            held.pop(node_id, None)


class World:
    """Queues, policy, cycle state and workloads by state, for one or many cycles."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.nodes: tuple[Node, ...] = snapshot.nodes
        self.queue_list: tuple[Queue, ...] = snapshot.queues
        self.policy: Policy = snapshot.policy
        self.queues: dict[str, Queue] = {q.name: q for q in snapshot.queues}
        self.state = CycleState(snapshot)
        self.targets = Targets(self.state, self.queues)
        self._entitlements: dict[tuple[str, str], Entitlement] = {}
        self.fair_share_memo: dict[str, tuple[object, dict[str, int]]] = {}
        """Per pool, the last fair-share inputs and result (`_allocate.fair_share`)."""
        self._shape_ids: dict[tuple[object, ...], int] = {}
        self.reclaim_tally: dict[str, Tally] = {}
        """Per pool, every placed workload reclaim could take, whatever its runtime."""
        self.latest_start = 0.0
        """No placed workload started after this (0 or later): min-runtime checks are moot
        for a cycle at or after it when no queue has a minimum runtime."""
        self.last_pending: dict[str, Pending] = {}
        """The last cycle's `Pending` entries by workload, kept while their reason holds."""
        self.last_reasons: dict[Reason, Reason] = {}
        """The last cycle's shared reasons, each value once."""
        self.recent = (
            RecentRequests(snapshot.requests)
            if snapshot.requests is not None
            else RecentRequests.of_workloads(snapshot.workloads, self.usable_pools)
        )
        """The request mix learned from submissions, per pool (`_mix`)."""
        self._scorers: dict[str, tuple[int, Fragmentation | None]] = {}
        self.waiting = PendingIndex(self._target_of)
        self.pending: dict[str, Workload] = self.waiting.workloads
        """Every pending workload by name (read only: `add_pending`, `remove_pending`)."""
        self.placed: dict[str, Workload] = {}
        self.placed_by_pool: dict[str, dict[str, Workload]] = {}
        self.placed_by_queue_pool: dict[tuple[str, str], dict[str, Workload]] = {}
        self.placed_priorities: dict[tuple[str, str], Counter[int]] = {}
        """Per queue and pool, how many placed workloads run at each priority."""
        for workload in snapshot.workloads:
            if workload.state is WorkloadState.PENDING:
                self.add_pending(workload)
            else:
                self._index(workload)

    def entitlement(self, queue: str, pool: str) -> Entitlement:
        """`queue`'s quota and limit in `pool` (queues never change in a world)."""
        key = (queue, pool)
        found = self._entitlements.get(key)
        if found is None:
            entry = self.queues[queue].quota_in(pool)
            parent = self.queues[queue].parent
            found = self._entitlements[key] = Entitlement(
                quota=gpus_to_milli(entry.quota),
                limit=None if entry.limit is None else gpus_to_milli(entry.limit),
                explicit=any(q.pool == pool for q in self.queues[queue].quotas),
                limited=entry.limit is not None
                or (parent is not None and self.entitlement(parent, pool).limited),
            )
        return found

    def usable_pools(self, workload: Workload) -> list[str]:
        """The pools `workload` may use (none when its target is invalid)."""
        pools = self.targets.check(workload)
        return [] if isinstance(pools, str) else pools

    def scorer(self, pool: str) -> Fragmentation | None:
        """The fragmentation score of `pool` against its learned mix (None: nothing seen yet).

        Kept across cycles until the pool's mix is refreshed: its caches are pure functions of
        the mix, so they stay valid, and most placements of a cycle hit them.
        """
        version = self.recent.version(pool)
        found = self._scorers.get(pool)
        if found is None or found[0] != version:
            mix = self.recent.mix(pool)
            scorer = None if mix is None else Fragmentation(mix, lookahead=LOOKAHEAD)
            found = self._scorers[pool] = (version, scorer)
        return found[1]

    def _target_of(self, workload: Workload) -> Target:
        """Phase 0's verdict on `workload`, with what the cycle reads of it (`Target`)."""
        pools = self.targets.check(workload)
        charges = (
            () if isinstance(pools, str) else tuple(self.state.charge(workload, p) for p in pools)
        )
        limit_only = ungated = False
        if not isinstance(pools, str) and len(pools) == 1 and workload.is_preemptible:
            parent = self.queues[workload.queue].parent
            limit_only = parent is None or not self.entitlement(parent, pools[0]).limited
            ungated = limit_only and self.entitlement(workload.queue, pools[0]).limit is None
        return Target(pools, self.shape_id(workload), charges, limit_only, ungated)

    def shape_id(self, workload: Workload) -> int:
        """A number per placement shape (`_placement.shape`): equal shapes, equal numbers."""
        return self._shape_ids.setdefault(shape(workload), len(self._shape_ids))

    def snapshot(self) -> Snapshot:
        """The world as a snapshot (workloads sorted by name)."""
        workloads = sorted([*self.pending.values(), *self.placed.values()], key=lambda w: w.name)
        return Snapshot(
            nodes=self.nodes,
            queues=self.queue_list,
            workloads=tuple(workloads),
            policy=self.policy,
            requests=self.recent.history(),
        )

    def sorted_pending(self) -> list[Workload]:
        """Pending workloads by name."""
        pending = self.pending
        return [pending[name] for name in self.waiting.names]

    # -- incremental changes (used by Scheduler) ------------------------------------------

    def submit(self, workload: Workload) -> None:
        """A workload is submitted: it waits, and its request counts in the mix it may use."""
        self.add_pending(workload)
        pools = self.waiting.pools_for.get(workload.name, [])
        self.recent.record(workload, pools)

    def add_pending(self, workload: Workload) -> None:
        """A PENDING workload (new, or back to waiting)."""
        self.waiting.add(workload)

    def remove_pending(self, name: str) -> Workload:
        """A PENDING workload stops waiting (it starts, or is gone); returns it."""
        return self.waiting.remove(name)

    def place(self, workload: Workload) -> None:
        """A workload becomes RUNNING or EVICTING with its allocation (it is not in the world)."""
        assert workload.allocation is not None
        self.state.load_one(workload)
        self._index(workload)

    def unplace(self, name: str) -> Workload:
        """Remove a placed workload and give back what it holds; returns it."""
        workload = self.placed.pop(name)
        pool = self.state.placed_pool[name]
        key = tally_key(self.state, workload, pool)
        if key is not None:
            count_gpus(self.reclaim_tally[pool], self.state, workload, key, -1)
        del self.placed_by_pool[pool][name]
        del self.placed_by_queue_pool[workload.queue, pool][name]
        priorities = self.placed_priorities[workload.queue, pool]
        priorities[workload.priority] -= 1
        if not priorities[workload.priority]:
            del priorities[workload.priority]
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
        self.placed_priorities.setdefault((workload.queue, pool), Counter())[workload.priority] += 1
        key = tally_key(self.state, workload, pool)
        if key is not None:
            count_gpus(self.reclaim_tally.setdefault(pool, {}), self.state, workload, key, +1)
        self.latest_start = max(self.latest_start, workload.started_at or 0.0)
