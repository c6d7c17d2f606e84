"""A deterministic discrete-event engine on a virtual clock, driving the real scheduling core.

The engine owns a virtual cluster (nodes, queues, policy) and the workloads submitted to it.
Time only moves when the engine says so: it jumps from event to event, and no wall clock or
randomness is involved, so the same inputs always give the same timeline.

At one instant, things happen in this order:

1. workloads finish (their running time is used up) and evicted workloads' pods are gone
   (the grace period is over): both free GPUs before anyone decides anything at that instant;
2. outside events (submissions, nodes going down or up), in the order they were posted;
3. a scheduling cycle, if the instant is a multiple of `cycle_seconds` and anything is
   pending: `schedule(snapshot, now)`, then `check_plan` (with `check_plans`, the default: any
   violation stops the run with a `SimulationError`), then the plan is carried out: admissions
   start RUNNING at once, evictions become EVICTING and return to PENDING after the grace
   period.

A stopped workload (evicted, or on a node that went down) keeps its work up to its last
checkpoint (see `EngineSettings`) and its original submission time, so it keeps its place in
its queue; each later run starts with `restart_seconds` of overhead. Work stops when the plan
evicts it, not when its pods are finally gone. Nothing is lost: every submitted workload is
finished or still present (pending, running or evicting).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace

from scheduler_service.core import (
    Allocation,
    Node,
    Plan,
    Policy,
    Queue,
    Snapshot,
    Workload,
    WorkloadState,
    check_plan,
    schedule,
)
from scheduler_service.sim._inputs import (
    EngineSettings,
    Faults,
    NodeChange,
    SimulationError,
    Submission,
)
from scheduler_service.sim._result import Outcome, SimulationResult
from scheduler_service.sim._summary import held_gpus, summarize
from scheduler_service.sim._timeline import (
    Admitted,
    Crashed,
    Evicted,
    Finished,
    Lost,
    NodeDown,
    NodeUp,
    PatchFailed,
    PodPlacement,
    Requeued,
    Resumed,
    Submitted,
    TimelineEvent,
    Waiting,
)

__all__ = ["Engine"]

# Order of events at the same instant; see the module docstring.
_RELEASE = 0
_OUTSIDE = 1


@dataclass(frozen=True, slots=True)
class _Finish:
    workload: str
    generation: int


@dataclass(frozen=True, slots=True)
class _PodsGone:
    workload: str
    generation: int


_Event = _Finish | _PodsGone | Submission | NodeChange


@dataclass(slots=True)
class _Job:
    """The engine's book on one submitted workload. `generation` voids stale timer events."""

    workload: Workload
    duration_seconds: float
    done_seconds: float = 0.0
    last_lost_seconds: float = 0.0
    lost_seconds: float = 0.0
    evictions: int = 0
    started_before: bool = False
    overhead_seconds: float = 0.0
    """The restart overhead of the current run (no progress during it)."""
    generation: int = 0
    reason: tuple[str, str] | None = None
    finished_at: float | None = None


