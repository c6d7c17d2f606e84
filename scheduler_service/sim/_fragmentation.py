"""Experiment 1: GPU fragmentation with GPU slices, on the openb trace, by the published protocol.

The protocol of the FGD paper's simulator (see `../shared/data/README.md`): pods arrive and
never leave; the pod list is resampled with replacement until the summed GPU request reaches
130% of the cluster's GPU capacity, and shuffled (one run per seed, seeds 42-51); a pod that
fits nowhere is skipped and counted as failed. The figure is the share of GPU capacity (in
milli-GPUs) allocated, recorded as arrivals grow from 0 to 130% of capacity.

Policies: `aistack` (the core's own placement code), and the baselines of `_frag_baselines`.
Each run is a pure function of (nodes, pods, policy, seed): the same seed gives the same curve.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from scheduler_service.core import MILLI_GPU, Node, Queue, Snapshot, Workload
from scheduler_service.core._fragmentation import Fragmentation, ShapeMix
from scheduler_service.core._placement import place
from scheduler_service.core._state import CycleState
from scheduler_service.sim._frag_baselines import BestFitPolicy, FgdPolicy, RandomPolicy, TaskMix
from scheduler_service.sim._frag_cluster import Shape
from scheduler_service.sim._openb import OpenbPod

__all__ = [
    "ARRIVED_PERCENT",
    "POLICIES",
    "AistackPolicy",
    "Run",
    "arrivals",
    "run_policy",
    "shape_of",
]

ARRIVED_PERCENT = 130
"""Arrivals stop once the summed GPU request reaches this share of GPU capacity."""

POLICIES = ("aistack", "fgd", "bestfit", "random")


@dataclass(frozen=True, slots=True)
class Run:
    """One policy on one seed.

    `allocated[i]` is the allocated share (0-1) of GPU capacity when `i` percent of capacity
    has arrived (i = 0..130); `failed_pods` fitted nowhere.
    """

    policy: str
    seed: int
    allocated: tuple[float, ...]
    arrived_pods: int
    failed_pods: int

    @property
    def final(self) -> float:
        """The allocated share at 130% arrived."""
        return self.allocated[-1]


def shape_of(pod: OpenbPod) -> Shape:
    """The trace-unit shape of a pod (what the baselines see)."""
    request = pod.request
    if request.is_slice:
        return Shape(request.cpu_milli, request.memory_mib, 1, pod.gpu_milli, pod.models)
    return Shape(request.cpu_milli, request.memory_mib, request.gpus, MILLI_GPU, pod.models)


def gpu_capacity_milli(nodes: Sequence[Node]) -> int:
    """The cluster's GPU capacity in milli-GPUs."""
    return sum(len(node.gpus) for node in nodes) * MILLI_GPU


def arrivals(pods: Sequence[OpenbPod], capacity_milli: int, seed: int) -> list[OpenbPod]:
    """The arrival sequence of one seed: the pod list, resampled and shuffled, up to 130%.

    The list is extended by pods drawn uniformly with replacement until its summed GPU request
    reaches 130% of `capacity_milli`, then shuffled; arrivals stop once the running sum
    reaches 130% (so a list already larger than that is cut short after the shuffle).
    """
    rng = random.Random(seed)
    target = capacity_milli * ARRIVED_PERCENT // 100
    inflated = list(pods)
    total = sum(pod.gpu_milli for pod in inflated)
    if not any(pod.gpu_milli for pod in pods):
        raise ValueError("the pod list asks for no GPUs: it can never reach 130% of capacity")
    while total < target:
        pod = rng.choice(pods)
        inflated.append(pod)
        total += pod.gpu_milli
    rng.shuffle(inflated)
    sequence = []
    arrived = 0
    for pod in inflated:
        if arrived >= target:
            break
        sequence.append(pod)
        arrived += pod.gpu_milli
    return sequence


class AistackPolicy:
    """The core's own placement, driven one pod at a time on a `CycleState`.

    The experiment bypasses the cycle's queues, fair share and ordering on purpose: the FGD
    protocol measures placement alone (pods arrive one by one, each is placed at once or
    skipped, nothing leaves), so each pod goes straight to `place`, the code that phase 3 of
    every cycle runs, with a `Fragmentation` scorer for the trace's shape mix, weighted by GPU
    demand and looking two pods ahead (see `core._fragmentation`; the cycle itself scores
    slices only, one step ahead, by pod count).

    All nodes go into one pool (`POOL`). The loader gives each GPU model its own pool, as an
    administrator would for quotas; but the protocol has no quotas, and a cycle tries a
    workload's pools one after another (first fit), which is no placement policy across models:
    it costs about 8 points of allocation on openb. GPU models still bind: a pod's `gpu_spec`
    becomes `Workload.models`, which placement checks against each node's model.
    """

    POOL = "openb"
    _QUEUE = "openb"

    def __init__(self, nodes: tuple[Node, ...], scorer: Fragmentation | None = None) -> None:
        """Start on an empty cluster of `nodes`; place with `scorer` when given."""
        pooled = tuple(replace(node, pool=self.POOL) for node in nodes)
        self.state = CycleState(Snapshot(nodes=pooled, queues=(Queue(self._QUEUE),)))
        self.scorer = scorer
        self.count = 0

    def place(self, pod: OpenbPod) -> bool:
        """Place one pod, or return False when it fits nowhere."""
        self.count += 1
        workload = Workload(
            name=f"pod-{self.count}", queue=self._QUEUE, request=pod.request, models=pod.models
        )
        return place(self.state, workload, self.POOL, scorer=self.scorer) is not None


def run_policy(
    policy: str,
    nodes: tuple[Node, ...],
    pods: Sequence[OpenbPod],
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> Run:
    """Play one seed's arrivals against `policy`; `progress(done, total)` is told as it goes."""
    capacity = gpu_capacity_milli(nodes)
    sequence = arrivals(pods, capacity, seed)
    place = _placer(policy, nodes, pods, seed)
    allocated = [0.0]
    arrived = allocated_milli = failed = 0
    for done, pod in enumerate(sequence, 1):
        if place(pod):
            allocated_milli += pod.gpu_milli
        else:
            failed += 1
        arrived += pod.gpu_milli
        while len(allocated) <= min(arrived * 100 // capacity, ARRIVED_PERCENT):
            allocated.append(allocated_milli / capacity)
        if progress is not None and done % 1000 == 0:
            progress(done, len(sequence))
    while len(allocated) <= ARRIVED_PERCENT:  # a last pod can jump past several percent
        allocated.append(allocated_milli / capacity)
    return Run(policy, seed, tuple(allocated), len(sequence), failed)


def _placer(
    policy: str, nodes: tuple[Node, ...], pods: Sequence[OpenbPod], seed: int
) -> Callable[[OpenbPod], bool]:
    if policy == "aistack":
        mix = ShapeMix(((p.request, p.models, 1) for p in pods), by_demand=True)
        return AistackPolicy(nodes, Fragmentation(mix, lookahead=2)).place
    if policy == "random":
        # A stream of its own, so Random's choices do not shift the arrival order.
        chooser = RandomPolicy(nodes, random.Random(f"random-policy-{seed}"))
        return lambda pod: chooser.place(shape_of(pod))
    if policy == "bestfit":
        best = BestFitPolicy(nodes)
        return lambda pod: best.place(shape_of(pod))
    if policy == "fgd":
        fgd = FgdPolicy(nodes, TaskMix([shape_of(pod) for pod in pods]))
        return lambda pod: fgd.place(shape_of(pod))
    raise ValueError(f"unknown policy {policy!r} (choose from {', '.join(POLICIES)})")
