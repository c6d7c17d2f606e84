"""The figures of Experiment 2, computed from one policy's replay.

Definitions (times in seconds, GPU amounts in GPU-hours):

- JCT: finish - submission; queueing delay: first start - submission (later waits after an
  eviction show in JCT, not here). Jobs that never started / finished are counted, not averaged.
- utilisation: GPU time held / GPU time available, both over the submission window (first to
  last submission; see `GpuTimeLedger`); per VC: its GPU time / its quota's, same window.
- idle while waiting: see `GpuTimeLedger` (`min(free GPUs, GPUs asked for by waiting work)`).
- share of due: per VC, GPU time served within its quota while it had demand / GPU time it was
  due (`min(quota, demand)`); Jain's index over the VCs that were ever due anything.
- preemptions: evictions; lost: GPU time held that did not end as kept progress (work since
  the last checkpoint and restart overhead), x the job's GPUs.
- in-quota wait: for jobs that fit in their VC's unused quota when submitted (held + waiting +
  the job <= quota), first start - the first cycle instant at or after submission; the target
  is that none exceeds one cycle plus the eviction grace (`in_quota_late` counts those that do,
  `in_quota_never_started` those that never ran).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from scheduler_service.sim._pooling import PolicyRun
from scheduler_service.sim._replay import JobRecord

__all__ = ["Figures", "LateJob", "PolicyFigures", "figures_of", "jain_index", "percentile"]

LATE_LISTED = 20
"""How many late in-quota jobs the figures name (the longest waits)."""


@dataclass(frozen=True, slots=True)
class Figures:
    """The figures of one set of jobs (the whole trace or one VC)."""

    jobs: int
    finished: int
    never_started: int
    jct_avg_s: float
    jct_median_s: float
    jct_p99_s: float
    queue_avg_s: float
    queue_median_s: float
    queue_p99_s: float
    utilisation: float
    gpu_hours: float
    preemptions: int
    lost_gpu_hours: float
    share_of_due: float


@dataclass(frozen=True, slots=True)
class LateJob:
    """An in-quota job that started later than the bound: its wait after its first cycle."""

    name: str
    vc: str
    gpus: int
    wait_s: float


@dataclass(frozen=True, slots=True)
class PolicyFigures:
    """One policy: overall figures, per VC, and the cluster-wide ones."""

    policy: str
    gpus: int
    offered_load: float
    cycles: int
    end_s: float
    overall: Figures
    per_vc: dict[str, Figures]
    idle_waiting_gpu_hours: float
    jain_index: float
    in_quota_jobs: int
    in_quota_late: int
    in_quota_never_started: int
    in_quota_max_wait_s: float
    in_quota_bound_s: float
    in_quota_late_jobs: list[LateJob]
    """The `LATE_LISTED` longest-waiting late in-quota jobs, longest first."""

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return asdict(self)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile by the nearest-rank method; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index (sum x)^2 / (n sum x^2); 1 when all equal, 1 for no values."""
    squares = sum(v * v for v in values)
    return sum(values) ** 2 / (len(values) * squares) if squares else 1.0


def figures_of(run: PolicyRun) -> PolicyFigures:
    """Every figure of `run`; see the module docstring."""
    ledger = run.ledger
    end = ledger.now
    by_vc: dict[str, list[JobRecord]] = {vc: [] for vc in ledger.groups}
    for record in run.records:
        by_vc[record.job.group].append(record)
    per_vc = {}
    for vc, records in by_vc.items():
        quota_seconds = ledger.quota[vc] * ledger.window_end
        entitled = ledger.entitled[vc]
        per_vc[vc] = _figures(
            records,
            utilisation=ledger.group_window_busy[vc] / quota_seconds if quota_seconds else 0.0,
            gpu_seconds=ledger.group_busy[vc],
            share=ledger.served[vc] / entitled if entitled else 1.0,
        )
    entitled_total = sum(ledger.entitled.values())
    overall = _figures(
        run.records,
        utilisation=ledger.window_busy_seconds / (ledger.total_gpus * ledger.window_end)
        if ledger.window_end
        else 0.0,
        gpu_seconds=ledger.busy_seconds,
        share=sum(ledger.served.values()) / entitled_total if entitled_total else 1.0,
    )
    settings = run.settings
    step = settings.cycle_seconds
    bound = step + settings.eviction_grace_seconds
    waits = {
        record.job.workload.name: record.first_start
        - math.ceil(record.job.submitted_seconds / step) * step
        for record in run.records
        if record.in_quota and record.first_start is not None
    }
    late = sorted(
        (
            LateJob(record.job.workload.name, record.job.group, record.job.gpus, wait)
            for record in run.records
            if (wait := waits.get(record.job.workload.name, 0.0)) > bound
        ),
        key=lambda job: (-job.wait_s, job.name),
    )
    in_quota = [record for record in run.records if record.in_quota]
    never = sum(record.first_start is None for record in in_quota)
    return PolicyFigures(
        policy=run.policy,
        gpus=ledger.total_gpus,
        offered_load=run.cluster.offered_load,
        cycles=run.cycles,
        end_s=end,
        overall=overall,
        per_vc=per_vc,
        idle_waiting_gpu_hours=ledger.idle_waiting_seconds / 3600,
        jain_index=jain_index([f.share_of_due for vc, f in per_vc.items() if ledger.entitled[vc]]),
        in_quota_jobs=len(in_quota),
        in_quota_late=len(late),
        in_quota_never_started=never,
        in_quota_max_wait_s=max(waits.values(), default=0.0),
        in_quota_bound_s=bound,
        in_quota_late_jobs=late[:LATE_LISTED],
    )


def _figures(
    records: Sequence[JobRecord], *, utilisation: float, gpu_seconds: float, share: float
) -> Figures:
    jct = [r.finished_at - r.job.submitted_seconds for r in records if r.finished_at is not None]
    queue = [r.first_start - r.job.submitted_seconds for r in records if r.first_start is not None]
    return Figures(
        jobs=len(records),
        finished=len(jct),
        never_started=len(records) - len(queue),
        jct_avg_s=statistics.fmean(jct) if jct else 0.0,
        jct_median_s=statistics.median(jct) if jct else 0.0,
        jct_p99_s=percentile(jct, 0.99),
        queue_avg_s=statistics.fmean(queue) if queue else 0.0,
        queue_median_s=statistics.median(queue) if queue else 0.0,
        queue_p99_s=percentile(queue, 0.99),
        utilisation=utilisation,
        gpu_hours=gpu_seconds / 3600,
        preemptions=sum(r.evictions for r in records),
        lost_gpu_hours=sum(r.lost_seconds * r.job.gpus for r in records) / 3600,
        share_of_due=share,
    )