class Engine:
    """Replays submissions and node changes on a virtual cluster, cycle by cycle.

    Post outside events with `post` (any order; the engine sorts them by time, ties in posting
    order), move the clock with `advance`, read the outcome with `result`. The engine is not
    thread-safe and never reads the wall clock.
    """

    def __init__(
        self,
        *,
        nodes: Iterable[Node],
        queues: Iterable[Queue],
        policy: Policy | None = None,
        settings: EngineSettings | None = None,
        faults: Faults | None = None,
    ) -> None:
        """Start an empty cluster at virtual time 0; raise `SnapshotError` if it is inconsistent.

        `faults` injects failures from its seed; every error names the seed so the run replays.
        """
        self.settings = settings or EngineSettings()
        self._faults = faults
        self._rng = random.Random(faults.seed if faults else 0)
        self.now = 0.0
        self._nodes = {node.name: node for node in sorted(nodes, key=lambda n: n.name)}
        self._queues = tuple(queues)
        self._policy = policy or Policy()
        Snapshot(nodes=tuple(self._nodes.values()), queues=self._queues, policy=self._policy)
        self._gpu_index = {
            gpu.uuid: gpu.index for node in self._nodes.values() for gpu in node.gpus
        }
        self._pool_of = {name: node.pool for name, node in self._nodes.items()}
        self._jobs: dict[str, _Job] = {}
        self._timers: list[tuple[float, int, int, _Event]] = []
        self._sequence = itertools.count()
        self._next_cycle = 0
        self._timeline: list[TimelineEvent] = []
        self._gpu_seconds: dict[tuple[str, str], float] = {}
        self._cycles = 0

    # -- input ----------------------------------------------------------------------------

    def post(self, event: Submission | NodeChange) -> None:
        """Schedule an outside event; it must not lie in the engine's past."""
        if event.at < self.now:
            raise SimulationError(f"t={_t(self.now)}: event at t={_t(event.at)} is in the past")
        self._push(event.at, _OUTSIDE, event)

    # -- the clock ------------------------------------------------------------------------

    def advance(self, until: float | None = None) -> None:
        """Run every event and cycle up to and including `until`.

        With `until` None, run until nothing can change any more: no timers are left and the
        last cycle changed nothing (what is still pending then waits forever). The clock ends
        at `until` when given, otherwise at the last thing that happened.
        """
        while True:
            at = min(self._timers[0][0] if self._timers else math.inf, self._cycle_at())
            if at == math.inf or (until is not None and at > until):
                break
            self.now = at
            while self._timers and self._timers[0][0] == at:
                self._handle(heapq.heappop(self._timers)[3])
            if self._pending() and self._cycle_at() == at:
                changed = self._cycle()
                if not changed and not self._timers:
                    break  # nothing will ever change: no timer left, the same plan every cycle
        if until is not None:
            self.now = max(self.now, until)

    def result(self) -> SimulationResult:
        """The timeline so far, every workload's outcome, and the queues' standing now."""
        gpu_seconds = dict(self._gpu_seconds)
        for job in self._jobs.values():
            if job.workload.allocation is not None:
                self._add_gpu_seconds(job, gpu_seconds)
        outcomes = tuple(
            Outcome(
                workload=name,
                queue=job.workload.queue,
                state="finished" if job.finished_at is not None else job.workload.state.value,
                done_seconds=job.duration_seconds
                if job.finished_at is not None
                else job.done_seconds + self._progress_seconds(job),
                duration_seconds=job.duration_seconds,
                evictions=job.evictions,
                lost_seconds=job.lost_seconds,
                finished_at=job.finished_at,
            )
            for name, job in sorted(self._jobs.items())
        )
        return SimulationResult(
            ended_at=self.now,
            cycles=self._cycles,
            timeline=tuple(self._timeline),
            outcomes=outcomes,
            queues=summarize(self._snapshot(), self.now, gpu_seconds),
        )

    def _cycle_at(self) -> float:
        """The next instant a cycle may run, or infinity while nothing is pending."""
        if not self._pending():
            return math.inf
        return self._cycle_index() * self.settings.cycle_seconds

    def _cycle_index(self) -> int:
        """Cycles run at multiples of `cycle_seconds`: the first one not before now or the last."""
        step = self.settings.cycle_seconds
        index = max(self._next_cycle, math.ceil(self.now / step))
        # Float division can put an exact multiple one step too late; step back if so.
        if index > self._next_cycle and (index - 1) * step >= self.now:
            index -= 1
        return index

    def _push(self, at: float, order: int, event: _Event) -> None:
        heapq.heappush(self._timers, (at, order, next(self._sequence), event))

    # -- events ---------------------------------------------------------------------------

    def _handle(self, event: _Event) -> None:
        match event:
            case _Finish(name, generation):
                job = self._jobs[name]
                if job.generation == generation:
                    self._finish(job)
            case _PodsGone(name, generation):
                job = self._jobs[name]
                if job.generation == generation:
                    self._requeue(job)
            case Submission():
                self._submit(event)
            case NodeChange(node=node, ready=False):
                self._node_down(node)
            case NodeChange(node=node, ready=True):
                self._node_up(node)

    def _submit(self, submission: Submission) -> None:
        name = submission.workload.name
        if name in self._jobs:
            raise SimulationError(f"t={_t(self.now)}: workload {name!r} was already submitted")
        workload = replace(submission.workload, submitted_at=self.now)
        self._jobs[name] = _Job(workload=workload, duration_seconds=submission.duration_seconds)
        self._timeline.append(Submitted(self.now, name, workload, submission.duration_seconds))

    def _finish(self, job: _Job) -> None:
        self._add_gpu_seconds(job, self._gpu_seconds)
        job.lost_seconds += job.overhead_seconds  # the restart made no progress
        job.done_seconds = job.duration_seconds
        job.finished_at = self.now
        job.generation += 1
        job.workload = _pending(job.workload)  # holds nothing now; `finished_at` marks it done
        self._timeline.append(
            Finished(
                self.now,
                job.workload.name,
                job.workload.queue,
                job.workload.submitted_at,
                job.evictions,
                job.lost_seconds,
            )
        )

    def _requeue(self, job: _Job) -> None:
        self._add_gpu_seconds(job, self._gpu_seconds)
        job.generation += 1
        job.workload = _pending(job.workload)
        self._timeline.append(
            Requeued(
                self.now,
                job.workload.name,
                job.done_seconds,
                job.last_lost_seconds,
                job.duration_seconds,
            )
        )

    def _node_down(self, name: str) -> None:
        node = self._node(name)
        if not node.ready:
            raise SimulationError(f"t={_t(self.now)}: node {name!r} is already down")
        self._nodes[name] = replace(node, ready=False)
        self._timeline.append(NodeDown(self.now, name))
        for job in self._live():
            allocation = job.workload.allocation
            if allocation is None or all(pod.node != name for pod in allocation):
                continue
            self._interrupt(job)
            self._timeline.append(
                Lost(
                    self.now,
                    job.workload.name,
                    name,
                    job.done_seconds,
                    job.last_lost_seconds,
                    job.duration_seconds,
                )
            )

    def _node_up(self, name: str) -> None:
        node = self._node(name)
        if node.ready:
            raise SimulationError(f"t={_t(self.now)}: node {name!r} is not down")
        self._nodes[name] = replace(node, ready=True)
        self._timeline.append(NodeUp(self.now, name))

    def _node(self, name: str) -> Node:
        if name not in self._nodes:
            known = ", ".join(self._nodes) or "none"
            raise SimulationError(f"t={_t(self.now)}: no node {name!r} (nodes: {known})")
        return self._nodes[name]

    # -- the cycle ------------------------------------------------------------------------

    def _cycle(self) -> bool:
        """Run one cycle and carry out its plan; True if that changed or may change anything.

        An admission whose patch failed changes nothing now, but the next cycle tries again and
        may succeed: unless every patch fails (`patch_failure` 1), where nothing ever will.
        """
        self._cycles += 1
        self._next_cycle = self._cycle_index() + 1
        self._crash_pods()
        snapshot = self._snapshot()
        plan = schedule(snapshot, self.now)
        violations = check_plan(snapshot, plan) if self.settings.check_plans else []
        if violations:
            lines = "\n".join(f"  - {violation}" for violation in violations)
            replay = f" (replay: {self._faults})" if self._faults else ""
            raise SimulationError(
                f"t={_t(self.now)}: the plan breaks {len(violations)} invariant(s){replay}:"
                f"\n{lines}"
            )
        started = self._carry_out(plan)
        retry = (
            bool(plan.admissions) and self._faults is not None and self._faults.patch_failure < 1
        )
        return bool(started or plan.evictions or retry)

    def _carry_out(self, plan: Plan) -> int:
        """Carry out `plan`; returns how many admissions were carried out (patches applied)."""
        started = 0
        for eviction in plan.evictions:
            job = self._job_in(eviction.workload, WorkloadState.RUNNING, "evicts")
            self._stop(job)
            job.evictions += 1
            job.generation += 1
            job.workload = replace(job.workload, state=WorkloadState.EVICTING)
            self._push(
                self.now + self.settings.eviction_grace_seconds,
                _RELEASE,
                _PodsGone(job.workload.name, job.generation),
            )
            self._timeline.append(
                Evicted(self.now, eviction.workload, eviction.cause, eviction.message)
            )
        for admission in plan.admissions:
            job = self._job_in(admission.workload, WorkloadState.PENDING, "admits")
            if self._faults and self._rng.random() < self._faults.patch_failure:
                self._timeline.append(PatchFailed(self.now, admission.workload))
                continue
            self._start(job, admission.allocation)
            started += 1
        for entry in plan.pending:
            job = self._job_in(entry.workload, WorkloadState.PENDING, "lists as pending")
            reason = (entry.reason.code, entry.reason.message)
            if job.reason != reason:
                job.reason = reason
                self._timeline.append(Waiting(self.now, entry.workload, *reason))
        return started

    def _interrupt(self, job: _Job) -> None:
        """A placed workload's pods are gone at once (node lost, crash): it waits again.

        A running one keeps its work up to its last checkpoint.
        """
        if job.workload.state is WorkloadState.RUNNING:
            self._stop(job)
        self._add_gpu_seconds(job, self._gpu_seconds)
        job.generation += 1
        job.workload = _pending(job.workload)

    def _crash_pods(self) -> None:
        """Injected fault: running workloads whose pods crash go back to pending."""
        if not self._faults or not self._faults.pod_crash:
            return
        for job in sorted(self._live(), key=lambda j: j.workload.name):
            if job.workload.state is not WorkloadState.RUNNING:
                continue
            if self._rng.random() >= self._faults.pod_crash:
                continue
            self._interrupt(job)
            self._timeline.append(
                Crashed(
                    self.now,
                    job.workload.name,
                    job.done_seconds,
                    job.last_lost_seconds,
                    job.duration_seconds,
                )
            )

    def _job_in(self, name: str, state: WorkloadState, verb: str) -> _Job:
        job = self._jobs.get(name)
        if job is None or job.finished_at is not None or job.workload.state is not state:
            actual = (
                "unknown"
                if job is None
                else ("finished" if job.finished_at is not None else job.workload.state.value)
            )
            raise SimulationError(
                f"t={_t(self.now)}: the plan {verb} workload {name!r}, which is {actual}, "
                f"not {state.value}"
            )
        return job

    def _start(self, job: _Job, allocation: Allocation) -> None:
        job.generation += 1
        job.reason = None
        job.workload = replace(
            job.workload, state=WorkloadState.RUNNING, allocation=allocation, started_at=self.now
        )
        job.overhead_seconds = self.settings.restart_seconds if job.started_before else 0.0
        remaining = job.duration_seconds - job.done_seconds + job.overhead_seconds
        self._push(self.now + remaining, _RELEASE, _Finish(job.workload.name, job.generation))
        placement = tuple(
            PodPlacement(pod.node, tuple(self._gpu_index[uuid] for uuid in pod.gpus), pod.slice)
            for pod in allocation
        )
        name, queue = job.workload.name, job.workload.queue
        if job.started_before:
            self._timeline.append(
                Resumed(self.now, name, queue, placement, job.done_seconds, job.duration_seconds)
            )
        else:
            self._timeline.append(Admitted(self.now, name, queue, placement))
        job.started_before = True

    def _stop(self, job: _Job) -> None:
        """A running workload stops working now: keep the work up to its last checkpoint.

        Lost: the time it ran that did not end as kept progress (the restart overhead too).
        """
        ran = self._running_seconds(job)
        total = job.done_seconds + self._progress_seconds(job)
        kept = max(job.done_seconds, self.settings.kept_seconds(total))
        job.last_lost_seconds = ran - (kept - job.done_seconds)
        job.lost_seconds += job.last_lost_seconds
        job.done_seconds = kept

    # -- state ----------------------------------------------------------------------------

    def _running_seconds(self, job: _Job) -> float:
        if job.workload.state is not WorkloadState.RUNNING or job.workload.started_at is None:
            return 0.0
        return self.now - job.workload.started_at

    def _progress_seconds(self, job: _Job) -> float:
        """The work done in the current run: its running time past the restart overhead."""
        return max(0.0, self._running_seconds(job) - job.overhead_seconds)

    def _add_gpu_seconds(self, job: _Job, into: dict[tuple[str, str], float]) -> None:
        """Charge the GPUs the workload held since it started to its queue and pool."""
        workload = job.workload
        if workload.allocation is None or workload.started_at is None:
            return
        key = (workload.queue, self._pool_of[workload.allocation[0].node])
        held = held_gpus(workload.allocation) * (self.now - workload.started_at)
        into[key] = into.get(key, 0.0) + held

    def _live(self) -> list[_Job]:
        return [job for _, job in sorted(self._jobs.items()) if job.finished_at is None]

    def _pending(self) -> bool:
        return any(job.workload.state is WorkloadState.PENDING for job in self._live())

    def _snapshot(self) -> Snapshot:
        return Snapshot(
            nodes=tuple(self._nodes.values()),
            queues=self._queues,
            workloads=tuple(job.workload for job in self._live()),
            policy=self._policy,
        )


def _pending(workload: Workload) -> Workload:
    return replace(workload, state=WorkloadState.PENDING, allocation=None, started_at=None)


def _t(seconds: float) -> str:
    return f"{seconds:g}s"
