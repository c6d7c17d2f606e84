"""Victim search for phases 4 (reclaim) and 5 (preempt).

It looks for the fewest, cheapest workloads whose eviction lets a pending workload fit.

The search runs on the live cycle state and leaves it as it found it:

1. release candidates one by one in the caller's order (`by_locality`: cheapest first, and at
   equal cost grouped by node so that room builds up on few nodes) until a cheap capacity
   count says the workload might fit, then try to place it for real (`eligible` re-checks each
   candidate against what was already released, so a victim queue is never taken below its
   quota); a node that could not hold one pod of a whole-GPU workload even if every candidate
   still eligible there went is passed over, for its victims would be dropped in step 2 anyway
   and, released first, they would use up what their queues may give (a queue that may give
   one 8-GPU job would give it as a 2-GPU job on a node the workload cannot use, and the
   search would fail with a fitting victim left untried); and when a node's victims, taken
   one by one as their queues allow, still leave it unable to hold one pod, they are put back
   (those wholly on that node) before the next node: what a queue may give is limited (never
   below its quota), and spent on a node that does not come free it is missing on one that
   would;
2. keep only victims on the nodes that placement used (the others were not needed);
3. drop victims one at a time, most expensive first, while the workload still fits.

Evicting workloads are offered first at no cost: room already being made is used before new
evictions are considered.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from scheduler_service.core._model import Allocation, Workload
from scheduler_service.core._placement import place, static_fit
from scheduler_service.core._state import CycleState

__all__ = ["Candidate", "Group", "LazyOrder", "VictimSearch", "by_locality", "find_victims"]


class Candidate(NamedTuple):
    """A workload that could make room. `cost` orders candidates, cheapest first.

    `accounted`: whether the workload counts in its queue's usage (running) or not (evicting).
    A named tuple rather than a frozen dataclass: thousands are built per reclaim phase.
    """

    workload: Workload
    cost: tuple[int | float | str, ...]
    accounted: bool


Group = tuple[str, Sequence[Candidate]]
"""One node's candidates of one cost (the node is "" for a group not tied to one node)."""


@dataclass(frozen=True, slots=True)
class VictimSearch:
    """The outcome: the victims to evict, and where the workload will then go."""

    victims: tuple[Candidate, ...]
    allocation: Allocation


def find_victims(
    state: CycleState,
    workload: Workload,
    pool: str,
    candidates: Iterable[Group],
    *,
    eligible: Callable[[Candidate], bool],
    admissible: Callable[[], bool],
    on_node: Mapping[str, Sequence[Candidate]] | None = None,
    restored: Callable[[], None] | None = None,
) -> VictimSearch | None:
    """Search victims for `workload` in `pool` among `candidates`, group by group.

    Inside a node's group, the smallest victim that frees what the workload still needs on
    that node comes first, else the largest: fewer victims (see `_best_fit`).

    `eligible(c)` says whether c may be taken given what is released so far (it is asked
    lazily, so a long candidate list costs only as far as the search goes; once False it
    stays False until victims are put back, when `restored()` is called); `admissible()`
    whether the workload passes its queue's gates with the current what-if usage. `on_node`,
    every candidate by the nodes it runs on, lets the search pass over nodes that cannot hold
    a pod (see the module docstring). The state is left as it was found.
    """
    usable: dict[str, bool] = {}  # node -> static_fit for the workload, asked as needed
    released_ids: set[int] = set()
    per_pod = workload.request.gpus

    def may_host(node: str) -> bool:
        """Whether `node` could hold one pod if every candidate still eligible there went."""
        if on_node is None or not per_pod or node not in state.node_by_name:
            return True
        room = state.node_by_name[node].free_whole
        if room >= per_pod:
            return True
        for candidate in on_node.get(node, ()):
            if id(candidate) in released_ids or not eligible(candidate):
                continue
            room += _gpus_on(candidate, node)
            if room >= per_pod:
                return True
        return False

    def on_usable_node(candidate: Candidate) -> bool:
        allocation = candidate.workload.allocation
        assert allocation is not None
        for pod in allocation:
            if pod.node not in usable:
                usable[pod.node] = static_fit(state.node_by_name[pod.node], workload)
            if usable[pod.node]:
                return True
        return False

    released: list[Candidate] = []
    found: Allocation | None = None
    for node, group in candidates:
        if not may_host(node):
            continue
        mark = len(released)
        for candidate in _best_fit(state, workload, node, group):
            if not on_usable_node(candidate) or not eligible(candidate):
                continue
            _release(state, candidate)
            released.append(candidate)
            released_ids.add(id(candidate))
            if _might_fit(state, workload, pool) and admissible():
                found = _try_place(state, workload, pool)
                if found is not None:
                    break
        if found is not None:
            break
        if _stays_short(state, node, per_pod):
            back = [c for c in released[mark:] if _only_on(c, node)]
            if back:
                _restore_all(state, back)
                released_ids.difference_update(id(c) for c in back)
                released = [c for c in released if id(c) in released_ids]
                if restored is not None:
                    restored()
    if found is None:
        _restore_all(state, released)
        return None
    return _trim(state, workload, pool, released, found=found, admissible=admissible)


