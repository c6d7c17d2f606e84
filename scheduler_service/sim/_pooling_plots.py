"""Plots of Experiment 2 for one load: utilisation, queueing-delay CDF, VC share against quota.

matplotlib with the Agg backend (no display); PNG files named `<load>-<plot>.png` with the
load's `%` spelled `pct`. Curves come from the ledger's hourly bins, averaged per day for the
share plot so eleven VCs stay readable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from scheduler_service.sim._pooling import PolicyRun

__all__ = ["plot_load"]


def plot_load(label: str, runs: Sequence[PolicyRun], out: Path) -> list[Path]:
    """Write the three plots of one load into `out`; return their paths."""
    stem = label.replace("%", "pct")
    return [
        _utilisation(label, runs, out / f"{stem}-utilisation.png"),
        _queue_cdf(label, runs, out / f"{stem}-queue-cdf.png"),
        _vc_share(label, runs, out / f"{stem}-vc-share.png"),
    ]


def _utilisation(label: str, runs: Sequence[PolicyRun], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(10, 4))
    for run in runs:
        bins = run.ledger.busy_bins
        axes.plot(
            [i / 24 for i in range(len(bins))],
            [b / run.ledger.total_gpus for b in bins],
            label=run.policy,
            linewidth=0.8,
        )
    axes.set(xlabel="day", ylabel="GPUs held / all GPUs (hourly)", title=f"Utilisation, {label}")
    axes.set_ylim(0, 1.05)
    axes.legend()
    return _save(figure, path)


def _queue_cdf(label: str, runs: Sequence[PolicyRun], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(6, 4))
    for run in runs:
        delays = sorted(
            max(r.first_start - r.job.submitted_seconds, 1.0)
            for r in run.records
            if r.first_start is not None
        )
        if delays:
            axes.step(delays, [(i + 1) / len(delays) for i in range(len(delays))], label=run.policy)
    axes.set_xscale("log")
    axes.set(xlabel="queueing delay (s, log; < 1 s shown at 1 s)", ylabel="fraction of jobs")
    axes.set_title(f"Queueing-delay CDF, {label}")
    axes.legend()
    return _save(figure, path)


def _vc_share(label: str, runs: Sequence[PolicyRun], path: Path) -> Path:
    figure, panels = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4), sharey=True)
    for axes, run in zip(panels if len(runs) > 1 else [panels], runs, strict=True):
        ledger = run.ledger
        for vc in ledger.groups:
            quota = ledger.quota[vc]
            hourly = ledger.group_bins[vc]
            if not quota or not hourly:
                continue
            days = [hourly[i : i + 24] for i in range(0, len(hourly), 24)]
            axes.plot(
                range(len(days)), [sum(d) / len(d) / quota for d in days], label=vc, linewidth=0.8
            )
        axes.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
        axes.set(xlabel="day", title=f"{run.policy}, {label}")
    first = panels[0] if len(runs) > 1 else panels
    first.set_ylabel("GPUs held / quota (daily mean)")
    first.legend(fontsize=6, ncol=2)
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
