"""What the simulator records: a timeline of typed events, one per thing a user would notice.

Events are plain frozen values with the numbers behind them; `_render` turns them into text.
A workload's story reads Submitted, then any number of Waiting / Admitted-or-Resumed / Evicted /
Requeued / Lost / PatchFailed / Crashed, and ends Finished (or is still present when the run stops).
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_service.core import EvictionCause, GpuSlice, Workload

__all__ = [
    "Admitted",
    "Crashed",
    "Evicted",
    "Finished",
    "Lost",
    "NodeDown",
    "NodeUp",
    "PatchFailed",
    "PodPlacement",
    "Requeued",
    "Resumed",
    "Submitted",
    "TimelineEvent",
    "Waiting",
]


@dataclass(frozen=True, slots=True)
class PodPlacement:
    """Where one pod runs, as a person reads it: a node and GPU indexes on that node."""

    node: str
    gpu_indexes: tuple[int, ...] = ()
    slice: GpuSlice | None = None


@dataclass(frozen=True, slots=True)
class Submitted:
    """`workload` arrived, as `spec` says, and needs `duration_seconds` of running time."""

    at: float
    workload: str
    spec: Workload
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class Admitted:
    """`workload` was admitted for the first time and its pods placed as `placement` says."""

    at: float
    workload: str
    queue: str
    placement: tuple[PodPlacement, ...]


@dataclass(frozen=True, slots=True)
class Resumed:
    """An evicted or interrupted `workload` was admitted again, `done_seconds` of work kept."""

    at: float
    workload: str
    queue: str
    placement: tuple[PodPlacement, ...]
    done_seconds: float
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class Evicted:
    """The plan evicted `workload`; it holds its GPUs until its pods are gone (the grace period)."""

    at: float
    workload: str
    cause: EvictionCause
    message: str


@dataclass(frozen=True, slots=True)
class Requeued:
    """An evicted workload's pods are gone: it is pending again with `kept_seconds` of work.

    `lost_seconds` is the work done since its last checkpoint, which it must redo.
    """

    at: float
    workload: str
    kept_seconds: float
    lost_seconds: float
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class Lost:
    """`node` went down under `workload`: it is pending again, `kept_seconds` of work kept."""

    at: float
    workload: str
    node: str
    kept_seconds: float
    lost_seconds: float
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class PatchFailed:
    """Carrying out `workload`'s admission failed (an injected fault): it is still pending."""

    at: float
    workload: str


@dataclass(frozen=True, slots=True)
class Crashed:
    """`workload`'s pods crashed (an injected fault): pending again, `kept_seconds` kept."""

    at: float
    workload: str
    kept_seconds: float
    lost_seconds: float
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class Waiting:
    """`workload` waits; recorded only when its reason (code or message) changes."""

    at: float
    workload: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Finished:
    """`workload` completed its work; `evictions` and `lost_seconds` count what it went through."""

    at: float
    workload: str
    queue: str
    submitted_at: float
    evictions: int
    lost_seconds: float


@dataclass(frozen=True, slots=True)
class NodeDown:
    """`node` stopped: it takes no new work and its workloads were interrupted (see Lost)."""

    at: float
    node: str


@dataclass(frozen=True, slots=True)
class NodeUp:
    """`node` is ready again."""

    at: float
    node: str


TimelineEvent = (
    Submitted
    | Admitted
    | Resumed
    | Evicted
    | Requeued
    | Lost
    | PatchFailed
    | Crashed
    | Waiting
    | Finished
    | NodeDown
    | NodeUp
)
"""Any event of the timeline; every one has `at` (virtual seconds)."""
