"""Phase 4's count of where reclaim could make room, so searches that cannot work are skipped.

A reclaim search (`_victims.find_victims`) that fails walks every candidate of the pool,
releasing and restoring each, and on a full cluster most searches fail. `ReclaimRoom` answers
a necessary condition first, from counts: on the nodes the workload may use, the free whole
GPUs plus the GPUs of every candidate the search could ever take must hold all its pods. When
they cannot, the search is not run; its answer would have been "no victims" all the same.

The candidates counted are a superset of what the search may release (see `ReclaimRoom.room`),
and the GPUs they hold come from a tally by (queue, charge): the world keeps it between cycles
(`World.reclaim_tally`) when minimum runtimes cannot matter, else it is counted from the
cycle's candidates. Counts are per cycle; a commit takes its victims out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from scheduler_service.core._model import MILLI_GPU, Workload
from scheduler_service.core._placement import static_fit
from scheduler_service.core._victims import Candidate
from scheduler_service.core._world import Tally, World, count_gpus, tally_key

__all__ = ["ReclaimRoom"]


class ReclaimRoom:
    """The counts of one cycle; the mappings given are the cycle's own, read as they change."""

    def __init__(
        self,
        world: World,
        *,
        shares: Mapping[tuple[str, str], int],
        promised: Mapping[tuple[str, str], int],
        claimed: set[str],
        candidates: Callable[[str], list[Candidate]],
        runtime_moot: bool,
        takeable: Callable[[Workload], bool],
    ) -> None:
        """Count for `world`, with the cycle's fair `shares`, `promised` and `claimed`.

        `candidates(pool)` are the pool's reclaim candidates, counted unless `runtime_moot` (no
        minimum runtime can protect anything now); `takeable(w)` says whether a placed
        workload is one of them.
        """
        self._world = world
        self._state = world.state
        self._shares = shares
        self._promised = promised
        self._claimed = claimed
        self._candidates = candidates
        self._runtime_moot = runtime_moot
        self._takeable = takeable
        self._tally: dict[str, Tally] = {}
        self._own: set[str] = set()
        self._room: dict[tuple[str, str, bool], dict[int, int]] = {}

    def may_fit(self, workload: Workload, pool: str) -> bool:
        """False only if no reclaim search for `workload` in `pool` can succeed now.

        Whole GPUs only (for slices and CPU-only pods it says True): on the nodes the workload
        may use, `room` counted in pods must reach the gang.
        """
        request = workload.request
        if not request.gpus:
            return True
        state = self._state
        queue = workload.queue
        after = state.allocated(queue, pool) + state.charge(workload, pool)
        beyond_quota = after > self._world.entitlement(queue, pool).quota
        slots = 0
        for node_id, gpus in self.room(queue, pool, beyond_quota=beyond_quota).items():
            if gpus >= request.gpus and static_fit(state.nodes[node_id], workload):
                slots += gpus // request.gpus
                if slots >= workload.pods:
                    return True
        return False

    def room(self, queue: str, pool: str, *, beyond_quota: bool) -> dict[int, int]:
        """Per schedulable node of `pool`: free whole GPUs plus what reclaim for `queue` frees.

        A superset of what `find_victims` may release with the cycle's reclaim rules: during a
        search victim queues only lose usage and the reclaimer's own queue keeps its usage (its
        own work is never taken), so a candidate refused now stays refused. Refused now: work
        of `queue`, what the quota floor forbids, and, when `queue` goes beyond its quota
        (`beyond_quota`, so only the fair-share rule can apply), work of a side that does not
        hold more than its fair share. And all victims of a side together free at most what it
        holds beyond its quota (whole-GPU work only; a slice may free a whole GPU for less).
        The other conditions are not asked.
        """
        key = (queue, pool, beyond_quota)
        found = self._room.get(key)
        if found is not None:
            return found
        room: dict[int, int] = {}
        for node_id in self._state.pools[pool].nodes:
            node = self._state.nodes[node_id]
            if node.schedulable:
                room[node_id] = node.free_whole
        mine = set(self._state.ancestry(queue))
        capped: dict[str, dict[int, int]] = {}
        for (owner, charge, whole), held in self._tally_of(pool).items():
            if owner == queue:
                continue
            if owner is not None and not self._may_take(
                owner, mine, charge, pool, beyond_quota=beyond_quota
            ):
                continue
            if owner is not None and whole:
                _add_counts(capped.setdefault(owner, {}), held, grow=True)
            else:
                _add_counts(room, held)
        for owner, held in capped.items():
            most = self._headroom(owner, mine, pool) // MILLI_GPU
            _add_counts(room, {node_id: min(gpus, most) for node_id, gpus in held.items()})
        self._room[key] = room
        return room

    def claim(self, pool: str, victims: Iterable[Candidate]) -> None:
        """`victims` (not yet claimed) are taken in `pool`: they and the usage change counted.

        The world's tally is copied before its first change in a cycle.
        """
        self._room.clear()  # usage changes too: every room is counted anew
        tally = self._tally_of(pool)
        if pool not in self._own:
            tally = self._tally[pool] = {key: dict(held) for key, held in tally.items()}
            self._own.add(pool)
        for candidate in victims:
            other = candidate.workload
            if other.name not in self._claimed and self._takeable(other):
                key = tally_key(self._state, other, pool)
                assert key is not None
                count_gpus(tally, self._state, other, key, -1)

    def _tally_of(self, pool: str) -> Tally:
        """GPUs per node held by the unclaimed reclaim candidates of `pool` (see `Tally`).

        A pool's tally is made before its first claim (`claim` asks for it first), so the
        world's, which knows no claims, is right when minimum runtimes cannot matter.
        """
        if pool not in self._tally:
            if self._runtime_moot:
                self._tally[pool] = self._world.reclaim_tally.get(pool, {})
            else:
                tally: Tally = {}
                for candidate in self._candidates(pool):
                    other = candidate.workload
                    if other.name not in self._claimed:
                        key = tally_key(self._state, other, pool)
                        assert key is not None
                        count_gpus(tally, self._state, other, key, +1)
                self._tally[pool] = tally
                self._own.add(pool)
        return self._tally[pool]

    def _may_take(
        self, victim_queue: str, mine: set[str], charge: int, pool: str, *, beyond_quota: bool
    ) -> bool:
        """The victim's half of the reclaim rules, before anything is released."""
        for name in self._state.ancestry(victim_queue):
            if name in mine:
                break
            held = self._state.allocated(name, pool) - self._promised.get((name, pool), 0)
            if held - charge < self._world.entitlement(name, pool).quota:
                return False
            if beyond_quota and held <= self._shares.get((name, pool), 0):
                return False
        return True

    def _headroom(self, victim_queue: str, mine: set[str], pool: str) -> int:
        """What reclaim may take from `victim_queue`'s side in all (milli-GPUs).

        The least, over the side's queues below the common ancestor, of what each runs beyond
        its quota: the quota floor, for all victims together.
        """
        most = math.inf
        for name in self._state.ancestry(victim_queue):
            if name in mine:
                break
            held = self._state.allocated(name, pool) - self._promised.get((name, pool), 0)
            most = min(most, held - self._world.entitlement(name, pool).quota)
        return 0 if most == math.inf else max(0, int(most))


def _add_counts(into: dict[int, int], counts: Mapping[int, int], *, grow: bool = False) -> None:
    """Add `counts` into `into` key by key: only to keys already there, or to any if `grow`."""
    for key, count in counts.items():
        if key in into:
            into[key] += count
        elif grow:
            into[key] = count
