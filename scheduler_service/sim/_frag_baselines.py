"""Baseline placement policies of the fragmentation experiment: Random, BestFit and FGD.

They are implemented here, on `LightCluster`, as the FGD paper (Weng et al., "Beware of
Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation Gradient Descent",
USENIX ATC 2023) and its simulator describe them:

- **Random**: a node chosen uniformly among those the pod fits, a GPU uniformly among those
  its slice fits.
- **BestFit**: the node with the least resources left after placing the pod, as the sum of
  its free CPU and free GPU shares (each normalised by the node's capacity, equal weights);
  a slice goes to the fitting GPU with the least free share (the tightest).
- **FGD**: a node's fragmentation for the target workload is the expected GPU capacity that the
  workload's next task could not use: F(n) = sum over task types m of p_m * F_n(m), where p_m is
  m's share of the workload's GPU tasks and F_n(m) is all of n's free GPU capacity when m does
  not fit n (CPU, model or GPUs), and otherwise the free capacity of the GPUs whose free share
  is below m's per-GPU demand. The pod goes to the node and GPU whose placement increases F
  least (its "gradient").

Every policy answers `place(shape) -> bool`, taking the resources when it finds room. A pod
that fits nowhere is skipped (the protocol counts it as failed).
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Sequence

from scheduler_service.core import MILLI_GPU, Node
from scheduler_service.sim._frag_cluster import Choice, ClassKey, LightCluster, LightNode, Shape

__all__ = ["BestFitPolicy", "FgdPolicy", "RandomPolicy", "TaskMix"]


class RandomPolicy:
    """A uniformly random node among those that fit; a random fitting GPU for a slice."""

    def __init__(self, nodes: tuple[Node, ...], rng: random.Random) -> None:
        """Start on an empty cluster of `nodes`; `rng` makes every choice."""
        self.cluster = LightCluster(nodes)
        self.rng = rng
        self.fits: dict[Shape, dict[int, bool]] = {}

    def place(self, shape: Shape) -> bool:
        """Place one pod, or return False when it fits nowhere."""
        fitting: list[set[int]] = []
        total = 0
        cache = self.fits.setdefault(shape, {})
        for class_id, members in self.cluster.classes.items():
            fits = cache.get(class_id)
            if fits is None:
                fits = cache[class_id] = self.cluster.representative(class_id).fits(shape)
            if fits:
                fitting.append(members)
                total += len(members)
        if not total:
            return False
        pick = self.rng.randrange(total)
        for members in fitting:
            if pick < len(members):
                index = sorted(members)[pick]
                break
            pick -= len(members)
        node = self.cluster.nodes[index]
        if shape.is_slice:
            gpus: tuple[int, ...] = (self.rng.choice(node.gpu_options(shape)),)
        else:
            gpus = tuple(self.rng.sample(node.whole_free(), shape.gpus))
        self.cluster.take(shape, Choice(index, gpus))
        return True


class BestFitPolicy:
    """The node left with the least free CPU + GPU share; the tightest GPU for a slice."""

    def __init__(self, nodes: tuple[Node, ...]) -> None:
        """Start on an empty cluster of `nodes`."""
        self.cluster = LightCluster(nodes)
        self.left: dict[Shape, dict[int, float | None]] = {}

    def place(self, shape: Shape) -> bool:
        """Place one pod, or return False when it fits nowhere."""
        best: tuple[float, int] | None = None
        cache = self.left.setdefault(shape, {})
        for class_id in self.cluster.classes:
            left = cache.get(class_id, _NAN)
            if left is _NAN:
                node = self.cluster.representative(class_id)
                left = cache[class_id] = _left_share(node, shape) if node.fits(shape) else None
            if left is not None and (best is None or left < best[0]):
                best = (left, class_id)
        if best is None:
            return False
        index = self.cluster.member(best[1])
        node = self.cluster.nodes[index]
        if shape.is_slice:
            tightest = min(node.gpu_options(shape), key=lambda i: (node.free_gpus[i], i))
            gpus: tuple[int, ...] = (tightest,)
        else:
            gpus = tuple(node.whole_free()[: shape.gpus])
        self.cluster.take(shape, Choice(index, gpus))
        return True


_NAN = float("nan")


def _left_share(node: LightNode, shape: Shape) -> float:
    cpu = (node.free_cpu_milli - shape.cpu_milli) / node.cpu_milli
    if not node.free_gpus:
        return cpu + 1.0  # a GPU-less node keeps "all" its (zero) GPU share free
    gpus = len(node.free_gpus) * MILLI_GPU
    return cpu + (sum(node.free_gpus) - shape.gpus * shape.per_gpu_milli) / gpus


class TaskMix:
    """The target workload's GPU task types and their popularity, grouped for fast scoring.

    Types are grouped by GPU demand (GPU count, per-GPU milli, models); inside a group the CPU
    demands are sorted with cumulative popularity, so "the share of this group that fits n's
    free CPU" is one bisection.
    """

    def __init__(self, shapes: Sequence[Shape]) -> None:
        """Count the GPU tasks among `shapes` (CPU-only tasks cannot use GPUs: left out)."""
        counts = Counter(s for s in shapes if s.gpus)
        total = sum(counts.values()) or 1
        groups: dict[tuple[int, int, tuple[str, ...]], list[tuple[int, float]]] = {}
        for shape, count in counts.items():
            key = (shape.gpus, shape.per_gpu_milli, shape.models)
            groups.setdefault(key, []).append((shape.cpu_milli, count / total))
        self.groups: list[tuple[int, int, tuple[str, ...], list[int], list[float]]] = []
        for (gpus, per_gpu, models), entries in sorted(groups.items()):
            entries.sort()
            cumulative = [0.0]
            for _, share in entries:
                cumulative.append(cumulative[-1] + share)
            self.groups.append((gpus, per_gpu, models, [c for c, _ in entries], cumulative))

    def fragmentation(self, model: str, free_cpu: int, frees: tuple[int, ...]) -> float:
        """F(n): expected GPU milli of a node with these free resources the next task can't use.

        `frees` are the node's per-GPU free milli-GPUs, sorted ascending.
        """
        total = sum(frees)
        if not total:
            return 0.0
        whole = len(frees) - bisect_left(frees, MILLI_GPU)
        largest = frees[-1]
        result = 0.0
        for gpus, per_gpu, models, cpus, cumulative in self.groups:
            share = cumulative[-1]
            if models and model not in models:
                result += share * total
                continue
            fits_cpu = cumulative[bisect_right(cpus, free_cpu)]
            result += (share - fits_cpu) * total
            if not fits_cpu:
                continue
            fits_gpu = largest >= per_gpu if per_gpu < MILLI_GPU else whole >= gpus
            if fits_gpu:
                result += fits_cpu * sum(frees[: bisect_left(frees, per_gpu)])
            else:
                result += fits_cpu * total
        return result


class FgdPolicy:
    """Fragmentation gradient descent (see the module docstring), scored per node class.

    Nodes in the same state score identically, so the policy scores each class of
    `LightCluster` once per pod shape and caches the result until the class changes (a
    placement moves one node to a new class). This is what makes FGD fast enough in pure
    Python: most pods are scored against cached classes.
    """

    def __init__(self, nodes: tuple[Node, ...], mix: TaskMix) -> None:
        """Start on an empty cluster of `nodes`, scoring against the target workload `mix`."""
        self.cluster = LightCluster(nodes)
        self.mix = mix
        self.fragmentation: dict[tuple[str, int, tuple[int, ...]], float] = {}
        self.gradients: dict[Shape, dict[int, tuple[float, int] | None]] = {}

    def place(self, shape: Shape) -> bool:
        """Place one pod, or return False when it fits nowhere."""
        best: tuple[float, int, int] | None = None
        cache = self.gradients.setdefault(shape, {})
        keys = self.cluster.keys
        for class_id in self.cluster.classes:
            found = cache.get(class_id, _MISSING)
            if found is _MISSING:
                found = cache[class_id] = self._gradient(keys[class_id], shape)
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], class_id, found[1])
        if best is None:
            return False
        _, key, free_before = best
        index = self.cluster.member(key)
        node = self.cluster.nodes[index]
        if shape.is_slice:
            gpus: tuple[int, ...] = (node.free_gpus.index(free_before),)
        else:
            gpus = tuple(node.whole_free()[: shape.gpus])
        self.cluster.take(shape, Choice(index, gpus))
        return True

    def _gradient(self, key: ClassKey, shape: Shape) -> tuple[float, int] | None:
        """(F increase, free share of the GPU a slice takes) for the best placement, or None."""
        model, _, free_cpu, free_memory, frees = key
        if shape.models and model not in shape.models:
            return None
        if free_cpu < shape.cpu_milli or free_memory < shape.memory_mib:
            return None
        before = self._fragmentation(model, free_cpu, frees)
        cpu_after = free_cpu - shape.cpu_milli
        if not shape.gpus:
            return self._fragmentation(model, cpu_after, frees) - before, 0
        if not shape.is_slice:
            start = bisect_left(frees, MILLI_GPU)
            if len(frees) - start < shape.gpus:
                return None
            after = frees[:start] + (0,) * shape.gpus + frees[start + shape.gpus :]
            return self._fragmentation(model, cpu_after, tuple(sorted(after))) - before, 0
        best: tuple[float, int] | None = None
        for free in sorted(set(frees)):
            if free < shape.per_gpu_milli:
                continue
            at = frees.index(free)
            after = tuple(sorted((*frees[:at], free - shape.per_gpu_milli, *frees[at + 1 :])))
            delta = self._fragmentation(model, cpu_after, after) - before
            if best is None or delta < best[0]:
                best = (delta, free)
        return best

    def _fragmentation(self, model: str, free_cpu: int, frees: tuple[int, ...]) -> float:
        key = (model, free_cpu, frees)
        value = self.fragmentation.get(key)
        if value is None:
            value = self.fragmentation[key] = self.mix.fragmentation(model, free_cpu, frees)
        return value


_MISSING: tuple[float, int] = (float("nan"), -1)
