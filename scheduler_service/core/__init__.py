"""The scheduling core: `schedule(snapshot, now) -> Plan`, pure and deterministic.

Everything here is computation on frozen values: no I/O, no clock, no threads, no Kubernetes
or Argo types (an import contract checks it). Drivers build a `Snapshot`, call `schedule`, and
carry out the `Plan`.
"""

from scheduler_service.core._cycle import schedule
from scheduler_service.core._fairshare import ShareInput, divide, fair_shares, water_fill
from scheduler_service.core._invariants import Violation, check_plan
from scheduler_service.core._model import (
    GPU,
    MILLI_GPU,
    Allocation,
    GpuSlice,
    Kind,
    Node,
    PodAllocation,
    Policy,
    PoolQuota,
    Queue,
    Request,
    Snapshot,
    SnapshotError,
    TopologyWish,
    Workload,
    WorkloadState,
    gpus_to_milli,
)
from scheduler_service.core._plan import (
    Admission,
    BlockedByReservation,
    Eviction,
    EvictionCause,
    InsufficientCapacity,
    InvalidTarget,
    NoTopologyDomain,
    OverQuotaNotAllowed,
    Pending,
    Plan,
    QueueAtLimit,
    QueueShare,
    Reason,
    Reservation,
    WaitingForEviction,
    format_gpus,
)
from scheduler_service.core._scheduler import Scheduler, SchedulerError

__all__ = [
    "GPU",
    "MILLI_GPU",
    "Admission",
    "Allocation",
    "BlockedByReservation",
    "Eviction",
    "EvictionCause",
    "GpuSlice",
    "InsufficientCapacity",
    "InvalidTarget",
    "Kind",
    "NoTopologyDomain",
    "Node",
    "OverQuotaNotAllowed",
    "Pending",
    "Plan",
    "PodAllocation",
    "Policy",
    "PoolQuota",
    "Queue",
    "QueueAtLimit",
    "QueueShare",
    "Reason",
    "Request",
    "Reservation",
    "Scheduler",
    "SchedulerError",
    "ShareInput",
    "Snapshot",
    "SnapshotError",
    "TopologyWish",
    "Violation",
    "WaitingForEviction",
    "Workload",
    "WorkloadState",
    "check_plan",
    "divide",
    "fair_shares",
    "format_gpus",
    "gpus_to_milli",
    "schedule",
    "water_fill",
]
