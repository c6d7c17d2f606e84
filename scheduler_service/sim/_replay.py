"""A fast trace replay on a virtual clock, driving the real core through a `Decider`.

Same semantics and the same `EngineSettings` as `Engine`, shaped for traces of tens of
thousands of jobs:

- cycles run on a grid of `cycle_seconds`, and only at a grid instant when something changed
  since the last cycle (a submission, a completion, an evicted workload's pods gone) and work
  is waiting; everything that happened since the previous grid instant is batched into it;
- completions and releases happen at their exact times (GPU time and JCT are exact), but the
  freed GPUs are handed out at the next cycle, as a periodic scheduler does;
- an evicted workload stops working at once, holds its GPUs for `eviction_grace_seconds`, then
  waits again with its original submission time; it keeps the work up to its last checkpoint
  (every `checkpoint_seconds` of work, counted over all its runs) and each later run starts
  with `restart_seconds` of overhead (loading the checkpoint) before it makes progress. Lost
  time = the GPU time held that did not end as kept progress.

With an `IdleGate` (`gate`), a cycle that provably can neither admit nor evict is skipped
(`skipped_cycles` counts them); outcomes are the same. The replay acts on decisions and reports
no reasons, so it asks the core for decisions alone (`explain=False`: phase 6 skipped, the same
decisions). With `check_plans` every plan is explained and checked with `check_plan` against
the snapshot it was made from; a violation raises `SimulationError`.

With `Faults`, failures are drawn from its seed, as the scenario `Engine` draws them: carrying
out an admission fails with `patch_failure` (the workload stays pending and the next grid
instant decides again), and at each cycle every running workload's pods crash with `pod_crash`
(it keeps its work up to its last checkpoint and waits again at once). Every error then names
the faults, so the run replays. The replay never reads the wall clock.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scheduler_service.core import Plan, Workload, check_plan
from scheduler_service.sim._decider import Decider
from scheduler_service.sim._gate import IdleGate
from scheduler_service.sim._inputs import EngineSettings, Faults, SimulationError
from scheduler_service.sim._ledger import GpuTimeLedger

__all__ = ["JobRecord", "ReplayJob", "ReplayOutcome", "replay"]


@dataclass(frozen=True, slots=True)
class ReplayJob:
    """One job: a PENDING `workload` submitted at `submitted_seconds`, reported under `group`."""

    workload: Workload
    group: str
    submitted_seconds: float
    duration_seconds: float

    @property
    def gpus(self) -> int:
        """Whole GPUs of the gang."""
        return self.workload.request.gpus * self.workload.pods


@dataclass(slots=True)
class JobRecord:
    """What happened to one job. Times are virtual seconds; None: it never got there."""

    job: ReplayJob
    first_start: float | None = None
    finished_at: float | None = None
    done_seconds: float = 0.0
    lost_seconds: float = 0.0
    evictions: int = 0
    crashes: int = 0
    in_quota: bool = False
    started_at: float = 0.0
    overhead_seconds: float = 0.0
    generation: int = 0


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """One record per job (in the order given), the cycles run and those the gate skipped."""

    records: list[JobRecord]
    cycles: int
    skipped_cycles: int


_FINISH = 0
_GONE = 1
_RETRY = 2  # no event: a grid instant at which a failed patch is decided again


def replay(
    jobs: Sequence[ReplayJob],
    decider: Decider,
    ledger: GpuTimeLedger,
    settings: EngineSettings,
    *,
    gate: IdleGate | None = None,
    progress: Callable[[float, int], None] | None = None,
    faults: Faults | None = None,
) -> ReplayOutcome:
    """Replay `jobs` (sorted by submission) through `decider` until nothing can change.

    `ledger` receives every change in held and waiting GPUs. `progress(now, finished)` is called
    about every 1,000 cycles. Jobs still waiting at the end (nothing left to happen) have no
    `finished_at`. `faults` injects failures (see the module docstring).
    """
    replay_ = _Replay(jobs, decider, ledger, settings, gate=gate, progress=progress, faults=faults)
    try:
        return replay_.run()
    except (SimulationError, ValueError) as error:  # ValueError: the core refused a report
        if faults is None:
            raise
        raise SimulationError(f"{error} (replay: {faults})") from error


class _Replay:
    def __init__(
        self,
        jobs: Sequence[ReplayJob],
        decider: Decider,
        ledger: GpuTimeLedger,
        settings: EngineSettings,
        *,
        gate: IdleGate | None,
        progress: Callable[[float, int], None] | None,
        faults: Faults | None,
    ) -> None:
        self.jobs = jobs
        self.decider = decider
        self.ledger = ledger
        self.settings = settings
        self.gate = gate
        self.progress = progress
        self.records = {job.workload.name: JobRecord(job) for job in jobs}
        self.timers: list[tuple[float, int, str, int]] = []
        self.waiting = 0
        self.finished = 0
        self.cycles = 0
        self.skipped = 0
        self.faults = faults
        self.rng = random.Random(faults.seed if faults else 0)
        self.running: set[str] = set()

    def run(self) -> ReplayOutcome:
        step = self.settings.cycle_seconds
        arrivals = 0
        while True:
            next_at = min(
                self.timers[0][0] if self.timers else math.inf,
                self.jobs[arrivals].submitted_seconds if arrivals < len(self.jobs) else math.inf,
            )
            if next_at == math.inf:
                break
            at = math.ceil(next_at / step) * step
            while True:  # every event up to the grid instant, in time order, arrivals last
                timer = self.timers[0][0] if self.timers else math.inf
                arrival = (
                    self.jobs[arrivals].submitted_seconds if arrivals < len(self.jobs) else math.inf
                )
                if min(timer, arrival) > at:
                    break
                if timer <= arrival:
                    self._timer(*heapq.heappop(self.timers))
                else:
                    self._submit(self.jobs[arrivals])
                    arrivals += 1
            self.ledger.advance(at)
            if self.waiting:
                if self.gate is None or self.gate.may_act():
                    self._cycle(at)
                else:
                    self.skipped += 1
        records = [self.records[job.workload.name] for job in self.jobs]
        return ReplayOutcome(records, self.cycles, self.skipped)

    def _timer(self, at: float, kind: int, name: str, generation: int) -> None:
        if kind == _RETRY:
            return  # only brings the clock to a grid instant
        record = self.records[name]
        if record.generation != generation:
            return
        self.ledger.advance(at)
        job = record.job
        self.ledger.hold(job.group, -job.gpus)
        record.generation += 1
        if self.gate is not None:
            self.gate.released(job.workload.queue, job.gpus, running=kind == _FINISH)
            if kind == _GONE:
                self.gate.submitted(job.workload.queue, job.gpus)
        if kind == _FINISH:
            self.running.discard(name)
            record.lost_seconds += record.overhead_seconds  # the restart made no progress
            record.done_seconds = job.duration_seconds
            record.finished_at = at
            self.finished += 1
            self.decider.finished(name)
        else:
            self.waiting += 1
            self.ledger.wait(job.group, job.gpus)
            self.decider.requeued(name)

    def _submit(self, job: ReplayJob) -> None:
        ledger = self.ledger
        ledger.advance(job.submitted_seconds)
        group = job.group
        asked = ledger.held[group] + ledger.waiting[group] + job.gpus
        self.records[job.workload.name].in_quota = asked <= ledger.quota[group]
        ledger.wait(group, job.gpus)
        self.waiting += 1
        if self.gate is not None:
            self.gate.submitted(job.workload.queue, job.gpus)
        self.decider.submit(job.workload)

    def _cycle(self, now: float) -> None:
        self.cycles += 1
        if self.progress is not None and self.cycles % 1000 == 0:
            self.progress(now, self.finished)
        if self.faults is not None and self.faults.pod_crash:
            self._crash_pods(now)
        # The replay acts on decisions and reports no reasons: phase 6 runs only when the plan
        # is checked (`check_plan` wants every pending workload's reason).
        plan = self.decider.cycle(now, explain=self.settings.check_plans)
        if self.settings.check_plans:
            self._check(plan, now)
        for eviction in plan.evictions:
            self._evict(eviction.workload, now)
        retry = False
        for admission in plan.admissions:
            if self.faults is not None and self.rng.random() < self.faults.patch_failure:
                retry = True  # the pods were not patched: they wait, decided again next time
                continue
            self._start(admission.workload, now)
            self.decider.started(admission.workload, admission.allocation, now)
        if retry and self.faults is not None and self.faults.patch_failure < 1:
            # Decided again at the next grid instant; when every patch fails, nothing ever runs.
            heapq.heappush(self.timers, (now + self.settings.cycle_seconds, _RETRY, "", 0))

    def _crash_pods(self, now: float) -> None:
        """Injected fault: each running workload's pods crash with `pod_crash`; it waits again."""
        assert self.faults is not None
        for name in sorted(self.running):
            if self.rng.random() >= self.faults.pod_crash:
                continue
            record = self.records[name]
            self._stop(record, now)
            record.crashes += 1
            job = record.job
            self.running.discard(name)
            self.ledger.hold(job.group, -job.gpus)
            self.ledger.wait(job.group, job.gpus)
            self.waiting += 1
            if self.gate is not None:
                self.gate.released(job.workload.queue, job.gpus, running=True)
                self.gate.submitted(job.workload.queue, job.gpus)
            self.decider.requeued(name)

    def _check(self, plan: Plan, now: float) -> None:
        violations = check_plan(self.decider.snapshot(), plan)
        if violations:
            lines = "\n".join(f"  - {violation}" for violation in violations)
            raise SimulationError(f"t={now:g}s: the plan breaks invariants:\n{lines}")

    def _start(self, name: str, now: float) -> None:
        record = self.records[name]
        job = record.job
        if record.first_start is None:
            record.first_start = now
            record.overhead_seconds = 0.0
        else:
            record.overhead_seconds = self.settings.restart_seconds
        record.started_at = now
        record.generation += 1
        self.running.add(name)
        remaining = job.duration_seconds - record.done_seconds + record.overhead_seconds
        heapq.heappush(self.timers, (now + remaining, _FINISH, name, record.generation))
        self.waiting -= 1
        self.ledger.wait(job.group, -job.gpus)
        self.ledger.hold(job.group, job.gpus)
        if self.gate is not None:
            self.gate.started(job.workload.queue, job.gpus)

    def _stop(self, record: JobRecord, now: float) -> None:
        """The job stops working at `now`: it keeps its work up to its last checkpoint."""
        ran = now - record.started_at
        total = record.done_seconds + max(0.0, ran - record.overhead_seconds)
        kept = max(record.done_seconds, self.settings.kept_seconds(total))
        record.lost_seconds += ran - (kept - record.done_seconds)
        record.done_seconds = kept
        record.generation += 1

    def _evict(self, name: str, now: float) -> None:
        record = self.records[name]
        self._stop(record, now)
        self.running.discard(name)
        record.evictions += 1
        release = now + self.settings.eviction_grace_seconds
        heapq.heappush(self.timers, (release, _GONE, name, record.generation))
        if self.gate is not None:
            self.gate.evicting(record.job.workload.queue, record.job.gpus)
        self.decider.evicting(name)
