"""Fragmentation-aware scoring for placement: how much GPU capacity a placement strands.

After Weng et al., "Beware of Fragmentation" (USENIX ATC 2023): a node's *fragmentation* for a
workload mix is the GPU capacity the mix's next pod could not use, in expectation over the mix's
request shapes. For one shape it is all of the node's free GPU capacity when the shape does not
fit the node (CPU, GPU model, GPUs), and otherwise the free capacity of the GPUs whose free share
is below the shape's per-GPU demand (a 30% leftover is a fragment for an 80% slice). Placement
prefers the node and GPU whose placement raises the node's fragmentation least.

Two refinements over the paper's score, both used by the cycle (`World.scorer`: by demand,
`LOOKAHEAD` pods ahead) and measured in docs/results.md:

- the mix is weighted by *GPU demand*, not by pod count: the goal is GPU capacity handed out,
  so a fragment that would have taken an 8-GPU pod matters eight times a 1-GPU pod's;
- *lookahead*: fragmentation is measured one pod later (`lookahead` 2: two pods ahead). For
  each shape of the mix, the node's capacity is stranded outright when the shape does not fit,
  and otherwise the shape is placed (a slice on the tightest GPU it fits) and the node's
  fragmentation for the following pod is taken. One-step fragmentation cannot see that a
  node's last free GPU and last CPU fit one more pod but leave a sliver no pod can use; the
  lookahead can.

A node's fragmentation depends only on its *signature* (GPU model, free CPU, the sorted free
compute of its GPUs), and most nodes of a pool share a few signatures, so `Fragmentation`
caches scores by signature: identical nodes are scored once, and the lookahead's inner scores
are shared by every node that reaches the same state. The caches are pure functions of their
keys, so a world keeps its scorers across cycles until the pool's learned mix (`_mix`) changes.

Units: GPU shares in percent of one GPU (as `GpuState.free_compute`), CPU in milli-CPUs.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from itertools import accumulate

from scheduler_service.core._model import Request, Workload
from scheduler_service.core._state import Signature

__all__ = ["LOOKAHEAD", "MAIN_SHARE", "Fragmentation", "ShapeMix"]

_FULL = 100


class ShapeMix:
    """The GPU request shapes of a workload mix and the weight of each.

    A shape's weight is its pods' share of the mix: by pod count as in the paper, or with
    `by_demand` by GPU demand (pods x GPU percent each asks for). Shapes are grouped by GPU
    demand (GPU count, per-GPU percent, acceptable models); inside a group the CPU demands are
    sorted with cumulative weight, so the share of a group that a node's free CPU admits is one
    bisection. CPU-only pods use no GPU and are left out.
    """

    def __init__(
        self, shapes: Iterable[tuple[Request, tuple[str, ...], float]], *, by_demand: bool = False
    ) -> None:
        """Count `(request, acceptable models, pods)` entries; the weights sum to 1."""
        counts: dict[tuple[int, int, tuple[str, ...], int], float] = {}
        for request, models, pods in shapes:
            if request.is_slice:
                gpus, per_gpu = 1, request.gpu_compute_percent
            elif request.gpus:
                gpus, per_gpu = request.gpus, _FULL
            else:
                continue
            key = (gpus, per_gpu, models, request.cpu_milli)
            counts[key] = counts.get(key, 0.0) + pods * (gpus * per_gpu if by_demand else 1)
        total = sum(counts.values()) or 1
        grouped: dict[tuple[int, int, tuple[str, ...]], list[tuple[int, float]]] = {}
        for (gpus, per_gpu, models, cpu), weight in counts.items():
            grouped.setdefault((gpus, per_gpu, models), []).append((cpu, weight / total))
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
        return _evaluate(self.profile(model, frees), free_cpu)

    def profile(self, model: str, frees: tuple[int, ...]) -> Profile:
        """The fragmentation of a node with these GPUs, as a step function of its free CPU.

        Every shape strands the node's whole free capacity except the shapes that fit its GPUs
        and its CPU; those strand only the GPUs below their per-GPU demand. So fragmentation
        starts at `stranded` (every shape's weight x free capacity) and drops, at each CPU
        demand of a shape that fits the GPUs, by that shape's weight x the capacity it could
        use: `(points, values)`, where a node with free CPU `c` has fragmentation
        `values[bisect_right(points, c)]`.
        """
        total = sum(frees)
        if not total:
            return _NONE
        whole = len(frees) - bisect_left(frees, _FULL)
        largest = frees[-1]
        below = list(accumulate(frees, initial=0))  # below[i]: free share of the i emptiest GPUs
        stranded = 0.0
        drops: dict[int, float] = {}
        for gpus, per_gpu, models, cpus, cumulative in self.groups:
            stranded += cumulative[-1] * total
            if models and model not in models:
                continue
            if largest >= per_gpu if per_gpu < _FULL else whole >= gpus:
                usable = total - below[bisect_left(frees, per_gpu)]
                for i, cpu in enumerate(cpus):
                    drop = (cumulative[i + 1] - cumulative[i]) * usable
                    drops[cpu] = drops.get(cpu, 0.0) + drop
        points = sorted(drops)
        values = [stranded]
        for cpu in points:
            values.append(values[-1] - drops[cpu])
        return points, values


Profile = tuple[list[int], list[float]]
"""`ShapeMix.profile`: a node's fragmentation for its GPUs, as a step function of free CPU."""

_NONE: Profile = ([], [0.0])


def _evaluate(profile: Profile, free_cpu: int) -> float:
    points, values = profile
    return values[bisect_right(points, free_cpu)]


def _take(frees: tuple[int, ...], gpus: int, per_gpu: int) -> tuple[int, ...] | None:
    """Sorted free shares after a pod of `gpus` x `per_gpu` takes its GPUs, or None if it can't.

    A slice takes the tightest GPU it fits (the choice that keeps larger shares whole), whole
    GPUs take untouched ones.
    """
    at = bisect_left(frees, per_gpu)
    if per_gpu < _FULL:
        if at == len(frees):
            return None
        left = frees[at] - per_gpu
        to = bisect_left(frees, left, 0, at)
        return (*frees[:to], left, *frees[to:at], *frees[at + 1 :])
    if len(frees) - at < gpus:
        return None
    return (0,) * gpus + frees[:at] + frees[at + gpus :]


LOOKAHEAD = 2
"""How many pods ahead the cycle scores a node (see the module docstring and
docs/results.md, where one, two and three pods ahead are measured)."""

MAIN_SHARE = 0.05
"""Beyond the first pod, the lookahead follows only shapes with at least this share of the mix.

A cost bound, not a tuned value: each step ahead multiplies the states scored by the shapes
followed (81 on openb `default`, 5 of them main); following all of them two pods ahead cost six
times as much on openb for no more allocation, and rare shapes weigh little anyway.
"""


class Fragmentation:
    """A mix's fragmentation scores with their caches (pure functions of their keys).

    With `lookahead` k > 0, a node's score is its fragmentation k pods later (module
    docstring); after the first pod only the mix's main shapes (`MAIN_SHARE`) are followed
    further, the others are scored one step ahead.
    """

    def __init__(self, mix: ShapeMix, *, lookahead: int = 0) -> None:
        """Score against `mix`, `lookahead` pods ahead."""
        self.mix = mix
        self.lookahead = lookahead
        self._scores: dict[tuple[Signature, int], float] = {}
        self._profiles: dict[tuple[str, tuple[int, ...]], Profile] = {}
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
        ahead = self.lookahead
        found = self._score((model, free_cpu - cpu_milli, after), ahead) - self._score(key, ahead)
        self._gradients[cache_key] = found
        return found

    def _score(self, key: Signature, ahead: int) -> float:
        model, free_cpu, frees = key
        if not ahead:
            return _evaluate(self._profile(model, frees), free_cpu)
        found = self._scores.get((key, ahead))
        if found is None:
            found = self._scores[key, ahead] = self._ahead(key, ahead)
        return found

    def _ahead(self, key: Signature, ahead: int) -> float:
        """Expected fragmentation `ahead` pods later: the mix's next pod goes here if it fits."""
        model, free_cpu, frees = key
        total = sum(frees)
        if not total:
            return 0.0
        result = 0.0
        for gpus, per_gpu, models, cpus, cumulative in self.mix.groups:
            admitted = 0 if models and model not in models else bisect_right(cpus, free_cpu)
            after = _take(frees, gpus, per_gpu) if admitted else None
            if after is None:
                result += cumulative[-1] * total
                continue
            result += (cumulative[-1] - cumulative[admitted]) * total
            profile = self._profile(model, after)
            for i in range(admitted):
                share = cumulative[i + 1] - cumulative[i]
                if ahead > 1 and share >= MAIN_SHARE:
                    result += share * self._score((model, free_cpu - cpus[i], after), ahead - 1)
                else:
                    result += share * _evaluate(profile, free_cpu - cpus[i])
        return result

    def _profile(self, model: str, frees: tuple[int, ...]) -> Profile:
        key = (model, frees)
        found = self._profiles.get(key)
        if found is None:
            found = self._profiles[key] = self.mix.profile(model, frees)
        return found
