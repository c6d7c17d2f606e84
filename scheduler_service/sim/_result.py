"""What a run produced: the timeline, each workload's outcome, and the queues' standing."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_service.sim._summary import QueueSummary
from scheduler_service.sim._timeline import TimelineEvent

__all__ = ["Outcome", "SimulationResult"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where one submitted workload ended.

    `state` is "finished", "pending", "running" or "evicting"; `done_seconds` counts the work
    it has (kept checkpoints plus the current run).
    """

    workload: str
    queue: str
    state: str
    done_seconds: float
    duration_seconds: float
    evictions: int
    lost_seconds: float
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """A run's record. Every submitted workload has exactly one `Outcome` (nothing is lost)."""

    ended_at: float
    cycles: int
    timeline: tuple[TimelineEvent, ...]
    outcomes: tuple[Outcome, ...]
    queues: tuple[QueueSummary, ...]
