"""Victim search for phases 4 (reclaim) and 5 (preempt).

It looks for the fewest, cheapest workloads whose eviction lets a pending workload fit.

The search runs on the live cycle state and leaves it as it found it:

1. release candidates one by one in the caller's order (`by_locality`: cheapest first, and at
   equal cost grouped by node so that room builds up on few nodes) until a cheap capacity
   count says the workload might fit, then try to place it for real (`eligible` re-checks each
   candidate against what was already released, so a victim queue is never taken below its
   quota);
2. keep only victims on the nodes that placement used (the others were not needed);
3. drop victims one at a time, most expensive first, while the workload still fits.

Evicting workloads are offered first at no cost: room already being made is used before new
evictions are considered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from scheduler_service.core._model import Allocation, Workload
from scheduler_service.core._placement import place, pod_capacity, static_fit
from scheduler_service.core._state import CycleState

__all__ = ["Candidate", "VictimSearch", "by_locality", "find_victims"]


class Candidate(NamedTuple):
    """A workload that could make room. `cost` orders candidates, cheapest first.

    `accounted`: whether the workload counts in its queue's usage (running) or not (evicting).
    A named tuple rather than a frozen dataclass: thousands are built per reclaim phase.
    """

    workload: Workload
    cost: tuple[int | float | str, ...]
    accounted: bool


@dataclass(frozen=True, slots=True)
class VictimSearch:
    """The outcome: the victims to evict, and where the workload will then go."""

    victims: tuple[Candidate, ...]
    allocation: Allocation


def find_victims(
    state: CycleState,
    workload: Workload,
    pool: str,
    candidates: Iterable[Candidate],
    *,
    eligible: Callable[[Candidate], bool],
    admissible: Callable[[], bool],
) -> VictimSearch | None:
    """Search victims for `workload` in `pool` among `candidates`, tried in the given order.

    `eligible(c)` says whether c may be taken given what is released so far (it is asked
    lazily, so a long candidate list costs only as far as the search goes); `admissible()`
    whether the workload passes its queue's gates with the current what-if usage. The state is
    left as it was found.
    """
    pool_nodes = state.pools[pool].nodes
    nodes = {state.nodes[n].node.name for n in pool_nodes if static_fit(state.nodes[n], workload)}
    everywhere = len(nodes) == len(pool_nodes)
    released: list[Candidate] = []
    found: Allocation | None = None
    for candidate in candidates:
        if not (everywhere or _on_nodes(candidate, nodes)) or not eligible(candidate):
            continue
        _release(state, candidate)
        released.append(candidate)
        if _might_fit(state, workload, pool) and admissible():
            found = _try_place(state, workload, pool)
            if found is not None:
                break
    if found is None:
        _restore_all(state, released)
        return None

    used_nodes = {pod.node for pod in found}
    needed = [c for c in released if _on_nodes(c, used_nodes)]
    needed_ids = {id(c) for c in needed}
    for candidate in reversed(released):
        if id(candidate) not in needed_ids:
            _restore(state, candidate)
    for candidate in sorted(needed, key=lambda c: c.cost, reverse=True):
        _restore(state, candidate)
        if admissible() and _try_place(state, workload, pool) is not None:
            needed = [c for c in needed if c is not candidate]
        else:
            _release(state, candidate)
    if not admissible() or (final := _try_place(state, workload, pool)) is None:
        _restore_all(state, needed)  # pragma: no cover - the loop above keeps a fitting set
        return None
    _restore_all(state, needed)
    return VictimSearch(
        victims=tuple(sorted(needed, key=lambda c: c.workload.name)), allocation=final
    )


def by_locality(state: CycleState, candidates: Sequence[Candidate]) -> list[Candidate]:
    """Cheapest first; at equal cost, candidates on the nodes that could free the most first."""
    potential: dict[str, int] = {}
    for candidate in candidates:
        assert candidate.workload.allocation is not None
        for pod in candidate.workload.allocation:
            potential[pod.node] = potential.get(pod.node, 0) + max(
                len(pod.gpus), 1 if pod.slice else 0
            )
    for name in potential:
        potential[name] += state.node_by_name[name].free_whole

    def key(candidate: Candidate) -> tuple[object, ...]:
        assert candidate.workload.allocation is not None
        first = candidate.workload.allocation[0].node
        return (candidate.cost[0], -potential[first], first, candidate.cost)

    return sorted(candidates, key=key)


def _on_nodes(candidate: Candidate, nodes: set[str]) -> bool:
    assert candidate.workload.allocation is not None
    return any(pod.node in nodes for pod in candidate.workload.allocation)


def _might_fit(state: CycleState, workload: Workload, pool: str) -> bool:
    """A cheap necessary condition, so full placement runs only when it can succeed."""
    request = workload.request
    pool_state = state.pools[pool]
    if request.gpus:
        if pool_state.free_whole < request.gpus * workload.pods:
            return False
        fits = 0
        for count in range(request.gpus, len(pool_state.whole)):
            fits += len(pool_state.whole[count]) * (count // request.gpus)
            if fits >= workload.pods:
                return True
        return False
    return True


def _try_place(state: CycleState, workload: Workload, pool: str) -> Allocation | None:
    allocation = place(state, workload, pool)
    if allocation is not None:
        state.give(workload, allocation)
    return allocation


def _release(state: CycleState, candidate: Candidate) -> None:
    allocation = candidate.workload.allocation
    assert allocation is not None
    if candidate.accounted:
        state.give(candidate.workload, allocation)
    else:
        state.vacate(candidate.workload.request, allocation)


def _restore(state: CycleState, candidate: Candidate) -> None:
    allocation = candidate.workload.allocation
    assert allocation is not None
    if candidate.accounted:
        state.take(candidate.workload, allocation)
    else:
        state.occupy(candidate.workload.request, allocation)


def _restore_all(state: CycleState, candidates: list[Candidate]) -> None:
    for candidate in reversed(candidates):
        _restore(state, candidate)


def capacity_hint(state: CycleState, workload: Workload, pool: str) -> int:
    """Pods of `workload` the pool could host right now (for messages)."""
    return sum(
        pod_capacity(state.nodes[n], workload.request)
        for n in state.pools[pool].nodes
        if static_fit(state.nodes[n], workload)
    )
