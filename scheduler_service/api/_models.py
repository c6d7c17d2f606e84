"""The API's response bodies: pydantic models with a description on every field.

Units go last in names (`quota_gpus`, `memory_mib`). GPU amounts are GPUs (fractions for
slices and fair shares: the core's milli-GPUs divided by 1000); times are Unix seconds.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from scheduler_service.core import Kind, WorkloadState

__all__ = [
    "Explanation",
    "GpuSliceView",
    "GpuUse",
    "GpuView",
    "NodeView",
    "PodPlacement",
    "QueuePoolView",
    "QueueView",
    "ReasonView",
    "RequestView",
    "WorkloadCounts",
    "WorkloadView",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class QueuePoolView(_Model):
    """A queue's entitlement and standing in one pool, after the last cycle."""

    pool: str = Field(description="The pool (a set of nodes, usually one GPU model).")
    quota_gpus: float = Field(description="Guaranteed GPUs in the pool.")
    limit_gpus: float | None = Field(
        description="Most GPUs the queue may hold in the pool; null: no limit."
    )
    over_quota_weight: float = Field(
        description="The queue's weight when idle GPUs beyond quotas are shared out."
    )
    fair_share_gpus: float = Field(
        description="GPUs the queue is entitled to now: its quota up to its demand, plus its "
        "weighted part of what other queues leave idle."
    )
    allocated_gpus: float = Field(description="GPUs the queue's running work holds.")
    demand_gpus: float = Field(description="GPUs the queue's running and pending work asks for.")


class WorkloadCounts(_Model):
    """Workloads by state."""

    pending: int = Field(description="Workloads waiting for GPUs.")
    running: int = Field(description="Workloads placed and running.")
    evicting: int = Field(description="Workloads being evicted; they hold GPUs until gone.")


class QueueView(_Model):
    """A node of the queue tree, with its pools and its workloads."""

    name: str = Field(description="The queue's name (the Queue object's name).")
    parent: str | None = Field(description="The parent queue; null for a root.")
    children: list[str] = Field(description="Child queues, sorted by name.")
    priority: int = Field(description="Queue priority: higher tiers get idle GPUs first.")
    reclaim_min_runtime_seconds: float | None = Field(
        description="Work younger than this is not reclaimed by other queues; null: the "
        "cluster default."
    )
    preempt_min_runtime_seconds: float | None = Field(
        description="Work younger than this is not preempted inside the queue; null: the "
        "cluster default."
    )
    pools: list[QueuePoolView] = Field(
        description="Every pool where the queue has a quota, a share, GPUs or demand."
    )
    workloads: WorkloadCounts = Field(
        description="Workloads of this queue and of the queues below it."
    )


class RequestView(_Model):
    """What each pod of a workload asks for: whole GPUs, or a slice of one GPU."""

    gpus: int = Field(description="Whole GPUs per pod (0 for a slice).")
    gpu_memory_mib: int = Field(description="A slice's GPU memory per pod, MiB (0: whole GPUs).")
    gpu_compute_percent: int = Field(
        description="A slice's share of one GPU's compute per pod, percent (0: whole GPUs)."
    )
    cpu_milli: int = Field(description="CPU per pod, millicores.")
    memory_mib: int = Field(description="Memory per pod, MiB.")


class GpuSliceView(_Model):
    """The share of one GPU a slice pod was given."""

    memory_mib: int = Field(description="GPU memory of the slice, MiB.")
    compute_percent: int = Field(description="Compute of the slice, percent of the GPU.")


class PodPlacement(_Model):
    """Where one pod of a placed workload runs."""

    pod: str = Field(description="The pod's name (empty if the driver did not report it).")
    node: str = Field(description="The node the pod is bound to.")
    gpus: list[str] = Field(description="UUIDs of the pod's GPUs.")
    gpu_indexes: list[int] = Field(description="Indexes of the same GPUs on the node.")
    slice: GpuSliceView | None = Field(description="For a slice pod, its share; else null.")


