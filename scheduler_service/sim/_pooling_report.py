"""Experiment 2 end to end: every load x policy, then the table, the JSON file and the plots.

`run_pooling` replays the trace under each policy at each load (native size, or the cluster
scaled to an offered load) and times each replay with the clock it is given (the CLI passes
`time.perf_counter`, and `time.process_time` for CPU time; the replay itself never reads a
clock). `render_table` gives the text the
CLI prints; `write_outputs` writes `pooling.json` and the plots (matplotlib, Agg backend) into a
folder. The Helios artifact's published Philly figures are quoted beside ours for context.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from scheduler_service.sim._inputs import EngineSettings, Faults
from scheduler_service.sim._philly import PhillyTrace
from scheduler_service.sim._pooling import Cluster, PolicyRun, WhatIf, run_policy, scale_cluster
from scheduler_service.sim._pooling_metrics import PolicyFigures, figures_of

__all__ = ["HELIOS", "LoadResult", "load_label", "render_table", "run_pooling", "write_outputs"]

HELIOS = {
    "FIFO": (86_072.0, 56_531.0),
    "SJF": (34_272.0, 4_731.0),
    "SRTF": (30_683.0, 1_138.0),
    "QSSF": (37_324.0, 7_783.0),
}
"""Helios artifact, Philly Oct-Nov 2017, 11 VCs each alone: (average JCT, average queueing) s."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One load: its cluster, each policy's replay and figures, each replay's wall and CPU time."""

    label: str
    cluster: Cluster
    runs: list[PolicyRun]
    figures: list[PolicyFigures]
    wall_seconds: list[float]
    cpu_seconds: list[float]


def load_label(load: float | None) -> str:
    """`native` or the load in percent, e.g. `70%`."""
    return "native" if load is None else f"{load * 100:g}%"


def run_pooling(
    trace: PhillyTrace,
    loads: Sequence[float | None],
    policies: Sequence[str],
    settings: EngineSettings,
    *,
    clock: Callable[[], float],
    cpu_clock: Callable[[], float] | None = None,
    say: Callable[[str], None] = lambda _line: None,
    faults: Faults | None = None,
    what_if: WhatIf | None = None,
) -> list[LoadResult]:
    """Replay `trace` under every policy at every load; `say` gets one line of progress.

    Each replay is timed by `clock` (wall) and `cpu_clock` (this process's CPU time, which
    other jobs on a shared machine inflate less; 0 without one). `faults` injects failures
    into every replay (see `replay`); `what_if` changes every load's cluster.
    """
    results = []
    for load in loads:
        cluster = scale_cluster(trace, load, what_if)
        label = load_label(load)
        runs, figures, walls, cpus = [], [], [], []
        for policy in policies:
            say(f"{label}: {policy} on {cluster.gpus} GPUs (offered {cluster.offered_load:.0%})")
            start = clock()
            cpu_start = cpu_clock() if cpu_clock else 0.0

            def progress(now: float, finished: int, *, _start: float = start) -> None:
                say(f"  day {now / 86_400:5.1f}: {finished} finished, {clock() - _start:.0f} s")

            run = run_policy(trace, cluster, policy, settings, progress=progress, faults=faults)
            walls.append(clock() - start)
            cpus.append(cpu_clock() - cpu_start if cpu_clock else 0.0)
            say(
                f"  done: {run.cycles} cycles ({run.skipped_cycles} idle ones skipped) "
                f"in {walls[-1]:.1f} s ({cpus[-1]:.1f} s CPU)"
            )
            runs.append(run)
            figures.append(figures_of(run))
        results.append(LoadResult(label, cluster, runs, figures, walls, cpus))
    return results


