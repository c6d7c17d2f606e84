"""Phase 0: whether a pending workload's target can ever work, and in which pools.

A workload naming a queue that does not exist, a parent queue, an unknown pool or model, or a
pod shape no node could ever hold is a mistake its user must fix: it gets an `InvalidTarget`
reason saying what is wrong, and takes no part in the cycle. The answer depends on the nodes
and queues only, never on what runs, so a `World` keeps one `Targets` across cycles.
"""

from __future__ import annotations

from collections.abc import Mapping

from scheduler_service.core._model import Queue, Workload
from scheduler_service.core._placement import describe_pod, shape, spec_fit
from scheduler_service.core._state import CycleState

__all__ = ["Targets"]


class Targets:
    """Checks targets against one cluster and queue tree; see the module docstring."""

    def __init__(self, state: CycleState, queues: Mapping[str, Queue]) -> None:
        self._state = state
        self._queues = queues
        self._parents = {q.parent for q in queues.values() if q.parent}
        self._fits_cache: dict[tuple[object, ...], bool] = {}

    def check(self, workload: Workload) -> str | list[str]:
        """The pools `workload` may use, in order of preference, or what the user must fix."""
        queue = self._queues.get(workload.queue)
        if queue is None:
            known = ", ".join(sorted(self._queues)) or "none"
            return f"queue {workload.queue!r} does not exist (queues: {known})"
        if queue.name in self._parents:
            leaves = sorted(q.name for q in self._queues.values() if q.parent == queue.name)
            return f"queue {queue.name!r} has child queues; submit to one of: {', '.join(leaves)}"
        pools = self._state.pools
        unknown = [p for p in workload.pools if p not in pools]
        if unknown:
            return f"pool(s) {', '.join(unknown)} do not exist (pools: {', '.join(sorted(pools))})"
        candidates = list(workload.pools) or sorted(pools)
        if workload.models:
            chosen = candidates
            candidates = [p for p in chosen if self._has_model(p, workload.models)]
            if not candidates:
                wanted = " or ".join(workload.models)
                elsewhere = [p for p in sorted(pools) if self._has_model(p, workload.models)]
                if elsewhere:
                    return (
                        f"pool(s) {', '.join(chosen)} have no GPU model {wanted}; it is in "
                        f"pool(s) {', '.join(elsewhere)}"
                    )
                models = sorted({n.node.gpu_model for n in self._state.nodes if n.node.gpus})
                return f"no node has GPU model {wanted} (models: {', '.join(models) or 'none'})"
        usable = [p for p in candidates if self._ever_fits(workload, p)]
        return usable or self._never_fits_message(workload, candidates)

    def _has_model(self, pool: str, models: tuple[str, ...]) -> bool:
        return any(
            self._state.nodes[n].node.gpu_model in models for n in self._state.pools[pool].nodes
        )

    def _never_fits_message(self, workload: Workload, candidates: list[str]) -> str:
        return (
            f"no node in pool(s) {', '.join(candidates) or 'none'} can ever hold "
            f"{workload.pods} x {describe_pod(workload.request)}" + self._topology_hint(workload)
        )

    def _ever_fits(self, workload: Workload, pool: str) -> bool:
        """Whether the workload would fit the pool if the pool were empty and every node ready.

        Cached per workload shape: many pending workloads share a few shapes.
        """
        key = (pool, *shape(workload))
        if key not in self._fits_cache:
            self._fits_cache[key] = self._ever_fits_uncached(workload, pool)
        return self._fits_cache[key]

    def _ever_fits_uncached(self, workload: Workload, pool: str) -> bool:
        request = workload.request
        slots_by_domain: dict[str | None, int] = {}
        level = (
            workload.topology.level if workload.topology and workload.topology.required else None
        )
        for node_id in self._state.pools[pool].nodes:
            node = self._state.nodes[node_id]
            spec = node.node
            if not spec_fit(spec, workload):
                continue
            if spec.cpu_milli < request.cpu_milli or spec.memory_mib < request.memory_mib:
                continue
            if request.is_slice:
                slots = sum(1 for g in spec.gpus if g.memory_mib >= request.gpu_memory_mib)
            elif request.gpus:
                slots = len(spec.gpus) // request.gpus
            else:
                slots = 1
            if slots:
                domain = node.domain(level) if level else None
                if level and domain is None:
                    continue
                slots_by_domain[domain] = slots_by_domain.get(domain, 0) + slots
        if request.is_slice or not (request.gpus or request.is_slice):
            return bool(slots_by_domain)
        return any(slots >= workload.pods for slots in slots_by_domain.values())

    def _topology_hint(self, workload: Workload) -> str:
        if workload.topology and workload.topology.required:
            return f" inside one {workload.topology.level}"
        return ""
