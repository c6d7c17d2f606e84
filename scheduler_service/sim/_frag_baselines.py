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
  m's share of the workload's tasks and F_n(m) is all of n's free GPU capacity when m does not
  fit n (CPU, model or GPUs, and always for a CPU-only type), and otherwise the free capacity of
  the GPUs whose free share is below m's per-GPU demand. The pod goes where its placement
  increases F least (its "gradient"). As the published simulator runs it, that is Kubernetes'
  integer node score `int(100 * sigmoid(-increase / 1000 milli-GPU))`, the highest score wins
  and equal scores go to the node with the smallest name; the task types are those of
  `TaskMix` (see there).

Every policy answers `place(shape) -> bool`, taking the resources when it finds room. A pod
that fits nowhere is skipped (the protocol counts it as failed).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Sequence

from scheduler_service.core import MILLI_GPU, Node
from scheduler_service.sim._frag_cluster import Choice, ClassKey, LightCluster, LightNode, Shape

__all__ = ["PUBLISHED_POPULARITY_PERCENT", "BestFitPolicy", "FgdPolicy", "RandomPolicy", "TaskMix"]


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


PUBLISHED_POPULARITY_PERCENT = 95
"""FGD's task types are the most popular ones that cover this share of the pods (the published
simulator's `podPopularityThreshold`)."""


class TaskMix:
    """The target workload's task types and their popularity, as the published simulator takes them.

    A task type is what a pod asks for in the simulator's terms: CPU, GPU count, per-GPU milli
    and acceptable models (memory is no part of it). The types are ranked by popularity (pod
    count; equal counts by larger request first), and the most popular ones that cover
    `popularity_percent` of the pods are kept and their shares renormalised, as the simulator's
    typical pods are (`podPopularityThreshold: 95`, `podIncreaseStep: 1`). CPU-only types take
    part (`isInvolvedCpuPods: true`): they use no GPU, so each counts all of a node's free GPU
    capacity as unusable, a term that moves every gradient of a GPU pod alike but shifts where
    the integer score rounds.

    GPU types are grouped by GPU demand (GPU count, per-GPU milli, models); inside a group the
    CPU demands are sorted with cumulative popularity, so "the share of this group that fits n's
    free CPU" is one bisection.
    """

    def __init__(
        self, shapes: Sequence[Shape], popularity_percent: int = PUBLISHED_POPULARITY_PERCENT
    ) -> None:
        """The task types of the workload `shapes` (one shape per pod of the pod list)."""
        counts = Counter(_task_type(shape) for shape in shapes)
        ranked = sorted(counts.items(), key=_by_popularity, reverse=True)
        kept: list[tuple[tuple[int, int, int, tuple[str, ...]], int]] = []
        covered = 0
        for task, count in ranked:
            if covered * 100 >= popularity_percent * len(shapes):
                break
            kept.append((task, count))
            covered += count
        total = covered or 1
        self.cpu_only_share = sum(count for (_, gpus, _, _), count in kept if not gpus) / total
        """The kept CPU-only types' share: it counts all of a node's free GPU capacity."""
        groups: dict[tuple[int, int, tuple[str, ...]], list[tuple[int, float]]] = {}
        for (cpu, gpus, per_gpu, models), count in kept:
            if gpus:
                groups.setdefault((gpus, per_gpu, models), []).append((cpu, count / total))
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
        result = self.cpu_only_share * total
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


def _task_type(shape: Shape) -> tuple[int, int, int, tuple[str, ...]]:
    """(CPU, GPU count, per-GPU milli, models): the simulator's task type of a pod."""
    return (shape.cpu_milli, shape.gpus, shape.per_gpu_milli if shape.gpus else 0, shape.models)


def _by_popularity(item: tuple[tuple[int, int, int, tuple[str, ...]], int]) -> tuple[object, ...]:
    """Rank of a (task type, count): count, then CPU, per-GPU milli, GPU count, models."""
    (cpu, gpus, per_gpu, models), count = item
    return (count, cpu, per_gpu, gpus, "|".join(models))


