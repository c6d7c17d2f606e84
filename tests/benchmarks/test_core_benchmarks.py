"""Core benchmarks at real cluster sizes; run with `scripts/bench` (skipped otherwise).

Each case is data: a cluster size, how its snapshot is built, and the target from the issue.
Each case is timed twice: `schedule(snapshot, now)`, which builds the cycle state from the
snapshot, and `Scheduler.cycle(now)` on a scheduler already holding that snapshot (what a
long-running driver pays per cycle). The time is the best of `REPEATS` runs, measured with
`time.perf_counter`; building the snapshot is the driver's cost and not counted. Results are
printed and written to `out/benchmarks/core.json`; docs/benchmarks.md records them with the
machine.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from scheduler_service.core import Plan, Request, Scheduler, Snapshot, Workload, schedule
from tests.benchmarks.clusters import (
    full_cluster,
    make_nodes,
    make_pending,
    make_queues,
    team_names,
)

REPEATS = 3
OUT = Path(__file__).resolve().parents[2] / "out" / "benchmarks" / "core.json"
RECLAIMER = "dept-3-team-0"


@dataclass(frozen=True)
class Case:
    """One benchmark: `build(nodes)` returns the snapshot and `now` that `schedule` runs on."""

    name: str
    nodes: int
    target_seconds: float | None
    """The issue's target; None where the case only shows how cost grows."""
    build: Callable[[int], tuple[Snapshot, float]]
    check: Callable[[Plan], str]


def _fill(nodes: int) -> tuple[Snapshot, float]:
    """An empty cluster, 8 one-GPU steps per node plus nodes/2 gangs of 4 one-GPU pods."""
    pending = make_pending(singles=nodes * 8, gangs=nodes // 2, gang_pods=4, seed=1)
    queues = make_queues(nodes * 8)
    return Snapshot(nodes=make_nodes(nodes), queues=queues, workloads=tuple(pending)), 0.0


def _steady(nodes: int) -> tuple[Snapshot, float]:
    """The filled cluster with 1,000 more one-GPU steps pending."""
    full, _ = full_cluster(nodes)
    pending = make_pending(singles=1000, gangs=0, gang_pods=1, seed=2, prefix="p", start=100.0)
    return replace(full, workloads=full.workloads + tuple(pending)), 1000.0


def _reclaim(nodes: int) -> tuple[Snapshot, float]:
    """A team of idle department 3 asks for 8 pods x 8 GPUs within its quota.

    Departments 0-2 have filled the cluster, borrowing department 3's quota.
    """
    busy = [team for team in team_names() if not team.startswith("dept-3")]
    full, _ = full_cluster(nodes, teams=busy)
    gang = Workload(
        name="gang-64",
        queue=RECLAIMER,
        pods=8,
        submitted_at=500.0,
        request=Request(gpus=8, cpu_milli=8000, memory_mib=64_000),
    )
    return replace(full, workloads=(*full.workloads, gang)), 5000.0


def _admitted(plan: Plan) -> str:
    gpus = sum(len(pod.gpus) for a in plan.admissions for pod in a.allocation)
    return f"{len(plan.admissions)} admitted ({gpus} GPUs), {len(plan.pending)} pending"


def _evicted(plan: Plan) -> str:
    return f"{len(plan.evictions)} evicted, {len(plan.admissions)} admitted"


CASES = [
    Case("fill", 1000, 2.0, _fill, _admitted),
    Case("steady", 1000, 0.1, _steady, _evicted),
    Case("reclaim-64", 1000, 0.2, _reclaim, _evicted),
    Case("fill", 5000, None, _fill, _admitted),
    Case("steady", 5000, None, _steady, _evicted),
    Case("reclaim-64", 5000, None, _reclaim, _evicted),
]


@pytest.mark.benchmark
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}-{c.nodes}")
def test_core_benchmark(case: Case) -> None:
    snapshot, now = case.build(case.nodes)
    warm = Scheduler.from_snapshot(snapshot)
    modes: list[tuple[str, Callable[[], Plan]]] = [
        ("schedule", lambda: schedule(snapshot, now)),
        ("Scheduler", lambda: warm.cycle(now)),
    ]
    for mode, run in modes:
        timings = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            plan = run()
            timings.append(time.perf_counter() - start)
        best = min(timings)
        outcome = case.check(plan)
        if case.name == "reclaim-64":
            assert plan.evictions, "the reclaim case must reclaim"
        if case.target_seconds is None:
            target = "no target"
        else:
            met = "met" if best <= case.target_seconds else "MISSED"
            target = f"target {case.target_seconds * 1000:.0f} ms, {met}"
        print(
            f"{case.name:<11} {case.nodes:>5} nodes  {mode:<9}  best {best * 1000:8.1f} ms  "
            f"({target})  {outcome}"
        )
        _record(f"{case.name}-{case.nodes}-{mode}", case, best, timings, outcome)


def _record(key: str, case: Case, best: float, timings: list[float], outcome: str) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results[key] = {
        "best_seconds": best,
        "timings_seconds": timings,
        "target_seconds": case.target_seconds,
        "outcome": outcome,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    OUT.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
