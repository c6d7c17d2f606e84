"""Phase 3's placement: find nodes and GPUs for every pod of a workload, or none at all.

A chain of small steps, each with its reason for being where it is:

1. `static_fit`: node-level feasibility that never changes in a cycle (ready, model, labels,
   taints, reservation) - cheapest, so it runs first and prunes most;
2. `_cpu_memory_fit`: CPU and memory for one pod, then the GPU step;
3. whole GPUs: the tightest node first (fewest whole free GPUs that still fit) so whole
   nodes stay free for large gangs; on the node, one NUMA group when possible;
4. slices: a GPU that is already shared first (tightest free compute), and only then a whole
   GPU on the node with the fewest whole free GPUs, so slices do not fragment fresh GPUs;
5. with a `Fragmentation` scorer (the pool's learned request mix, as every cycle places),
   slices, whole GPUs and CPU-only pods instead go where they raise the node's fragmentation
   least (`_fragmentation`), ties broken by the tightest fit as above, so the next pods of the
   mix still find room; nodes are scored once per signature group (`PoolState.signatures`).
   Steps 3 and 4 alone serve what-ifs (reclaim's trial placements) and a pool with no mix yet;
6. across pools (`place_least_harm`): the pool where the queue stays within quota, then the
   least fragmentation added, then the first in the given order;
7. gangs: pods are placed one by one on the live state and all given back on the first
   failure; a topology wish picks the fullest domain of the level that still fits the gang.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from scheduler_service.core._fragmentation import Fragmentation
from scheduler_service.core._model import (
    Allocation,
    GpuSlice,
    Node,
    PodAllocation,
    Request,
    Workload,
)
from scheduler_service.core._state import CycleState, GpuState, NodeState, PoolState, Signature

__all__ = [
    "describe_pod",
    "domain_capacity",
    "place",
    "place_least_harm",
    "pod_capacity",
    "shape",
    "spec_fit",
    "static_fit",
]

_FULL = 100
_DOMAIN_TRIES = 3
"""Domains tried for a topology-constrained gang before giving up (the fullest that fit)."""

NodeFilter = Callable[[NodeState], bool]

Rank = tuple[float, ...]
"""How good a placement is, lower first: the fragmentation it adds, then tie-breaks (a slice:
the GPU's free share, the node's whole free GPUs, the GPU's id; other pods: the node's whole
free GPUs, 0, the node's id). Placed without a score, a placement's rank is (0.0,)."""


def static_fit(node: NodeState, workload: Workload) -> bool:
    """Node-level checks that do not depend on free resources."""
    if not node.schedulable:
        return False
    if node.reserved_for is not None and node.reserved_for != workload.name:
        return False
    return spec_fit(node.node, workload)


def spec_fit(spec: Node, workload: Workload) -> bool:
    """What the node is (model, labels, taints) suits the workload, whatever its state."""
    if workload.models and spec.gpu_model not in workload.models:
        return False
    if workload.node_selector:
        labels = dict(spec.labels)
        if any(labels.get(key) != value for key, value in workload.node_selector):
            return False
    return all(taint in workload.tolerations for taint in spec.taints)


def shape(workload: Workload) -> tuple[object, ...]:
    """What placement sees of a workload: equal shapes fit (or fail) on the same nodes."""
    return (
        workload.request,
        workload.pods,
        workload.models,
        workload.node_selector,
        workload.tolerations,
        workload.topology,
    )


def pod_capacity(node: NodeState, request: Request) -> int:
    """How many more pods of `request` the node could host now (an upper bound for slices)."""
    bounds = []
    if request.cpu_milli:
        bounds.append(node.free_cpu_milli // request.cpu_milli)
    if request.memory_mib:
        bounds.append(node.free_memory_mib // request.memory_mib)
    if request.is_slice:
        bounds.append(
            sum(
                min(
                    g.free_compute // request.gpu_compute_percent,
                    g.free_memory_mib // request.gpu_memory_mib,
                )
                for g in node.gpus
            )
        )
    elif request.gpus:
        bounds.append(node.free_whole // request.gpus)
    return max(0, min(bounds)) if bounds else 1 << 30


def place(
    state: CycleState,
    workload: Workload,
    pool: str,
    accept: NodeFilter | None = None,
    *,
    scorer: Fragmentation | None = None,
) -> Allocation | None:
    """Place every pod of `workload` in `pool` and take the resources, or take nothing.

    On success the allocation is taken in `state` (queue usage included); undo it with
    `state.give(workload, allocation)`. `accept` narrows the nodes further (a what-if).
    `scorer` makes the choice fragmentation-aware (step 5 of the module docstring); without
    it the tightest fit wins.
    """
    placed = _place_in_pool(state, workload, pool, accept, scorer)
    if placed is None:
        return None
    state.account(workload, pool, +1)
    return placed[0]


def place_least_harm(
    state: CycleState,
    workload: Workload,
    pools: Sequence[str],
    scorer_of: Callable[[str], Fragmentation | None],
    borrowing: Callable[[str], bool],
) -> tuple[str, Allocation] | None:
    """Place `workload` in whichever of `pools` it harms least, and take the resources.

    Each pool's best placement is found (scored with that pool's `scorer_of(pool)`) and the
    winner is, in order: a pool where the workload stays within its queue's quota (not
    `borrowing(pool)`: guaranteed work is never reclaimed, so it should not borrow where it
    could own), then the least fragmentation added, then the same tie-breaks as inside one
    pool (the tightest fit; `Rank`), then the earlier pool in `pools`. Ties between pools are
    common (a placement that strands nothing adds no fragmentation in any pool), and breaking
    them by pool order instead of by fit packed one pool after another: on a CPU-bound openb
    list that cost 8 points (docs/results.md). Returns the pool and the allocation, taken in
    `state` (queue usage included), or None.
    """
    best: tuple[object, ...] | None = None
    chosen: tuple[str, Allocation] | None = None
    for index, pool in enumerate(pools):
        placed = _place_in_pool(state, workload, pool, None, scorer_of(pool))
        if placed is None:
            continue
        allocation, order = placed
        state.vacate(workload.request, allocation)
        rank = (borrowing(pool), *order, index)
        if best is None or rank < best:
            best, chosen = rank, (pool, allocation)
    if chosen is None:
        return None
    pool, allocation = chosen
    state.occupy(workload.request, allocation)
    state.account(workload, pool, +1)
    return chosen


def _place_in_pool(
    state: CycleState,
    workload: Workload,
    pool: str,
    accept: NodeFilter | None,
    scorer: Fragmentation | None,
) -> tuple[Allocation, Rank] | None:
    """`place` without the queue accounting, with the placement's rank (`_place_pods`)."""
    request = workload.request
    pool_state = state.pools[pool]
    if request.gpus and pool_state.free_whole < request.gpus * workload.pods:
        return None  # cheap exit that keeps full clusters fast

    def base(node: NodeState) -> bool:
        return static_fit(node, workload) and (accept is None or accept(node))

    wish = workload.topology
    if wish is None or workload.pods == 1:
        return _place_pods(state, workload, pool_state, base, scorer)
    placed = _place_in_domain(state, workload, pool_state, base, wish.level, scorer=scorer)
    if placed is None and not wish.required:
        placed = _place_pods(state, workload, pool_state, base, scorer)
    return placed