class ReasonView(_Model):
    """Why a workload waits, in words and in numbers."""

    code: str = Field(description="Stable reason code, e.g. QueueAtLimit, InsufficientCapacity.")
    type: str = Field(description="The core's reason type.")
    message: str = Field(description="The reason in words, with numbers (what the Argo UI shows).")
    details: dict[str, str | int | float | list[str]] = Field(
        description="The numbers behind the message; GPU amounts in GPUs (keys ending _gpus)."
    )


class WorkloadView(_Model):
    """A step (one pod) or a gang (all pods of a distributed step), admitted as a unit."""

    name: str = Field(description="The scheduler's name for the workload.")
    namespace: str = Field(description="The namespace of its pods (empty if not reported).")
    pods: list[str] = Field(description="Its pods, in gang order.")
    pod_count: int = Field(description="How many pods the workload has (gang size).")
    queue: str = Field(description="The leaf queue it was submitted to.")
    kind: Kind = Field(description="build, train or infer.")
    preemptible: bool = Field(description="Whether reclaim or preemption may evict it.")
    state: WorkloadState = Field(description="pending, running or evicting.")
    request: RequestView = Field(description="What each pod asks for.")
    priority: int = Field(description="Priority inside its queue; higher goes first.")
    submitted_at: float = Field(description="When it was submitted, Unix seconds.")
    started_at: float | None = Field(
        description="When it was placed, Unix seconds; null while pending."
    )
    allocation: list[PodPlacement] | None = Field(
        description="Where each pod runs, in pod order; null while pending."
    )
    reason: ReasonView | None = Field(description="Why it waits; null unless pending.")
    workflow: str | None = Field(
        description="The Argo Workflow whose step it is; null for pods Argo did not make."
    )


class GpuUse(_Model):
    """One pod's use of a GPU."""

    workload: str = Field(description="The workload the pod belongs to.")
    namespace: str = Field(description="The pod's namespace.")
    pod: str = Field(description="The pod's name (empty if the driver did not report it).")
    state: WorkloadState = Field(description="running, or evicting (GPU still held).")
    memory_mib: int = Field(description="GPU memory the pod holds on this GPU, MiB.")
    compute_percent: int = Field(description="Compute the pod holds on this GPU, percent.")


class GpuView(_Model):
    """One GPU of a node and what is on it."""

    index: int = Field(description="The GPU's index on its node.")
    uuid: str = Field(description="The GPU's UUID.")
    model: str = Field(description="The GPU model, e.g. H100.")
    memory_mib: int = Field(description="The GPU's memory, MiB.")
    numa_node: int = Field(description="NUMA node / NVLink island of the GPU.")
    whole: GpuUse | None = Field(description="The pod holding the whole GPU, if any.")
    slices: list[GpuUse] = Field(description="Slice pods sharing the GPU.")
    free_memory_mib: int = Field(description="GPU memory not held by any pod, MiB.")
    free_compute_percent: int = Field(description="Compute not held by any pod, percent.")


class NodeView(_Model):
    """A machine: its pool, readiness and GPUs."""

    name: str = Field(description="The node's name.")
    pool: str = Field(description="The pool the node belongs to.")
    ready: bool = Field(description="Whether the node takes new work.")
    gpu_model: str = Field(description="The model of its GPUs; empty for a node without GPUs.")
    topology: dict[str, str] = Field(
        description="The node's topology path, widest level first (e.g. block, rack)."
    )
    gpus: list[GpuView] = Field(description="Its GPUs, by index.")
    free_gpus: int = Field(description="GPUs with nothing on them.")


class Explanation(_Model):
    """Why a pod's workload is where it is: pending (and why), running or evicting."""

    pod: str = Field(description="The pod asked about.")
    namespace: str = Field(description="Its namespace.")
    workload: WorkloadView = Field(description="The workload the pod belongs to.")
    summary: str = Field(description="The answer in one sentence.")
    queue_pools: list[QueuePoolView] = Field(
        description="The workload's queue in the pools that matter to it: quota, fair share, "
        "allocated, demand."
    )
    queue_position: int | None = Field(
        description="For a pending workload, its place in its queue's pending order (1: next); "
        "null otherwise."
    )
    queue_pending: int = Field(description="Pending workloads in the same queue.")
