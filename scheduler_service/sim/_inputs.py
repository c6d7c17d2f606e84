"""What the engine is told: its settings and the outside events it replays on the virtual clock."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler_service.core import Workload, WorkloadState

__all__ = ["EngineSettings", "Faults", "NodeChange", "SimulationError", "Submission"]


class SimulationError(RuntimeError):
    """The run cannot go on, with the virtual time in the message.

    Raised when a plan breaks an invariant (a core bug), when the plan and the engine's state
    disagree, or when an outside event contradicts the state (e.g. a node that is already down
    goes down again: a scenario or trace bug).
    """


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How the virtual cluster behaves, for the scenario `Engine` and the trace `replay` alike.

    A cycle runs at multiples of `cycle_seconds` while anything is pending. An evicted
    workload's pods are gone `eviction_grace_seconds` after the plan that evicted it. A
    workload saves a checkpoint after every `checkpoint_seconds` of work (counted over all its
    runs) and keeps the work up to its last checkpoint when stopped; None: no checkpoints, a
    stopped workload starts again from zero. Each run after the first begins with
    `restart_seconds` of overhead (loading the checkpoint) before it makes progress. With
    `check_plans`, every plan is checked against DESIGN.md's invariants (`check_plan`) and a
    violation stops the run; the trace replay turns it off for speed unless asked.
    """

    cycle_seconds: float = 10.0
    eviction_grace_seconds: float = 30.0
    checkpoint_seconds: float | None = None
    restart_seconds: float = 0.0
    check_plans: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cycle_seconds) and self.cycle_seconds > 0):
            raise ValueError(f"cycle_seconds must be > 0, got {self.cycle_seconds}")
        for name in ("eviction_grace_seconds", "restart_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.checkpoint_seconds is not None and not (
            math.isfinite(self.checkpoint_seconds) and self.checkpoint_seconds > 0
        ):
            raise ValueError(
                f"checkpoint_seconds must be > 0 (or None), got {self.checkpoint_seconds}"
            )

    def kept_seconds(self, work_seconds: float) -> float:
        """The work a workload keeps when stopped after `work_seconds` of work in total."""
        if self.checkpoint_seconds is None:
            return 0.0
        return math.floor(work_seconds / self.checkpoint_seconds) * self.checkpoint_seconds


@dataclass(frozen=True, slots=True)
class Faults:
    """Faults the engine injects, drawn from a `random.Random(seed)` so a run replays exactly.

    `patch_failure`: the chance that carrying out one admission fails (the pods are not patched
    and stay pending; the next cycle decides again). `pod_crash`: the chance, per running
    workload and cycle, that its pods crash (it keeps its work up to its last checkpoint and
    waits again). Node loss comes from posted `NodeChange` events.
    """

    seed: int
    patch_failure: float = 0.0
    pod_crash: float = 0.0

    def __post_init__(self) -> None:
        for name in ("patch_failure", "pod_crash"):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


@dataclass(frozen=True, slots=True)
class Submission:
    """At `at`, `workload` is submitted; it finishes after `duration_seconds` of running time.

    The workload must be PENDING; its `submitted_at` is set by the engine to `at`.
    """

    at: float
    workload: Workload
    duration_seconds: float

    def __post_init__(self) -> None:
        if self.workload.state is not WorkloadState.PENDING:
            raise ValueError(f"submission {self.workload.name!r}: the workload must be pending")
        if not (math.isfinite(self.duration_seconds) and self.duration_seconds > 0):
            raise ValueError(
                f"submission {self.workload.name!r}: duration_seconds must be > 0, "
                f"got {self.duration_seconds}"
            )
        _check_time(self.at, f"submission {self.workload.name!r}")


@dataclass(frozen=True, slots=True)
class NodeChange:
    """At `at`, `node` goes down (`ready` False) or comes back up (`ready` True)."""

    at: float
    node: str
    ready: bool

    def __post_init__(self) -> None:
        _check_time(self.at, f"node change {self.node!r}")


def _check_time(at: float, what: str) -> None:
    if not (math.isfinite(at) and at >= 0):
        raise ValueError(f"{what}: at must be a time >= 0 seconds, got {at}")