def domain_capacity(
    state: CycleState, workload: Workload, pool: str, level: str, accept: NodeFilter | None = None
) -> dict[str, int]:
    """Pods of `workload` each domain of `level` in `pool` could host now."""
    capacity: dict[str, int] = {}
    for node_id in state.pools[pool].nodes:
        node = state.nodes[node_id]
        domain = node.domain(level)
        if domain is None or not static_fit(node, workload):
            continue
        if accept is not None and not accept(node):
            continue
        capacity[domain] = capacity.get(domain, 0) + pod_capacity(node, workload.request)
    return capacity


def _place_in_domain(
    state: CycleState,
    workload: Workload,
    pool: PoolState,
    base: NodeFilter,
    level: str,
    *,
    scorer: Fragmentation | None,
) -> tuple[Allocation, Rank] | None:
    capacity = domain_capacity(state, workload, pool.name, level, base)
    fitting = sorted((pods, domain) for domain, pods in capacity.items() if pods >= workload.pods)
    for _, domain in fitting[:_DOMAIN_TRIES]:

        def inside(node: NodeState, domain: str = domain) -> bool:
            return base(node) and node.domain(level) == domain

        placed = _place_pods(state, workload, pool, inside, scorer)
        if placed is not None:
            return placed
    return None


def _place_pods(
    state: CycleState,
    workload: Workload,
    pool: PoolState,
    accept: NodeFilter,
    scorer: Fragmentation | None,
) -> tuple[Allocation, Rank] | None:
    """Every pod of `workload` in `pool`, taken, with its rank; or nothing.

    The rank is the fragmentation all pods add, then the first pod's tie-breaks (`Rank`).
    """
    placed: list[PodAllocation] = []
    harm = 0.0
    ties: tuple[float, ...] = ()
    for _ in range(workload.pods):
        if scorer is None:
            pod = _place_pod(state, workload.request, pool, accept)
        else:
            scored = _place_scored(state, workload.request, pool, accept, scorer)
            pod = None if scored is None else scored[1]
            if scored is not None:
                harm += scored[0][0]
                ties = ties or scored[0][1:]
        if pod is None:
            state.vacate(workload.request, tuple(placed))
            return None
        state.occupy(workload.request, (pod,))
        placed.append(pod)
    return tuple(placed), (round(harm, 9), *ties)


