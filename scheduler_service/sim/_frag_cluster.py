"""The fragmentation experiment's own light cluster state, for the baseline policies.

The baselines (Random, BestFit, FGD) are not the core's code, so they do not get the core's
indexes: they see every node's free CPU, memory and per-GPU free milli-GPUs, and take a pod with
`take`. Pods arrive and never leave (the protocol), so there is no give.

A `Choice` says where one pod goes: a node, and the GPUs (indexes) it takes; a slice takes
`Pod.gpu_milli` of one GPU, a whole-GPU pod all of each listed GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_service.core import MILLI_GPU, Node

__all__ = ["Choice", "ClassKey", "LightCluster", "LightNode", "Shape"]


@dataclass(frozen=True, slots=True)
class Shape:
    """What one pod asks for, in the trace's units.

    `gpus` GPUs of `per_gpu_milli` each (whole GPUs: 1000; a slice: `gpus` is 1 and
    `per_gpu_milli` < 1000; CPU-only: both 0). `models` lists acceptable GPU models (empty: any).
    """

    cpu_milli: int
    memory_mib: int
    gpus: int
    per_gpu_milli: int
    models: tuple[str, ...] = ()

    @property
    def is_slice(self) -> bool:
        """True when the pod shares one GPU."""
        return self.gpus == 1 and self.per_gpu_milli < MILLI_GPU


@dataclass(frozen=True, slots=True)
class Choice:
    """Where a pod goes: node index and the GPU indexes it takes on that node."""

    node: int
    gpus: tuple[int, ...] = ()


class LightNode:
    """One node's free resources; `free_gpus[i]` is GPU i's free milli-GPUs."""

    __slots__ = ("cpu_milli", "free_cpu_milli", "free_gpus", "free_memory_mib", "model", "name")

    def __init__(self, node: Node) -> None:
        self.name = node.name
        self.model = node.gpu_model
        self.cpu_milli = node.cpu_milli
        self.free_cpu_milli = node.cpu_milli
        self.free_memory_mib = node.memory_mib
        self.free_gpus = [MILLI_GPU] * len(node.gpus)

    def fits(self, shape: Shape) -> bool:
        """Whether `shape` fits the node now (model, CPU, memory, GPUs)."""
        if shape.models and self.model not in shape.models:
            return False
        if self.free_cpu_milli < shape.cpu_milli or self.free_memory_mib < shape.memory_mib:
            return False
        if not shape.gpus:
            return True
        if shape.is_slice:
            return max(self.free_gpus, default=0) >= shape.per_gpu_milli
        return self.free_gpus.count(MILLI_GPU) >= shape.gpus

    def gpu_options(self, shape: Shape) -> list[int]:
        """GPU indexes a slice of `shape` could take (its per-GPU share fits)."""
        return [i for i, free in enumerate(self.free_gpus) if free >= shape.per_gpu_milli]

    def whole_free(self) -> list[int]:
        """Indexes of the node's untouched GPUs."""
        return [i for i, free in enumerate(self.free_gpus) if free == MILLI_GPU]


ClassKey = tuple[str, int, int, int, tuple[int, ...]]
"""(model, CPU capacity, free CPU, free memory, sorted GPU free milli): nodes with equal keys
are interchangeable for every policy here."""


class LightCluster:
    """All nodes, in the node list's order, grouped into classes of interchangeable nodes.

    Policies score a class once per pod shape (and may cache it until the class changes)
    instead of scoring every node: on a cluster of a few hundred node types in a few states,
    that is what makes the baselines fast in pure Python. `classes` iterates in first-seen
    order; inside a class a policy uses the node with the smallest name (`member`), which is
    how the published simulator breaks ties between equal nodes, so runs are deterministic.
    """

    def __init__(self, nodes: tuple[Node, ...]) -> None:
        """An empty cluster of `nodes`."""
        self.nodes = [LightNode(node) for node in nodes]
        self.class_of: list[int] = []
        """Each node's class id; ids are small ints so per-shape caches are cheap to probe."""
        self.classes: dict[int, set[int]] = {}
        """Class id -> its nodes, in first-seen order."""
        self.keys: list[ClassKey] = []
        """Class id -> its key."""
        self._ids: dict[ClassKey, int] = {}
        by_name = sorted(range(len(nodes)), key=lambda index: nodes[index].name)
        self.rank = [0] * len(nodes)
        """Each node's position in name order: the tie-break between equal nodes."""
        for position, index in enumerate(by_name):
            self.rank[index] = position
        self._leaders: dict[int, int] = {}
        for index, node in enumerate(self.nodes):
            self.class_of.append(self._join(index, _key(node)))

    def member(self, class_id: int) -> int:
        """The node of a class a policy uses: the one with the smallest name."""
        return self._leaders[class_id]

    def representative(self, class_id: int) -> LightNode:
        """A node of the class (all of them are alike)."""
        return self.nodes[next(iter(self.classes[class_id]))]

    def _join(self, index: int, key: ClassKey) -> int:
        class_id = self._ids.get(key)
        if class_id is None:
            class_id = self._ids[key] = len(self.keys)
            self.keys.append(key)
        members = self.classes.setdefault(class_id, set())
        members.add(index)
        leader = self._leaders.get(class_id)
        if leader is None or self.rank[index] < self.rank[leader]:
            self._leaders[class_id] = index
        return class_id

    def take(self, shape: Shape, choice: Choice) -> None:
        """Give the pod its resources; the choice must fit (a policy bug otherwise)."""
        node = self.nodes[choice.node]
        node.free_cpu_milli -= shape.cpu_milli
        node.free_memory_mib -= shape.memory_mib
        for index in choice.gpus:
            node.free_gpus[index] -= shape.per_gpu_milli
            assert node.free_gpus[index] >= 0, f"{node.name} GPU {index} over-committed"
        assert node.free_cpu_milli >= 0, f"{node.name}: CPU over-committed"
        assert node.free_memory_mib >= 0, f"{node.name}: memory over-committed"
        old = self.class_of[choice.node]
        members = self.classes[old]
        members.discard(choice.node)
        if not members:
            del self.classes[old]
            del self._leaders[old]
        elif self._leaders[old] == choice.node:
            self._leaders[old] = min(members, key=self.rank.__getitem__)
        self.class_of[choice.node] = self._join(choice.node, _key(node))


def _key(node: LightNode) -> ClassKey:
    frees = tuple(sorted(node.free_gpus))
    return (node.model, node.cpu_milli, node.free_cpu_milli, node.free_memory_mib, frees)
