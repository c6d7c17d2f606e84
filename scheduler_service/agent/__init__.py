"""The node agent: the GPU node's side of the scheduler (`aistack agent`, a DaemonSet).

On every GPU node it reads the GPUs with NVML and writes them on its Node object, where the
service reads them (`pod_contract.GPU_INVENTORY_ANNOTATION`, parsed by
`translate.node_from_k8s`), so that allocations name real devices by UUID; and it exports the
node's GPU metrics for Prometheus, per GPU and per pod.

    _inventory  what is written on the Node (pure: a `Machine` and the Node in, patches out)
    _metrics    the GPU metrics, read from NVML and /proc at each scrape
    _agent      the loop that discovers and patches, with retries; the pod directory
    _mps        one NVIDIA MPS control daemon per GPU that hosts slices (not yet called by the
                loop: see docs/gpu-sharing.md), and the HAMi-core environment

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
from scheduler_service.agent._mps import (
    MpsDaemon,
    MpsDaemons,
    MpsError,
    Share,
    daemon_defaults,
    hami_core_environment,
)

__all__ = [
    "INVENTORY_CONDITION",
    "AgentCollector",
    "GpuCollector",
    "InventoryStatus",
    "MpsDaemon",
    "MpsDaemons",
    "MpsError",
    "NodeAgent",
    "PodDirectory",
    "PodRef",
    "PodResolver",
    "Share",
    "SyncResult",
    "condition_patch",
    "daemon_defaults",
    "hami_core_environment",
    "inventory_annotation",
    "inventory_entries",
    "inventory_status",
    "node_patch",
    "pod_uid_from_cgroup",
    "pod_uid_of_process",
]
