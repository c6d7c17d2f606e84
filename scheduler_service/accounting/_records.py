"""What the accounting store keeps: workload records, their events, and the changes that write them.

A `WorkloadRecord` is one attempt of one workload: identified by its namespace, its name (the
gang's, or the single pod's) and when it was submitted (`RecordKey`), which the cluster says the
same way after any restart. An Argo retry is a new workload (new pods, a new gang name), so a new
record; `step` and `attempt` tie the attempts of one step together.

Changes (`Submitted`, `Admitted`, `Ended`) are facts with their own times: applying one twice,
or applying one the store already has, changes nothing. First facts win: a record's submission
details, its admission and its end are each written once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Admitted",
    "Change",
    "EndReason",
    "Ended",
    "EventKind",
    "HistoryEvent",
    "RecordKey",
    "Submitted",
    "WorkloadHistory",
    "WorkloadRecord",
]


class EndReason(enum.StrEnum):
    """How a workload's record ended."""

    FINISHED = "finished"
    """Admitted, then gone on its own: its pods succeeded, failed, or were deleted by their
    owner while they ran."""
    EVICTED = "evicted"
    """Stopped by the service (`Ended.cause`: Reclaimed, Preempted, GangMemberLost,
    GangIncomplete, DeadlineExceeded), with the message its pods were given."""
    DELETED = "deleted"
    """Gone before it was ever admitted (its pods deleted or failed while they waited)."""


class EventKind(enum.StrEnum):
    """What happened to a workload; each at most once per record."""

    SUBMITTED = "submitted"
    RETRIED = "retried"
    ADMITTED = "admitted"
    EVICTED = "evicted"
    FINISHED = "finished"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True, order=True)
class RecordKey:
    """One attempt of one workload: stable across restarts, since the cluster says it again.

    `submitted_at` is the workload's submission time as the scheduler has it (its earliest
    pod's creation, Unix seconds).
    """

    namespace: str
    workload: str
    submitted_at: float

    def __str__(self) -> str:
        return f"{self.namespace}/{self.workload}@{self.submitted_at:g}"


@dataclass(frozen=True, slots=True)
class Submitted:
    """A workload was seen for the first time (pending, or already running after a restart)."""

    key: RecordKey
    queue: str
    user: str = ""
    """Who the workload is accounted to; "" when its pods do not say (docs/usage-report.md)."""
    workflow: str = ""
    step: str = ""
    """The Argo step (node name without the attempt suffix), "" for pods Argo did not make."""
    attempt: int = 0
    """0 for a step's first attempt, n for its n-th retry."""
    kind: str = ""
    pods: int = 1
    gpus: float = 0.0
    """GPUs asked for, all pods together (a slice as its compute share until admitted)."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """The workload was given its GPUs at `at`: `gpus` of them (slices as charged) in `pool`."""

    key: RecordKey
    at: float
    gpus: float
    pool: str = ""
    gpu_model: str = ""


@dataclass(frozen=True, slots=True)
class Ended:
    """The workload let its GPUs go (or, never admitted, went away) at `at`."""

    key: RecordKey
    at: float
    reason: EndReason
    cause: str = ""
    """For an eviction, the service's cause (the pods' status reason); else ""."""
    message: str = ""


Change = Submitted | Admitted | Ended
"""One fact for the store; see the module docstring."""


@dataclass(frozen=True, slots=True)
class WorkloadRecord:
    """One attempt of one workload, as the store holds it."""

    namespace: str
    workload: str
    submitted_at: float
    queue: str
    user: str = ""
    workflow: str = ""
    step: str = ""
    attempt: int = 0
    kind: str = ""
    pods: int = 1
    gpus: float = 0.0
    """GPUs held while admitted (slices as the fraction they are charged); before admission,
    what was asked for."""
    pool: str = ""
    gpu_model: str = ""
    admitted_at: float | None = None
    ended_at: float | None = None
    end_reason: EndReason | None = None
    end_cause: str = ""
    end_message: str = ""
    used_gpu_seconds: float | None = None
    """GPU time measured as used (busy), when something measured it; None otherwise."""

    @property
    def key(self) -> RecordKey:
        """The record's identity."""
        return RecordKey(self.namespace, self.workload, self.submitted_at)

    def allocated_gpu_seconds(self, since: float, until: float) -> float:
        """GPU-seconds held inside [since, until): `gpus` times the clipped admitted interval.

        A record not ended yet counts up to `until`.
        """
        if self.admitted_at is None:
            return 0.0
        end = until if self.ended_at is None else min(self.ended_at, until)
        return self.gpus * max(0.0, end - max(self.admitted_at, since))


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One thing that happened to one attempt of a workload."""

    at: float
    kind: EventKind
    workload: str
    """The attempt's workload name (attempts of an Argo step have different names)."""
    attempt: int = 0
    message: str = ""
    cause: str = ""
    """For `EVICTED`: Reclaimed, Preempted, GangMemberLost, GangIncomplete, DeadlineExceeded."""


@dataclass(frozen=True, slots=True)
class WorkloadHistory:
    """What the store knows of a workload: every attempt of its step, and what happened."""

    namespace: str
    workload: str
    records: tuple[WorkloadRecord, ...] = ()
    """The workload's records and those of the other attempts of its Argo step, oldest first."""
    events: tuple[HistoryEvent, ...] = ()
    """Their events, by time (then in the order they happen to one workload)."""
    truncated: bool = False
    """More records or events exist than a history shows (`MAX_HISTORY_*`)."""
