"""Experiment 1: GPU fragmentation with GPU slices, on the openb trace, by the published protocol.

The protocol of the FGD paper's simulator (see `../shared/data/README.md`): pods arrive and
never leave; the pod list is resampled with replacement until the summed GPU request reaches
130% of the cluster's GPU capacity, and shuffled (one run per seed, seeds 42-51); a pod that
fits nowhere is skipped and counted as failed. The figure is the share of GPU capacity (in
milli-GPUs) allocated, recorded as arrivals grow from 0 to 130% of capacity.

Policies: `aistack` (the product: every pod through `Scheduler.cycle`, see `CyclePolicy`), its
ablation `aistack-known-mix` (the same, told the trace's request mix in advance), and the
baselines of `_frag_baselines`.
Each run is a pure function of (nodes, pods, policy, seed): the same seed gives the same curve.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scheduler_service.core import MILLI_GPU, Node, PoolQuota, Queue, Scheduler, Workload
from scheduler_service.sim._frag_baselines import BestFitPolicy, FgdPolicy, RandomPolicy, TaskMix
from scheduler_service.sim._frag_cluster import Shape
from scheduler_service.sim._openb import OpenbPod

__all__ = [
    "ALL_POLICIES",
    "ARRIVED_PERCENT",
    "KNOWN_MIX",
    "POLICIES",
    "CyclePolicy",
    "Run",
    "arrivals",
    "run_policy",
    "shape_of",
]

ARRIVED_PERCENT = 130
"""Arrivals stop once the summed GPU request reaches this share of GPU capacity."""

POLICIES = ("aistack", "fgd", "bestfit", "random")
"""What the command runs by default: the product and the baselines."""

KNOWN_MIX = "aistack-known-mix"
"""The ablation: the product's cycle, told the trace's request mix before the first pod."""

ALL_POLICIES = (*POLICIES, KNOWN_MIX)


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


class CyclePolicy:
    """The product's placement: every pod goes through `Scheduler.cycle`, as in the service.

    The cluster is the loader's, one pool per GPU model as an administrator would set it up for
    quotas, and one queue owns it all (its quota in each pool is the pool's GPUs). Each
    arriving pod is submitted, one cycle runs, and the pod starts where the plan says; a pod
    the cycle does not admit is withdrawn (the protocol skips it). So placement, the choice
    among pools and the request mix the score learns from the submissions are the service's,
    with no knowledge of what comes next.

    `known_mix` is the ablation that does know: the scheduler starts having seen every pod of
    the list once, in an order of its own, so the mix it scores against is the trace's from the
    first pod on.
    """

    QUEUE = "openb"

    def __init__(self, nodes: tuple[Node, ...], known_mix: Sequence[OpenbPod] = ()) -> None:
        """Start on an empty cluster of `nodes`."""
        gpus: dict[str, int] = {}
        for node in nodes:
            gpus[node.pool] = gpus.get(node.pool, 0) + len(node.gpus)
        quotas = tuple(PoolQuota(pool=pool, quota=count) for pool, count in sorted(gpus.items()))
        self.scheduler = Scheduler(nodes, [Queue(self.QUEUE, quotas=quotas)])
        self.count = 0
        for pod in known_mix:
            self.scheduler.submit(self._workload(pod))
        for number in range(1, self.count + 1):
            self.scheduler.finished(f"pod-{number}")

    def place(self, pod: OpenbPod) -> bool:
        """Submit one pod and run a cycle; False (and the pod withdrawn) when it is not admitted."""
        workload = self._workload(pod)
        self.scheduler.submit(workload)
        now = float(self.count)
        plan = self.scheduler.cycle(now, explain=False)
        for admission in plan.admissions:
            self.scheduler.started(admission.workload, admission.allocation, now)
        if plan.admissions:
            return True
        self.scheduler.finished(workload.name)
        return False

    def _workload(self, pod: OpenbPod) -> Workload:
        self.count += 1
        return Workload(
            name=f"pod-{self.count}",
            queue=self.QUEUE,
            request=pod.request,
            models=pod.models,
            submitted_at=float(self.count),
        )


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
        return CyclePolicy(nodes).place
    if policy == KNOWN_MIX:
        known = list(pods)
        random.Random(f"known-mix-{seed}").shuffle(known)
        return CyclePolicy(nodes, known_mix=known).place
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
    raise ValueError(f"unknown policy {policy!r} (choose from {', '.join(ALL_POLICIES)})")
