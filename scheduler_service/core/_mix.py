"""What the cycle expects next in each pool: the request shapes of recent submissions.

Fragmentation-aware placement (`_fragmentation`) scores a node by the GPU capacity the *next*
pods could not use, so it needs the mix of requests to come. A live scheduler does not know the
future; it knows what was submitted. `RecentRequests` learns the mix online, per pool: every
submitted workload counts in each pool it may use (a pod that accepts any pool is demand every
pool may have to serve), and its weight halves every `HALF_LIFE` submissions to that pool.

Why a decay of 2,048 submissions. The score needs the shares of the shapes that matter, the
ones that hold a few percent of the demand: with about 3,000 submissions' worth of weight in
the mix (2,048 / ln 2) a shape of 5% share is known to within about +-0.4 points (one standard
error), and one that holds 1% within +-0.2. A shorter memory makes the shares noisy, a longer
one is slow to follow a change of work (a team that starts a new project): on a cluster that
receives a few thousand steps a day, the mix is that of about the last day. Counted in
submissions rather than seconds, the memory means the same on a busy and on a quiet cluster,
and the scheduler needs no clock.

The mix a cycle scores against changes only now and then (`ShapeMix` and the scorer's caches
are rebuilt for it): after 1, 2, 4, ... submissions to the pool, then every `REFRESH`. Between
refreshes the learned shares move by under 10% of their value, which hardly changes a
placement, and the scorer keeps its caches.

Everything here is a pure function of the submissions in their order. `history()` gives it as
plain values (`RequestHistory`), which a `Snapshot` carries and `RecentRequests(history)` takes
back: the mix cycles score against exactly, the live weights up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from scheduler_service.core._fragmentation import ShapeMix
from scheduler_service.core._model import PoolHistory, RequestHistory, ShapeKey, Workload

__all__ = ["HALF_LIFE", "REFRESH", "RecentRequests"]

HALF_LIFE = 2048
"""Submissions to a pool after which a submission weighs half as much in its mix."""

REFRESH = 256
"""Submissions to a pool between two refreshes of the mix its cycles score against."""

_RESCALE = 1 << 16
"""Weights grow by 2 every `HALF_LIFE` submissions (the old ones keep theirs, which is the
decay); past this many half-lives' worth they are divided down, so floats stay in range."""

_FORGET = 1e-6
"""A shape whose share fell below this at a rescale is forgotten."""

PoolsOf = Callable[[Workload], Iterable[str]]
"""The pools a workload may use."""


class _PoolMix:
    __slots__ = ("mix", "scale", "scored", "scored_at", "submissions", "version", "weights")

    def __init__(self) -> None:
        self.submissions = 0
        self.scale = 1.0
        self.weights: dict[ShapeKey, float] = {}
        self.scored: dict[ShapeKey, float] = {}
        self.scored_at = 0
        self.mix: ShapeMix | None = None
        self.version = 0

    def add(self, key: ShapeKey, pods: int) -> None:
        self.weights[key] = self.weights.get(key, 0.0) + pods * self.scale
        self.submissions += 1
        self.scale *= 2.0 ** (1 / HALF_LIFE)
        if self.scale > _RESCALE:
            total = sum(self.weights.values())
            self.weights = {
                k: w / self.scale for k, w in self.weights.items() if w / total >= _FORGET
            }
            self.scale = 1.0
        since = self.submissions - self.scored_at
        if since >= min(REFRESH, max(1, self.scored_at)):
            self.scored = dict(self.weights)
            self.scored_at = self.submissions
            self.mix = None
            self.version += 1


class RecentRequests:
    """The learned mix of each pool; see the module docstring."""

    def __init__(self, history: RequestHistory | None = None) -> None:
        """Start empty, or from what another instance learned (`history`)."""
        self._pools: dict[str, _PoolMix] = {}
        for entry in history.pools if history is not None else ():
            pool = self._pools[entry.pool] = _PoolMix()
            pool.submissions = entry.submissions
            pool.weights = dict(entry.weights)
            pool.scored = dict(entry.scored)
            pool.scored_at = entry.scored_at
            pool.version = 1

    @classmethod
    def of_workloads(cls, workloads: Iterable[Workload], pools_of: PoolsOf) -> RecentRequests:
        """Learn from `workloads` in order of submission (then name): a world with no history."""
        recent = cls()
        for workload in sorted(workloads, key=lambda w: (w.submitted_at, w.name)):
            recent.record(workload, pools_of(workload))
        return recent

    def record(self, workload: Workload, pools: Iterable[str]) -> None:
        """A workload was submitted that may use `pools`."""
        key = (workload.request, workload.models)
        for pool in pools:
            mix = self._pools.get(pool)
            if mix is None:
                mix = self._pools[pool] = _PoolMix()
            mix.add(key, workload.pods)

    def mix(self, pool: str) -> ShapeMix | None:
        """The mix cycles score `pool` against now, by GPU demand; None before any submission."""
        found = self._pools.get(pool)
        if found is None or not found.scored:
            return None
        if found.mix is None:
            entries = _sorted(found.scored)  # a fixed order: the same sums, however it was built
            found.mix = ShapeMix(
                ((request, models, weight) for (request, models), weight in entries),
                by_demand=True,
            )
        return found.mix

    def version(self, pool: str) -> int:
        """A number that changes whenever `mix(pool)` does."""
        found = self._pools.get(pool)
        return 0 if found is None else found.version

    def history(self) -> RequestHistory:
        """What was learned, as plain values (pools by name, shapes in a fixed order)."""
        entries = []
        for name in sorted(self._pools):
            pool = self._pools[name]
            entries.append(
                PoolHistory(
                    pool=name,
                    submissions=pool.submissions,
                    # In units of the next submission's weight, so the scale restarts at 1.
                    weights=_sorted({k: w / pool.scale for k, w in pool.weights.items()}),
                    scored=_sorted(pool.scored),
                    scored_at=pool.scored_at,
                )
            )
        return RequestHistory(tuple(entries))


def _sorted(weights: dict[ShapeKey, float]) -> tuple[tuple[ShapeKey, float], ...]:
    return tuple(sorted(weights.items(), key=lambda item: repr(item[0])))