class FgdPolicy:
    """Fragmentation gradient descent (see the module docstring), scored per node class.

    Nodes in the same state score identically, so the policy scores each class of
    `LightCluster` once per pod shape and caches the result until the class changes (a
    placement moves one node to a new class). This is what makes FGD fast enough in pure
    Python: most pods are scored against cached classes.

    The score is the published simulator's, integer and all: near-equal gradients fall into
    one score step, and equal scores go to the node with the smallest name (the simulator's
    Kubernetes fork picks it instead of a random one, for reproducibility). That tie rule
    packs: on `default` an exact gradient with ties to the first node class scored 94.4%, the
    published FGD 95.4%, and on a pod list whose GPU pods are all slices 80.5% against 86.9%.
    """

    def __init__(self, nodes: tuple[Node, ...], mix: TaskMix) -> None:
        """Start on an empty cluster of `nodes`, scoring against the target workload `mix`."""
        self.cluster = LightCluster(nodes)
        self.mix = mix
        self.fragmentation: dict[tuple[str, int, tuple[int, ...]], float] = {}
        self.scores: dict[Shape, dict[int, tuple[int, tuple[int, ...]] | None]] = {}

    def place(self, shape: Shape) -> bool:
        """Place one pod, or return False when it fits nowhere."""
        best: tuple[int, int, int, tuple[int, ...]] | None = None  # score, rank, class, frees
        cache = self.scores.setdefault(shape, {})
        keys = self.cluster.keys
        rank = self.cluster.rank
        for class_id in self.cluster.classes:
            found = cache.get(class_id, _UNSCORED)
            if found is _UNSCORED:
                found = cache[class_id] = self._score(keys[class_id], shape)
            if found is None or (best is not None and found[0] < best[0]):
                continue
            leader = rank[self.cluster.member(class_id)]
            if best is None or found[0] > best[0] or leader < best[1]:
                best = (found[0], leader, class_id, found[1])
        if best is None:
            return False
        _, _, class_id, frees = best
        index = self.cluster.member(class_id)
        node = self.cluster.nodes[index]
        gpus: tuple[int, ...]
        if shape.is_slice:
            gpus = (next(i for i, free in enumerate(node.free_gpus) if free in frees),)
        else:
            gpus = tuple(node.whole_free()[: shape.gpus])
        self.cluster.take(shape, Choice(index, gpus))
        return True

    def _score(self, key: ClassKey, shape: Shape) -> tuple[int, tuple[int, ...]] | None:
        """(node score, free milli of the GPUs a slice may take to get it), or None: no fit.

        A slice is scored on each GPU it fits and the node gets the best; the simulator then
        gives it the first GPU (by index) with that score, so every free value that reaches it
        is returned.
        """
        model, _, free_cpu, free_memory, frees = key
        if shape.models and model not in shape.models:
            return None
        if free_cpu < shape.cpu_milli or free_memory < shape.memory_mib:
            return None
        before = self._fragmentation(model, free_cpu, frees)
        cpu_after = free_cpu - shape.cpu_milli
        if not shape.gpus:
            return _node_score(before, self._fragmentation(model, cpu_after, frees)), ()
        if not shape.is_slice:
            start = bisect_left(frees, MILLI_GPU)
            if len(frees) - start < shape.gpus:
                return None
            after = frees[:start] + (0,) * shape.gpus + frees[start + shape.gpus :]
            return _node_score(before, self._fragmentation(model, cpu_after, after)), ()
        best: tuple[int, tuple[int, ...]] | None = None
        for free in sorted(set(frees)):
            if free < shape.per_gpu_milli:
                continue
            at = frees.index(free)
            after = tuple(sorted((*frees[:at], free - shape.per_gpu_milli, *frees[at + 1 :])))
            score = _node_score(before, self._fragmentation(model, cpu_after, after))
            if best is None or score > best[0]:
                best = (score, (free,))
            elif score == best[0]:
                best = (score, (*best[1], free))
        return best

    def _fragmentation(self, model: str, free_cpu: int, frees: tuple[int, ...]) -> float:
        key = (model, free_cpu, frees)
        value = self.fragmentation.get(key)
        if value is None:
            value = self.fragmentation[key] = self.mix.fragmentation(model, free_cpu, frees)
        return value


MAX_NODE_SCORE = 100
"""Kubernetes' highest node score."""


def _node_score(before: float, after: float) -> int:
    """FGD's Kubernetes node score for a placement taking F from `before` to `after` (milli-GPU).

    `int(sigmoid((before - after) / 1000) * 100)`, as the published simulator computes it: 50 for
    no change, lower the more fragmentation the placement adds.
    """
    return int(1.0 / (1.0 + math.exp((after - before) / 1000.0)) * MAX_NODE_SCORE)


_UNSCORED: tuple[int, tuple[int, ...]] = (-1, ())
