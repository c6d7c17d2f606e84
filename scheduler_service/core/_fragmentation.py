"""Fragmentation-aware scoring for placement: how much GPU capacity a placement strands.

After Weng et al., "Beware of Fragmentation" (USENIX ATC 2023): a node's *fragmentation* for a
workload mix is the GPU capacity the mix's next pod could not use, in expectation over the mix's
request shapes. For one shape it is all of the node's free GPU capacity when the shape does not
fit the node (CPU, GPU model, GPUs), and otherwise the free capacity of the GPUs whose free share
is below the shape's per-GPU demand (a 30% leftover is a fragment for an 80% slice). Placement
prefers the node and GPU whose placement raises the node's fragmentation least.

A node's fragmentation depends only on its *signature* (GPU model, free CPU, the sorted free
compute of its GPUs), and most nodes of a pool share a few signatures, so `Fragmentation`
caches scores by signature: identical nodes are scored once. The caches are pure functions of
their keys, so a scorer may be kept across cycles (the simulator does) or built per cycle.

Units: GPU shares in percent of one GPU (as `GpuState.free_compute`), CPU in milli-CPUs.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable

from scheduler_service.core._model import Request, Workload
from scheduler_service.core._state import NodeState

__all__ = ["Fragmentation", "ShapeMix", "Signature", "signature"]

_FULL = 100

Signature = tuple[str, int, tuple[int, ...]]
"""A node's (GPU model, free CPU milli, sorted free compute percent of each GPU)."""


def signature(node: NodeState) -> Signature:
    """What a node's fragmentation depends on. A GPU whose memory is gone counts as full."""
    frees = sorted(g.free_compute if g.free_memory_mib else 0 for g in node.gpus)
    return (node.node.gpu_model, node.free_cpu_milli, tuple(frees))


class ShapeMix:
    """The GPU request shapes of a workload mix and their popularity (pods of each shape).

    Shapes are grouped by GPU demand (GPU count, per-GPU percent, acceptable models); inside a
    group the CPU demands are sorted with cumulative popularity, so the share of a group that
    a node's free CPU admits is one bisection. CPU-only pods use no GPU and are left out.
    """

    def __init__(self, shapes: Iterable[tuple[Request, tuple[str, ...], int]]) -> None:
        """Count `(request, acceptable models, pods)` entries; popularity sums to 1."""
        counts: Counter[tuple[int, int, tuple[str, ...], int]] = Counter()
        for request, models, pods in shapes:
            if request.is_slice:
                counts[1, request.gpu_compute_percent, models, request.cpu_milli] += pods
            elif request.gpus:
                counts[request.gpus, _FULL, models, request.cpu_milli] += pods
        total = sum(counts.values()) or 1
        grouped: dict[tuple[int, int, tuple[str, ...]], list[tuple[int, float]]] = {}
        for (gpus, per_gpu, models, cpu), pods in counts.items():
            grouped.setdefault((gpus, per_gpu, models), []).append((cpu, pods / total))
        self.groups: list[tuple[int, int, tuple[str, ...], list[int], list[float]]] = []
        for (gpus, per_gpu, models), entries in sorted(grouped.items()):
            entries.sort()
            cumulative = [0.0]
            for _, share in entries:
                cumulative.append(cumulative[-1] + share)
            self.groups.append((gpus, per_gpu, models, [c for c, _ in entries], cumulative))

    @classmethod
    def of_workloads(cls, workloads: Iterable[Workload]) -> ShapeMix:
        """The mix of a snapshot's workloads, each pod counted once."""
        return cls((w.request, w.models, w.pods) for w in workloads)

    def fragmentation(self, key: Signature) -> float:
        """Expected free GPU percent of a node with signature `key` that the next pod can't use."""
        model, free_cpu, frees = key
        total = sum(frees)
        if not total:
            return 0.0
        whole = len(frees) - bisect_left(frees, _FULL)
        largest = frees[-1]
        result = 0.0
        for gpus, per_gpu, models, cpus, cumulative in self.groups:
            share = cumulative[-1]
            if models and model not in models:
                result += share * total
                continue
            admitted = cumulative[bisect_right(cpus, free_cpu)]
            result += (share - admitted) * total
            if not admitted:
                continue
            fits = largest >= per_gpu if per_gpu < _FULL else whole >= gpus
            result += admitted * (sum(frees[: bisect_left(frees, per_gpu)]) if fits else total)
        return result


class Fragmentation:
    """A mix's fragmentation scores with their caches (pure functions of their keys)."""

    def __init__(self, mix: ShapeMix) -> None:
        """Score against `mix`."""
        self.mix = mix
        self._scores: dict[Signature, float] = {}
        self._gradients: dict[tuple[Signature, int, int, int], float] = {}

    def gradient(self, key: Signature, cpu_milli: int, take: int, count: int) -> float:
        """How much placing a pod raises fragmentation of a node with signature `key`.

        The pod takes `cpu_milli`, and `take` percent of one GPU whose free share is `count`
        (a slice) or, with `take` 100, `count` whole GPUs; `take` 0 is a CPU-only pod.
        """
        cache_key = (key, cpu_milli, take, count)
        found = self._gradients.get(cache_key)
        if found is not None:
            return found
        model, free_cpu, frees = key
        if take == _FULL:
            start = bisect_left(frees, _FULL)
            after = (0,) * count + frees[:start] + frees[start + count :]
        elif take:
            at = frees.index(count)
            after = tuple(sorted((*frees[:at], count - take, *frees[at + 1 :])))
        else:
            after = frees
        found = self._score((model, free_cpu - cpu_milli, after)) - self._score(key)
        self._gradients[cache_key] = found
        return found

    def _score(self, key: Signature) -> float:
        found = self._scores.get(key)
        if found is None:
            found = self._scores[key] = self.mix.fragmentation(key)
        return found