def _place_pod(
    state: CycleState, request: Request, pool: PoolState, accept: NodeFilter
) -> PodAllocation | None:
    if request.is_slice:
        return _place_slice(state, request, pool, accept)
    if request.gpus:
        return _place_whole(state, request, pool, accept)
    for node in _nodes_by_free_whole(state, pool, 0):
        if _cpu_memory_fit(node, request) and accept(node):
            return PodAllocation(node=node.node.name)
    return None


def _place_whole(
    state: CycleState, request: Request, pool: PoolState, accept: NodeFilter
) -> PodAllocation | None:
    for node in _nodes_by_free_whole(state, pool, request.gpus):
        if _cpu_memory_fit(node, request) and accept(node):
            gpus = _pick_whole(node, request.gpus)
            return PodAllocation(node=node.node.name, gpus=tuple(g.uuid for g in gpus))
    return None


def _place_slice(
    state: CycleState, request: Request, pool: PoolState, accept: NodeFilter
) -> PodAllocation | None:
    share = GpuSlice(memory_mib=request.gpu_memory_mib, compute_percent=request.gpu_compute_percent)
    for free in range(request.gpu_compute_percent, _FULL):
        for gpu_id in pool.partial[free]:
            gpu = state.gpus[gpu_id]
            node = state.nodes[gpu.node]
            if (
                gpu.free_memory_mib >= request.gpu_memory_mib
                and _cpu_memory_fit(node, request)
                and accept(node)
            ):
                return PodAllocation(node=node.node.name, gpus=(gpu.uuid,), slice=share)
    for node in _nodes_by_free_whole(state, pool, 1):
        if _cpu_memory_fit(node, request) and accept(node):
            fresh = [g for g in _pick_whole(node, 1) if g.memory_mib >= request.gpu_memory_mib]
            if fresh:
                return PodAllocation(node=node.node.name, gpus=(fresh[0].uuid,), slice=share)
    return None


