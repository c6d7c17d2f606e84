"""What one cycle decides: a `Plan`, and the typed reason every pending workload waits for.

Reasons are data, not strings: each carries the numbers behind it, a stable `code` for
machines (the API, metrics, the pod condition's reason) and a `message` for people (the Argo
UI's node message, the CLI). "Waiting" is an expected outcome of a cycle, never an error.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from scheduler_service.core._model import MILLI_GPU, Allocation, Workload

__all__ = [
    "Admission",
    "BlockedByReservation",
    "Eviction",
    "EvictionCause",
    "InsufficientCapacity",
    "InvalidTarget",
    "NoTopologyDomain",
    "OverQuotaNotAllowed",
    "Pending",
    "Plan",
    "QueueAtLimit",
    "QueueShare",
    "Reason",
    "Reservation",
    "WaitingForEviction",
    "format_gpus",
    "ordinal",
    "queue_place",
    "waiting_summary",
]


def format_gpus(milli: int) -> str:
    """Milli-GPUs as a person reads them: `4`, `2.5`, `0.25`."""
    whole, rest = divmod(milli, MILLI_GPU)
    if not rest:
        return str(whole)
    return f"{milli / MILLI_GPU:.3f}".rstrip("0")


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a workload waits. Subclasses add the numbers; `message` renders them."""

    code: ClassVar[str] = "Pending"

    @property
    def message(self) -> str:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class InvalidTarget(Reason):
    """The workload names something that does not exist or can never fit; the user must act."""

    code: ClassVar[str] = "InvalidRequest"
    detail: str

    @property
    def message(self) -> str:
        return self.detail


@dataclass(frozen=True, slots=True)
class QueueAtLimit(Reason):
    """Admitting the workload would take its queue (or an ancestor) past its limit."""

    code: ClassVar[str] = "QueueAtLimit"
    queue: str
    pool: str
    allocated_milli: int
    requested_milli: int
    limit_milli: int

    @property
    def message(self) -> str:
        return (
            f"queue {self.queue} at limit {format_gpus(self.allocated_milli)}/"
            f"{format_gpus(self.limit_milli)} GPUs in pool {self.pool}; "
            f"this step needs {format_gpus(self.requested_milli)} more"
        )


@dataclass(frozen=True, slots=True)
class OverQuotaNotAllowed(Reason):
    """Non-preemptible work may only use guaranteed quota, and the quota is used up."""

    code: ClassVar[str] = "OverQuotaNotAllowed"
    queue: str
    pool: str
    kind: str
    allocated_milli: int
    requested_milli: int
    quota_milli: int

    @property
    def message(self) -> str:
        return (
            f"{self.kind} steps are not preemptible and run only within quota: queue "
            f"{self.queue} uses {format_gpus(self.allocated_milli)}/"
            f"{format_gpus(self.quota_milli)} guaranteed GPUs in pool {self.pool}, this step "
            f"needs {format_gpus(self.requested_milli)}"
        )


@dataclass(frozen=True, slots=True)
class InsufficientCapacity(Reason):
    """No placement exists now, and none could be made by reclaim or preemption."""

    code: ClassVar[str] = "InsufficientCapacity"
    pool: str
    pods: int
    per_pod: str
    free_milli: int
    largest_free_node: str
    fair_share_note: str = ""

    @property
    def message(self) -> str:
        text = (
            f"needs {self.pods} x {self.per_pod} in pool {self.pool}: "
            f"{format_gpus(self.free_milli)} GPUs free, best node has {self.largest_free_node}"
        )
        return f"{text}; {self.fair_share_note}" if self.fair_share_note else text


@dataclass(frozen=True, slots=True)
class NoTopologyDomain(Reason):
    """The gang requires one domain of a level and no domain has room for all of it."""

    code: ClassVar[str] = "NoTopologyDomain"
    pool: str
    level: str
    pods: int
    per_pod: str
    best_domain: str
    best_domain_pods: int

    @property
    def message(self) -> str:
        best = (
            f"best {self.best_domain} fits {self.best_domain_pods}"
            if self.best_domain
            else "no node has that level"
        )
        return (
            f"no {self.level} in pool {self.pool} has room for {self.pods} x {self.per_pod}; {best}"
        )


@dataclass(frozen=True, slots=True)
class WaitingForEviction(Reason):
    """Room is being made: the named workloads are being evicted for this one."""

    code: ClassVar[str] = "WaitingForEviction"
    pool: str
    victims: tuple[str, ...]
    freed_milli: int

    @property
    def message(self) -> str:
        # At most three names: the message is one line of the Argo UI.
        names = ", ".join(self.victims[:3])
        if len(self.victims) > 3:
            names += f" and {len(self.victims) - 3} more"
        return (
            f"waiting for {format_gpus(self.freed_milli)} GPUs in pool {self.pool} to be "
            f"released by {len(self.victims)} evicted workload(s): {names}"
        )


