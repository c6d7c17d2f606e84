"""Nodes and GPUs: every GPU with what holds it, whole or as slices drawn as parts of the GPU.

Each GPU is two bars, its memory and its compute, split among the pods that hold them (a whole
GPU is one pod holding all of both). Pods of namespaces the viewer may not list pods in are
drawn as what they hold, without a name. The service knows what it gave each slice, not what a
slice's processes use: the node agent measures that (`aistack_gpu_pod_memory_used_bytes`) for
Prometheus, which the service does not read, so the page says so and shows the allocation.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_service.api import ClusterView, GpuUse, GpuView
from scheduler_service.core import WorkloadState
from scheduler_service.dashboard._access import Scope
from scheduler_service.dashboard._format import memory
from scheduler_service.dashboard._paging import Pager
from scheduler_service.dashboard._svg import Segment
from scheduler_service.dashboard._workloads import short_name

__all__ = ["GpuCell", "Holder", "NodeCard", "NodesPage", "build_nodes"]

_SLICE_COLOURS = 6
"""Slices of one GPU take turns through this many classes (`seg-s0`..), so neighbours differ."""


@dataclass(frozen=True, slots=True)
class Holder:
    """A pod's hold on one GPU; `visible` False: a pod of a namespace the viewer may not see."""

    visible: bool
    namespace: str
    pod: str
    workload: str
    """The workload's name inside its namespace (its page's URL), "" when not visible."""
    state: str
    whole: bool
    memory_mib: int
    compute_percent: int
    colour: str
    """The CSS class suffix of its parts of the bars."""

    @property
    def label(self) -> str:
        """`namespace/pod`, or what a viewer who may not see it is told."""
        return f"{self.namespace}/{self.pod}" if self.visible else "a pod of another namespace"


@dataclass(frozen=True, slots=True)
class GpuCell:
    """One GPU: who holds it, what is free, and its memory and compute as bar segments."""

    index: int
    uuid: str
    model: str
    memory_mib: int
    holders: tuple[Holder, ...]
    free_memory_mib: int
    free_compute_percent: int
    memory_segments: tuple[Segment, ...]
    compute_segments: tuple[Segment, ...]

    @property
    def state(self) -> str:
        """`free`, `whole` (one pod holds it) or `shared` (slices)."""
        if not self.holders:
            return "free"
        return "whole" if any(h.whole for h in self.holders) else "shared"


@dataclass(frozen=True, slots=True)
class NodeCard:
    """A node: its pool, readiness, topology path and GPUs."""

    name: str
    pool: str
    model: str
    ready: bool
    topology: str
    free_gpus: int
    gpus: tuple[GpuCell, ...]


@dataclass(frozen=True, slots=True)
class NodesPage:
    """One page of nodes, filtered by pool and by a part of the name."""

    nodes: tuple[NodeCard, ...]
    pager: Pager
    pools: tuple[str, ...]
    pool: str | None
    query: str


def _holder(use: GpuUse, whole: bool, turn: int, scope: Scope) -> Holder:
    visible = scope.sees_namespace(use.namespace)
    if use.state is WorkloadState.EVICTING:
        colour = "evicting"
    elif not visible:
        colour = "hidden"
    else:
        colour = "whole" if whole else f"s{turn % _SLICE_COLOURS}"
    return Holder(
        visible=visible,
        namespace=use.namespace if visible else "",
        pod=use.pod if visible else "",
        workload=short_name(use.workload, use.namespace) if visible else "",
        state=use.state.value,
        whole=whole,
        memory_mib=use.memory_mib,
        compute_percent=use.compute_percent,
        colour=colour,
    )


def _gpu_cell(gpu: GpuView, scope: Scope) -> GpuCell:
    holders = ([_holder(gpu.whole, True, 0, scope)] if gpu.whole else []) + [
        _holder(use, False, i, scope) for i, use in enumerate(gpu.slices)
    ]
    memory_segments = tuple(
        Segment(h.memory_mib, h.colour, f"{h.label}: {memory(h.memory_mib)}") for h in holders
    )
    compute_segments = tuple(
        Segment(h.compute_percent, h.colour, f"{h.label}: {h.compute_percent} % compute")
        for h in holders
    )
    return GpuCell(
        index=gpu.index,
        uuid=gpu.uuid,
        model=gpu.model,
        memory_mib=gpu.memory_mib,
        holders=tuple(holders),
        free_memory_mib=gpu.free_memory_mib,
        free_compute_percent=gpu.free_compute_percent,
        memory_segments=memory_segments,
        compute_segments=compute_segments,
    )


def build_nodes(
    view: ClusterView,
    scope: Scope,
    *,
    pool: str | None = None,
    query: str = "",
    page: int = 1,
    size: int = 25,
) -> NodesPage:
    """Page `page` of the nodes (`size` per page) in `pool` whose name contains `query`.

    Needs the right to list nodes, as `GET /api/v1/nodes` does.
    """
    scope.require_nodes()
    names = [
        name
        for name in sorted(view.nodes)
        if (pool is None or view.nodes[name].pool == pool) and query in name
    ]
    pager = Pager.of(page, size, len(names))
    cards = [
        NodeCard(
            name=node.name,
            pool=node.pool,
            model=node.gpu_model,
            ready=node.ready,
            topology=" / ".join(f"{level} {value}" for level, value in node.topology.items()),
            free_gpus=node.free_gpus,
            gpus=tuple(_gpu_cell(gpu, scope) for gpu in node.gpus),
        )
        for node in view.node_views(names[pager.start : pager.stop])
    ]
    return NodesPage(
        nodes=tuple(cards),
        pager=pager,
        pools=tuple(sorted({n.pool for n in view.nodes.values()})),
        pool=pool,
        query=query,
    )
