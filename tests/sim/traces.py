"""Tiny trace files on disk, for tests that run the `aistack sim` commands end to end."""

from __future__ import annotations

from pathlib import Path


def write_philly(folder: Path) -> Path:
    """A tiny Philly trace in `folder`: two VCs of one node each, six jobs a minute apart."""
    (folder / "philly_vc.csv").write_text("vc,node num\na,1\nb,1\n", encoding="utf-8")
    lines = [
        f"2017-10-01 00:{i:02d}:00,{600 + 60 * i}.0,{g},{(600 + 60 * i) * g}.0,{'ab'[i % 2]}"
        for i, g in enumerate([8, 8, 4, 1, 2, 8])
    ]
    (folder / "philly_jobs_2017-09_10.csv").write_text(
        "timestamp,duration,num_gpus,gpu_time,cluster\n" + "\n".join(lines) + "\n",
        encoding="utf-8",
    )
    return folder