@dataclass(frozen=True, slots=True)
class BlockedByReservation(Reason):
    """What would fit is held for a larger gang at the head of its queue (anti-starvation)."""

    code: ClassVar[str] = "BlockedByReservation"
    pool: str
    holder: str
    reserved_nodes: int
    reserved_free_milli: int
    holder_needs_milli: int

    @property
    def message(self) -> str:
        return (
            f"the free GPUs in pool {self.pool} that fit this step are on "
            f"{self.reserved_nodes} node(s) reserved for gang {self.holder} "
            f"({format_gpus(self.reserved_free_milli)} of the "
            f"{format_gpus(self.holder_needs_milli)} GPUs it needs are free there), which is "
            f"at the head of its queue"
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    """Nodes held for a head-of-line gang: smaller work may not take them."""

    workload: str
    pool: str
    nodes: tuple[str, ...]
    free_milli: int
    needed_milli: int


class EvictionCause(enum.StrEnum):
    """Why a workload is evicted: another queue takes back its share, or a higher priority."""

    RECLAIM = "Reclaimed"
    PREEMPT = "Preempted"


@dataclass(frozen=True, slots=True)
class Admission:
    """Admit `workload` and place its pods as `allocation` says."""

    workload: str
    allocation: Allocation


@dataclass(frozen=True, slots=True)
class Eviction:
    """Evict `workload` (all its pods) so that `beneficiary` can run; it returns to pending."""

    workload: str
    cause: EvictionCause
    beneficiary: str
    message: str


@dataclass(frozen=True, slots=True)
class Pending:
    """`workload` keeps waiting, for `reason`."""

    workload: str
    reason: Reason


@dataclass(frozen=True, slots=True)
class QueueShare:
    """A queue's standing in one pool after the cycle (GPUs, as milli-GPUs)."""

    queue: str
    pool: str
    quota_milli: int
    limit_milli: int | None
    fair_share_milli: int
    allocated_milli: int
    demand_milli: int


@dataclass(frozen=True, slots=True)
class Plan:
    """The outcome of one cycle. Every pending workload appears exactly once in `pending`."""

    admissions: tuple[Admission, ...] = ()
    evictions: tuple[Eviction, ...] = ()
    pending: tuple[Pending, ...] = ()
    reservations: tuple[Reservation, ...] = ()
    shares: tuple[QueueShare, ...] = ()

    def reason_for(self, workload: str) -> Reason | None:
        """The reason `workload` waits, or None if it is not pending in this plan."""
        for entry in self.pending:
            if entry.workload == workload:
                return entry.reason
        return None


# -- a waiting workload in one line ---------------------------------------------------------


_SUFFIXES = {1: "st", 2: "nd", 3: "rd"}


def ordinal(number: int) -> str:
    """`1st`, `2nd`, `3rd`, `4th`, `11th`, `12th`, `21st`, `112th`."""
    suffix = "th" if 10 <= number % 100 <= 20 else _SUFFIXES.get(number % 10, "th")
    return f"{number}{suffix}"


def queue_place(position: int, waiting: int) -> str:
    """`2nd of 5 waiting`: a place in a queue's pending order (`pending_order`; 1 is next)."""
    return f"{ordinal(position)} of {waiting} waiting"


def waiting_summary(
    workload: Workload, place: str, shares: Mapping[str, QueueShare], reason: Reason
) -> str:
    """Why `workload` waits, in one line: queue and `place`, standing in a pool, `reason`.

    `queue team-a, 2nd of 5 waiting; pool h100: quota 8, used 8 (0 borrowed) GPUs; <reason>`.
    The pool that matters is the one the reason is about (which its words then leave out), else
    the first the workload may use; `shares` are the queue's, by pool (a pool it has no share in
    reads as quota 0, used 0).
    The pod's condition (which the Argo UI shows) and the API's explain both say it this way.
    """
    pool = getattr(reason, "pool", None) or (workload.pools[0] if workload.pools else None)
    parts = [f"queue {workload.queue}, {place}"]
    if isinstance(pool, str):
        share = shares.get(pool)
        quota = share.quota_milli if share is not None else 0
        used = share.allocated_milli if share is not None else 0
        parts.append(
            f"pool {pool}: quota {format_gpus(quota)}, used {format_gpus(used)} "
            f"({format_gpus(max(0, used - quota))} borrowed) GPUs"
        )
        # Said once, up front: the reason need not repeat it (the line stays short).
        parts.append(reason.message.replace(f" in pool {pool}", ""))
    else:
        parts.append(reason.message)
    return "; ".join(parts)
