"""The node agent: the GPU node's side of the scheduler (`aistack agent`, a DaemonSet).

On every GPU node it reads the GPUs with NVML and writes them on its Node object, where the
service reads them (`pod_contract.GPU_INVENTORY_ANNOTATION`, parsed by
`translate.node_from_k8s`), so that allocations name real devices by UUID; and it exports the
node's GPU metrics for Prometheus, per GPU and per pod.

    _inventory  what is written on the Node (pure: a `Machine` and the Node in, patches out)
    _metrics    the GPU metrics, read from NVML and /proc at each scrape
    _agent      the loop that discovers and patches, with retries; the pod directory
    _sharing    on a node whose slices MPS enforces, one MPS control daemon per GPU (kept by
                `scheduler_service.gpu_sharing.MpsDaemons`), with defaults from the node's slices

A driver like `kube` and `sim`: it talks to Kubernetes and NVML, and imports no other driver.
"""

from scheduler_service.agent._agent import AgentCollector, NodeAgent, PodDirectory, SyncResult
from scheduler_service.agent._inventory import (
    INVENTORY_CONDITION,
    InventoryStatus,
    condition_patch,
    inventory_annotation,
    inventory_entries,
    inventory_status,
    node_patch,
)
from scheduler_service.agent._metrics import (
    GpuCollector,
    PodRef,
    PodResolver,
    pod_uid_from_cgroup,
    pod_uid_of_process,
)
from scheduler_service.agent._sharing import MpsKeeper, mps_shares, node_slices

__all__ = [
    "INVENTORY_CONDITION",
    "AgentCollector",
    "GpuCollector",
    "InventoryStatus",
    "MpsKeeper",
    "NodeAgent",
    "PodDirectory",
    "PodRef",
    "PodResolver",
    "SyncResult",
    "condition_patch",
    "inventory_annotation",
    "inventory_entries",
    "inventory_status",
    "mps_shares",
    "node_patch",
    "node_slices",
    "pod_uid_from_cgroup",
    "pod_uid_of_process",
]