def _trim(
    state: CycleState,
    workload: Workload,
    pool: str,
    released: list[Candidate],
    *,
    found: Allocation,
    admissible: Callable[[], bool],
) -> VictimSearch | None:
    """Steps 2 and 3: keep the victims on the nodes used, then drop every one not needed.

    `released` are released and the workload placed as `found`; the state is left as it was
    before the search.
    """
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


def by_locality(
    state: CycleState,
    candidates: Iterable[Candidate],
    gives: Mapping[str, int] | None = None,
) -> LazyOrder:
    """Cheapest first; at equal cost, candidates on the nodes that could free the most first.

    Among nodes that could free as much, those that ask the least of scarce give come first:
    `gives` is how many GPUs each queue may give up in all (reclaim: what it holds beyond its
    quota), and a node's strain is the largest share of a queue's give that its candidates
    there would take. Freeing a node that takes all of a queue's give leaves nothing of that
    queue for other nodes, where the same give would free more.

    Only the node order is sorted up front; each node's few candidates are sorted when the
    search gets there, which it rarely does for more than a handful of nodes. The order's
    `on_node` lists every candidate by the nodes it runs on, whatever its cost.
    """
    potential: dict[str, int] = {}
    on_node: dict[str, list[Candidate]] = {}
    tiers: dict[object, dict[str, list[Candidate]]] = {}
    taken: dict[tuple[str, str], int] = {}
    for candidate in candidates:
        allocation = candidate.workload.allocation
        assert allocation is not None
        for pod in allocation:
            gpus = max(len(pod.gpus), 1 if pod.slice else 0)
            potential[pod.node] = potential.get(pod.node, 0) + gpus
            if gives is not None and candidate.accounted:
                key = (pod.node, candidate.workload.queue)
                taken[key] = taken.get(key, 0) + gpus
            listed = on_node.setdefault(pod.node, [])
            if not listed or listed[-1] is not candidate:
                listed.append(candidate)
        tier = tiers.setdefault(candidate.cost[0], {})
        tier.setdefault(allocation[0].node, []).append(candidate)
    for name in potential:
        potential[name] += state.node_by_name[name].free_whole
    strain: dict[str, float] = {}
    for (node, queue), gpus in taken.items():
        give = gives.get(queue, 0) if gives is not None else 0
        share = gpus / give if give > 0 else math.inf
        strain[node] = max(strain.get(node, 0.0), share)

    def generate() -> Iterator[Group]:
        for cost in sorted(tiers, key=_tier_key):
            by_node = tiers[cost]
            for node in sorted(by_node, key=lambda n: (-potential[n], strain.get(n, 0.0), n)):
                yield node, sorted(by_node[node], key=lambda c: c.cost)

    return LazyOrder(generate(), on_node)


def _best_fit(
    state: CycleState, workload: Workload, node_name: str, group: Sequence[Candidate]
) -> Sequence[Candidate]:
    """Order one node's candidates of one cost for a whole-GPU workload: fewest victims."""
    gpus = workload.request.gpus
    if not gpus or len(group) < 2 or node_name not in state.node_by_name:
        return group
    node = state.node_by_name[node_name]
    need = min(len(node.gpus) // gpus, workload.pods) * gpus - node.free_whole
    if need <= 0:
        return group

    enough: list[tuple[int, tuple[int | float | str, ...], int, Candidate]] = []
    short: list[tuple[int, tuple[int | float | str, ...], int, Candidate]] = []
    for index, candidate in enumerate(group):
        allocation = candidate.workload.allocation
        assert allocation is not None
        held = sum(len(pod.gpus) for pod in allocation if pod.node == node_name and not pod.slice)
        # The index breaks ties as a stable sort would, and keeps candidates out of comparisons.
        if held >= need:
            enough.append((held, candidate.cost, index, candidate))
        else:
            short.append((-held, candidate.cost, index, candidate))
    enough.sort()
    short.sort()
    return [c for *_, c in (*enough[:1], *short, *enough[1:])]


def _tier_key(cost: object) -> float:
    assert isinstance(cost, int | float)
    return cost


class LazyOrder:
    """A sequence produced on demand and remembered, so several searches share one order."""

    def __init__(
        self, source: Iterator[Group], on_node: Mapping[str, Sequence[Candidate]] | None = None
    ) -> None:
        self._source = source
        self._seen: list[Group] = []
        self.on_node = on_node
        """Every candidate by the nodes it runs on, when the producer knows it."""

    def __iter__(self) -> Iterator[Group]:
        index = 0
        while True:
            if index == len(self._seen):
                produced = next(self._source, None)
                if produced is None:
                    return
                self._seen.append(produced)
            yield self._seen[index]
            index += 1


def _gpus_on(candidate: Candidate, node: str) -> int:
    """GPUs `candidate` holds on `node`, a GPU shared by a slice counted whole (at most)."""
    allocation = candidate.workload.allocation
    assert allocation is not None
    return sum(max(len(pod.gpus), 1 if pod.slice else 0) for pod in allocation if pod.node == node)


def _stays_short(state: CycleState, node: str, per_pod: int) -> bool:
    """Whether `node` still cannot hold one pod of `per_pod` whole GPUs (False for slices)."""
    return (
        bool(per_pod)
        and node in state.node_by_name
        and (state.node_by_name[node].free_whole < per_pod)
    )


def _only_on(candidate: Candidate, node: str) -> bool:
    assert candidate.workload.allocation is not None
    return all(pod.node == node for pod in candidate.workload.allocation)


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
