"""The queues' standing at the end of a run: quota, fair share, what they hold, what they used."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from scheduler_service.core import (
    Allocation,
    QueueShare,
    Snapshot,
    WorkloadState,
    gpus_to_milli,
    schedule,
)

__all__ = ["QueueSummary", "held_gpus", "summarize"]


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """One queue in one pool. GPU amounts in milli-GPUs; `gpu_seconds` is GPU time held."""

    queue: str
    pool: str
    quota_milli: int
    limit_milli: int | None
    fair_share_milli: int
    allocated_milli: int
    gpu_seconds: float


def held_gpus(allocation: Allocation) -> float:
    """The GPUs an allocation holds: whole GPUs count 1, a slice its compute share."""
    return sum(
        pod.slice.compute_percent / 100 if pod.slice is not None else float(len(pod.gpus))
        for pod in allocation
    )


def summarize(
    snapshot: Snapshot, now: float, gpu_seconds: Mapping[tuple[str, str], float]
) -> tuple[QueueSummary, ...]:
    """Each queue's standing in each pool it has a quota in, holds or used GPUs in.

    The fair share is the core's, for the demand of everything still present. What a queue
    holds is asked of the core with the pending workloads left out, because a cycle's shares
    count the admissions of that cycle, and this summary admits nothing.
    """
    fair = _by_key(schedule(snapshot, now).shares)
    placed = tuple(w for w in snapshot.workloads if w.state is not WorkloadState.PENDING)
    held = _by_key(schedule(replace(snapshot, workloads=placed), now).shares)
    queues = snapshot.queue_map()
    rows = []
    for queue, pool in sorted({*fair, *held, *gpu_seconds}):
        entry = queues[queue].quota_in(pool)
        share = fair.get((queue, pool))
        holding = held.get((queue, pool))
        rows.append(
            QueueSummary(
                queue=queue,
                pool=pool,
                quota_milli=gpus_to_milli(entry.quota),
                limit_milli=None if entry.limit is None else gpus_to_milli(entry.limit),
                fair_share_milli=share.fair_share_milli if share else 0,
                allocated_milli=holding.allocated_milli if holding else 0,
                gpu_seconds=gpu_seconds.get((queue, pool), 0.0),
            )
        )
    return tuple(rows)


def _by_key(shares: tuple[QueueShare, ...]) -> dict[tuple[str, str], QueueShare]:
    return {(share.queue, share.pool): share for share in shares}