def render_table(results: Sequence[LoadResult]) -> str:
    """The overall table per load, the targets, per-VC figures, and Helios for context."""
    lines: list[str] = []
    for result in results:
        lines += [
            f"load {result.label}: {result.cluster.gpus} GPUs, "
            f"offered load {result.cluster.offered_load:.1%}",
            *_shortfall(result.cluster),
            f"{'policy':<8} {'JCT avg':>8} {'med':>7} {'p99':>8} {'queue avg':>9} {'med':>7} "
            f"{'p99':>8} {'util':>6} {'idle-wait':>10} {'jain':>5} {'preempt':>7} "
            f"{'lost':>8} {'wall':>6} {'cpu':>6}",
        ]
        for figures, wall, cpu in zip(
            result.figures, result.wall_seconds, result.cpu_seconds, strict=True
        ):
            o = figures.overall
            lines.append(
                f"{figures.policy:<8} {_h(o.jct_avg_s):>8} {_h(o.jct_median_s):>7} "
                f"{_h(o.jct_p99_s):>8} {_h(o.queue_avg_s):>9} {_h(o.queue_median_s):>7} "
                f"{_h(o.queue_p99_s):>8} {o.utilisation:>6.1%} "
                f"{figures.idle_waiting_gpu_hours:>10,.0f} {figures.jain_index:>5.2f} "
                f"{o.preemptions:>7,} {o.lost_gpu_hours:>8,.0f} {wall:>5.0f}s {cpu:>5.0f}s"
            )
        lines += _targets(result) + _per_vc(result) + [""]
    lines.append("times in hours; idle-wait and lost in GPU-hours; util = GPU time held / capacity")
    helios = ", ".join(
        f"{k} {jct / 3600:.1f} h / {q / 3600:.2f} h" for k, (jct, q) in HELIOS.items()
    )
    lines.append(f"Helios (Philly, VCs alone), average JCT / queueing: {helios}")
    return "\n".join(lines) + "\n"


def _shortfall(cluster: Cluster) -> list[str]:
    """A line saying the load asked for could not be reached, if so."""
    if cluster.target is None or not cluster.floored:
        return []
    return [
        f"NOT the load asked for: {cluster.target:.0%} asked, {cluster.offered_load:.1%} "
        "reached (every VC keeps the nodes of its largest job, and those alone are more)"
    ]


def _targets(result: LoadResult) -> list[str]:
    by_policy = {figures.policy: figures for figures in result.figures}
    lines = []
    ours = by_policy.get("aistack")
    static = by_policy.get("static")
    if ours and static:
        idle = static.idle_waiting_gpu_hours
        cut = f"{1 - ours.idle_waiting_gpu_hours / idle:.1%}" if idle else "n/a (static: none)"
        queue = ours.overall.queue_avg_s
        ratio = f"{static.overall.queue_avg_s / queue:.1f}x" if queue else "n/a (aistack: none)"
        lines.append(
            f"aistack vs static: idle-while-waiting {cut} fewer (target >= 90%), "
            f"average queueing {ratio} lower (target >= 5x)"
        )
    if ours:
        lines.append(
            f"aistack in-quota jobs: {ours.in_quota_jobs:,}, later than "
            f"{ours.in_quota_bound_s:g} s after their first cycle: {ours.in_quota_late}, "
            f"never started: {ours.in_quota_never_started}, "
            f"longest wait {ours.in_quota_max_wait_s:g} s"
        )
        lines += [
            f"  late: {job.name} of {job.vc}, {job.gpus} GPUs, waited {job.wait_s:g} s"
            for job in ours.in_quota_late_jobs
        ]
    return lines


def _per_vc(result: LoadResult) -> list[str]:
    policies = [figures.policy for figures in result.figures]
    head = "".join(f" {p + ' q-avg':>14} {'due':>5}" for p in policies)
    lines = [f"{'vc':<8} {'quota':>5} {'jobs':>6}{head}"]
    for vc in sorted(result.cluster.vc_nodes):
        cells = "".join(
            f" {_h(f.per_vc[vc].queue_avg_s):>14} {f.per_vc[vc].share_of_due:>5.0%}"
            for f in result.figures
        )
        jobs = result.figures[0].per_vc[vc].jobs
        lines.append(f"{vc:<8} {result.cluster.quota_of(vc):>5} {jobs:>6}{cells}")
    return lines


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.2f}"


def write_outputs(
    results: Sequence[LoadResult], out: Path, *, meta: dict[str, object]
) -> list[Path]:
    """Write `pooling.json` and the plots of every load into `out`; return the paths written."""
    from scheduler_service.sim._pooling_plots import plot_load  # noqa: PLC0415 - matplotlib is slow to import

    out.mkdir(parents=True, exist_ok=True)
    document = {
        "meta": meta,
        "helios_philly_avg_jct_and_queue_s": HELIOS,
        "loads": [
            {
                "load": result.label,
                "load_asked": result.cluster.target,
                "offered_load": result.cluster.offered_load,
                "vc_nodes": dict(result.cluster.vc_nodes),
                "quotas": {vc: result.cluster.quota_of(vc) for vc in result.cluster.vc_nodes},
                "wall_seconds": result.wall_seconds,
                "cpu_seconds": result.cpu_seconds,
                "policies": [figures.to_dict() for figures in result.figures],
            }
            for result in results
        ],
    }
    path = out / "pooling.json"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    written = [path]
    for result in results:
        written += plot_load(result.label, result.runs, out)
    return written