def _place_scored(
    state: CycleState, request: Request, pool: PoolState, accept: NodeFilter, scorer: Fragmentation
) -> tuple[Rank, PodAllocation] | None:
    """Step 5: the placement that raises fragmentation least, ties to the tightest fit.

    Returns the placement's rank (the fragmentation it adds first) and the pod's placement,
    not taken.
    A node's score depends only on its signature, so each group of nodes with one signature
    (`PoolState.signatures`) is scored once, for each GPU share it could take a slice from,
    and only the best group's nodes are looked at, lowest id first, for one that fits (its
    memory, the node filter). Ranks: slices by (gradient, the GPU's free share, whole GPUs
    left on the node, GPU id), others by (gradient, whole GPUs free, node id); ids make the
    order total, so the result does not depend on the order groups are visited in.
    """
    cpu = request.cpu_milli
    need = request.gpu_compute_percent if request.is_slice else _FULL
    take = need if request.is_slice or request.gpus else 0
    best: tuple[float, int, int, int] | None = None
    found: PodAllocation | None = None
    options: list[tuple[float, int, Signature]] = []
    for key in pool.signatures:
        if key[1] < cpu:
            continue
        frees = key[2]
        if request.is_slice:
            shares = sorted({f for f in frees if f >= need})
        elif request.gpus:
            shares = [_FULL] if frees.count(_FULL) >= request.gpus else []
        else:
            shares = [0]
        for share in shares:
            count = request.gpus if take == _FULL and not request.is_slice else share
            gradient = round(scorer.gradient(key, cpu, take, count), 9)
            options.append((gradient, share, key))
    options.sort()
    for gradient, share, key in options:
        if best is not None and gradient > best[0]:
            break
        for node_id in pool.signatures[key]:
            node = state.nodes[node_id]
            if not (_cpu_memory_fit(node, request) and accept(node)):
                continue
            if request.is_slice:
                gpu = _slice_gpu(node, request, share)
                if gpu is None:
                    continue
                rank = (gradient, share, node.free_whole, gpu.id)
                if best is None or rank < best:
                    slice_ = GpuSlice(memory_mib=request.gpu_memory_mib, compute_percent=need)
                    best = rank
                    found = PodAllocation(node=node.node.name, gpus=(gpu.uuid,), slice=slice_)
            else:
                rank = (gradient, node.free_whole, 0, node.id)
                if best is None or rank < best:
                    gpus = _pick_whole(node, request.gpus) if request.gpus else []
                    best = rank
                    found = PodAllocation(node=node.node.name, gpus=tuple(g.uuid for g in gpus))
            break  # the group's later nodes rank after this one
    if best is None or found is None:
        return None
    return best, found


def _slice_gpu(node: NodeState, request: Request, share: int) -> GpuState | None:
    """The GPU of `node` a slice takes from a GPU with `share` percent free, or None.

    A fresh GPU (`share` 100) as `_fresh_gpu` picks it; a shared one, the first by index with
    that share free and the slice's memory.
    """
    if share == _FULL:
        return _fresh_gpu(node, request.gpu_memory_mib)
    for gpu in node.gpus:
        if (
            gpu.holders
            and gpu.free_compute == share
            and gpu.free_memory_mib >= request.gpu_memory_mib
        ):
            return gpu
    return None


def _fresh_gpu(node: NodeState, memory_mib: int) -> GpuState | None:
    """A whole free GPU of `node` with `memory_mib` (NUMA-tightest first), or None."""
    for gpu in _pick_whole(node, 1):
        if gpu.memory_mib >= memory_mib:
            return gpu
    return next((g for g in node.gpus if not g.holders and g.memory_mib >= memory_mib), None)


def _nodes_by_free_whole(state: CycleState, pool: PoolState, at_least: int) -> Iterable[NodeState]:
    """Schedulable nodes with at least `at_least` whole free GPUs, tightest first."""
    for count in range(at_least, len(pool.whole)):
        # Callers stop iterating before they change the state, so no copy of the bucket.
        for node_id in pool.whole[count]:
            yield state.nodes[node_id]


def _cpu_memory_fit(node: NodeState, request: Request) -> bool:
    return node.free_cpu_milli >= request.cpu_milli and node.free_memory_mib >= request.memory_mib


def _pick_whole(node: NodeState, count: int) -> list[GpuState]:
    """`count` whole free GPUs of `node`: inside the NUMA group that fits tightest, if any."""
    free = [g for g in node.gpus if g.holders == 0]
    groups: dict[int, list[GpuState]] = {}
    for gpu in free:
        groups.setdefault(gpu.numa, []).append(gpu)
    fitting = sorted(
        (len(members), numa) for numa, members in groups.items() if len(members) >= count
    )
    if fitting:
        return groups[fitting[0][1]][:count]
    return free[:count]


def describe_pod(request: Request) -> str:
    """One pod's request as a person reads it: `8 GPUs`, `slice 20% / 10240 MiB`."""
    if request.is_slice:
        return f"GPU slice ({request.gpu_compute_percent}% compute, {request.gpu_memory_mib} MiB)"
    if request.gpus:
        return f"{request.gpus} GPU" + ("s" if request.gpus > 1 else "")
    return f"{request.cpu_milli}m CPU"
