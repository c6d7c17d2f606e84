"""Run experiment 1 over seeds and policies, and report it: a table, a JSON file, a plot.

`run_experiment` plays every (policy, seed) pair, on worker processes when asked (each pair is
independent and deterministic, so the result does not depend on the number of workers), and
tells progress as pairs finish. `render_table`, `write_json` and `write_plot` turn the result
into what `aistack sim fragmentation` prints and writes.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from scheduler_service.core import Node
from scheduler_service.sim._fragmentation import ARRIVED_PERCENT, Run, run_policy
from scheduler_service.sim._openb import OpenbPod

__all__ = [
    "PUBLISHED",
    "FragmentationResult",
    "render_table",
    "run_experiment",
    "write_json",
    "write_plot",
]

PUBLISHED: dict[str, dict[str, float]] = {
    "default": {"fgd": 95.39, "bestfit": 93.08, "random": 87.47},
    "gpushare40": {"fgd": 94.15, "bestfit": 91.69, "random": 86.00},
    "gpushare60": {"fgd": 91.40, "bestfit": 89.36, "random": 83.65},
    "gpushare80": {"fgd": 89.31, "bestfit": 87.01, "random": 81.22},
    "multigpu20": {"fgd": 95.65, "bestfit": 93.93, "random": 88.69},
    "multigpu30": {"fgd": 96.46, "bestfit": 94.72, "random": 89.27},
    "multigpu40": {"fgd": 96.99, "bestfit": 95.23, "random": 90.09},
    "cpu050": {"fgd": 95.21, "bestfit": 93.79, "random": 91.24},
}
"""GPU allocation (%) at 130% arrived, mean of seeds 42-51, from the FGD paper's simulator
(see ../shared/data/README.md). The core's target is FGD's figure."""


@dataclass(frozen=True, slots=True)
class FragmentationResult:
    """Every run of one experiment, with what it ran on and how long it took."""

    trace: str
    seeds: tuple[int, ...]
    policies: tuple[str, ...]
    runs: tuple[Run, ...]
    wall_seconds: float
    workers: int

    def of(self, policy: str) -> list[Run]:
        """The runs of `policy`, by seed."""
        return [r for r in self.runs if r.policy == policy]

    def mean_final(self, policy: str) -> float:
        """Mean allocated share (0-1) at 130% arrived over the seeds."""
        return statistics.fmean(r.final for r in self.of(policy))

    def mean_curve(self, policy: str) -> list[float]:
        """Mean allocated share at each arrived percent 0..130."""
        runs = self.of(policy)
        return [statistics.fmean(r.allocated[i] for r in runs) for i in range(ARRIVED_PERCENT + 1)]


_Task = tuple[str, int]
_shared: tuple[tuple[Node, ...], tuple[OpenbPod, ...]] | None = None


def _init(nodes: tuple[Node, ...], pods: tuple[OpenbPod, ...]) -> None:
    global _shared  # noqa: PLW0603 - one worker process's read-only inputs, set once
    _shared = (nodes, pods)


def _play(task: _Task) -> tuple[Run, float]:
    assert _shared is not None
    start = time.perf_counter()
    run = run_policy(task[0], _shared[0], _shared[1], task[1])
    return run, time.perf_counter() - start


def run_experiment(
    nodes: tuple[Node, ...],
    pods: tuple[OpenbPod, ...],
    *,
    trace: str,
    seeds: Sequence[int],
    policies: Sequence[str],
    workers: int = 1,
    progress: Callable[[str], None] | None = None,
) -> FragmentationResult:
    """Run every policy on every seed; `progress` is told one line per finished run."""
    tasks = [(policy, seed) for seed in seeds for policy in policies]
    start = time.perf_counter()
    done: dict[_Task, Run] = {}

    def report(run: Run, seconds: float) -> None:
        done[run.policy, run.seed] = run
        if progress is not None:
            progress(
                f"[{len(done)}/{len(tasks)}] {trace} {run.policy:<8} seed {run.seed}: "
                f"{run.final * 100:.2f}% allocated, {run.failed_pods} pods failed ({seconds:.1f} s)"
            )

    if workers <= 1:
        _init(nodes, pods)
        for task in tasks:
            report(*_play(task))
    else:
        with ProcessPoolExecutor(workers, initializer=_init, initargs=(nodes, pods)) as pool:
            for run, seconds in pool.map(_play, tasks):
                report(run, seconds)
    return FragmentationResult(
        trace=trace,
        seeds=tuple(seeds),
        policies=tuple(policies),
        runs=tuple(done[task] for task in tasks),
        wall_seconds=time.perf_counter() - start,
        workers=workers,
    )


def render_table(result: FragmentationResult) -> str:
    """The results table: mean/min/max allocation at 130% arrived, and the published figure."""
    published = PUBLISHED.get(result.trace, {})
    width = max(8, *(len(policy) for policy in result.policies))
    lines = [
        f"openb {result.trace}: GPU allocation at {ARRIVED_PERCENT}% arrived, "
        f"{len(result.seeds)} seed(s) {_seed_span(result.seeds)}",
        "",
        f"{'policy':<{width}}  mean %   min %   max %  failed pods  published %",
    ]
    for policy in result.policies:
        runs = result.of(policy)
        finals = [r.final * 100 for r in runs]
        figure = published.get(policy)
        lines.append(
            f"{policy:<{width}} {statistics.fmean(finals):7.2f}"
            f" {min(finals):7.2f} {max(finals):7.2f}"
            f"  {statistics.fmean(r.failed_pods for r in runs):11.0f}"
            f"  {f'{figure:11.2f}' if figure is not None else '          -'}"
        )
    target = published.get("fgd")
    if target is not None and "aistack" in result.policies:
        mean = result.mean_final("aistack") * 100
        verdict = "met" if mean >= target else f"MISSED by {target - mean:.2f} points"
        lines += ["", f"target: aistack at least FGD's published {target:.2f}%: {verdict}"]
    lines.append(f"wall time {result.wall_seconds:.1f} s on {result.workers} worker(s)")
    return "\n".join(lines) + "\n"


def write_json(result: FragmentationResult, path: Path) -> None:
    """The machine-readable result: per policy the mean, every seed's figure, the mean curve."""
    payload = {
        "experiment": "fragmentation",
        "trace": result.trace,
        "seeds": list(result.seeds),
        "arrived_percent": list(range(ARRIVED_PERCENT + 1)),
        "wall_seconds": round(result.wall_seconds, 1),
        "workers": result.workers,
        "published_percent": PUBLISHED.get(result.trace, {}),
        "policies": {
            policy: {
                "mean_percent": round(result.mean_final(policy) * 100, 3),
                "per_seed_percent": {
                    str(r.seed): round(r.final * 100, 3) for r in result.of(policy)
                },
                "failed_pods": {str(r.seed): r.failed_pods for r in result.of(policy)},
                "mean_curve_percent": [round(v * 100, 3) for v in result.mean_curve(policy)],
            }
            for policy in result.policies
        },
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def write_plot(result: FragmentationResult, path: Path) -> None:
    """Allocation against arrivals, one curve per policy (mean over the seeds); PNG or SVG."""
    import matplotlib  # noqa: PLC0415 - only the commands that plot pay for matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    figure, axes = pyplot.subplots(figsize=(6.4, 4.0), dpi=90)
    arrived = list(range(ARRIVED_PERCENT + 1))
    for policy in result.policies:
        label = f"{policy} ({result.mean_final(policy) * 100:.2f}%)"
        axes.plot(arrived, [v * 100 for v in result.mean_curve(policy)], label=label)
    axes.plot(arrived, arrived, color="grey", linestyle=":", linewidth=0.8, label="all arrived")
    axes.set_xlim(0, ARRIVED_PERCENT)
    axes.set_ylim(0, 100)
    axes.set_xlabel("GPU request arrived (% of capacity)")
    axes.set_ylabel("GPU allocated (% of capacity)")
    axes.set_title(f"openb {result.trace}: allocation vs arrivals, {len(result.seeds)} seed(s)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


def _seed_span(seeds: Sequence[int]) -> str:
    ordered = sorted(seeds)
    if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 1:
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(str(s) for s in seeds)
