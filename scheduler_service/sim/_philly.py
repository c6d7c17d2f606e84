"""Reading the Philly trace (Microsoft, Sept-Oct 2017): jobs and virtual-cluster sizes.

Two CSV files (see shared/data/README.md):

- `philly_jobs_2017-09_10.csv`: `timestamp,duration,num_gpus,gpu_time,cluster`, one job a line;
  `timestamp` is `YYYY-MM-DD HH:MM:SS` (UTC assumed), `duration` seconds > 0, `num_gpus` an
  integer >= 1, `gpu_time` = duration x num_gpus, `cluster` the job's virtual cluster (VC);
- `philly_vc.csv`: `vc,node num`, one VC a line; every node has `GPUS_PER_NODE` GPUs.

Every field is checked; a wrong one raises `TraceError` with `<file>:<line>: <what>`. Jobs whose
VC is not in the VC list are kept and counted: they belong to the catch-all VC `UNLISTED_VC`,
which has no nodes (a zero quota), so they run only on GPUs that other VCs leave idle and, in a
static split, never. The loader does no I/O beyond reading the two files it is given.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

__all__ = [
    "GPUS_PER_NODE",
    "JOBS_FILE",
    "UNLISTED_VC",
    "VC_FILE",
    "PhillyJob",
    "PhillyTrace",
    "TraceError",
    "load_philly",
]

GPUS_PER_NODE = 8
JOBS_FILE = "philly_jobs_2017-09_10.csv"
VC_FILE = "philly_vc.csv"
UNLISTED_VC = "unlisted"
"""The catch-all VC (zero nodes) of jobs whose VC is missing from the VC list."""

_JOB_HEADER = ["timestamp", "duration", "num_gpus", "gpu_time", "cluster"]
_VC_HEADER = ["vc", "node num"]


class TraceError(ValueError):
    """A trace file is missing or invalid; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class PhillyJob:
    """One job. `submitted_seconds` counts from the trace's first submission; `line` is its line."""

    name: str
    vc: str
    submitted_seconds: float
    duration_seconds: float
    gpus: int
    line: int


@dataclass(frozen=True, slots=True)
class PhillyTrace:
    """The jobs in submission order (ties by line) and the VCs' node counts.

    `vc_nodes` includes `UNLISTED_VC` (0 nodes) only when some job needed it; `unlisted_jobs`
    counts those jobs.
    """

    jobs: tuple[PhillyJob, ...]
    vc_nodes: dict[str, int]
    unlisted_jobs: int
    start: datetime

    def offered_load(self, gpus: int) -> float:
        """GPU time asked / GPU time of `gpus` GPUs from the first to the last submission."""
        span = self.jobs[-1].submitted_seconds - self.jobs[0].submitted_seconds if self.jobs else 0
        asked = sum(job.gpus * job.duration_seconds for job in self.jobs)
        return asked / (gpus * span) if gpus and span else 0.0

    @property
    def label(self) -> str:
        """The submission window as dates, e.g. `2017-10-03..2017-10-17`."""
        last = self.start + timedelta(seconds=self.jobs[-1].submitted_seconds if self.jobs else 0)
        return f"{self.start:%Y-%m-%d}..{last:%Y-%m-%d}"

    def periods(self, count: int) -> list[PhillyTrace]:
        """The trace cut into `count` consecutive periods of (about) equal numbers of jobs.

        Each period is a trace of its own: times count from its first submission, and it keeps
        every listed VC (and `UNLISTED_VC` only when one of its jobs needs it). A way to check
        a result on parts of the trace it was not tuned to.
        """
        if not 1 <= count <= max(1, len(self.jobs)):
            raise ValueError(f"periods must be between 1 and {len(self.jobs)} (jobs), got {count}")
        cuts = [len(self.jobs) * i // count for i in range(count + 1)]
        return [self._part(self.jobs[low:high]) for low, high in itertools.pairwise(cuts)]

    def _part(self, jobs: tuple[PhillyJob, ...]) -> PhillyTrace:
        first = jobs[0].submitted_seconds
        moved = tuple(replace(job, submitted_seconds=job.submitted_seconds - first) for job in jobs)
        unlisted = sum(job.vc == UNLISTED_VC for job in jobs)
        vc_nodes = {vc: n for vc, n in self.vc_nodes.items() if vc != UNLISTED_VC or unlisted}
        return PhillyTrace(moved, vc_nodes, unlisted, self.start + timedelta(seconds=first))


def load_philly(directory: Path, *, limit_jobs: int | None = None) -> PhillyTrace:
    """Read `JOBS_FILE` and `VC_FILE` from `directory`; keep the first `limit_jobs` submitted.

    Raises `TraceError` for a missing file, a wrong header, or any invalid field.
    """
    vc_nodes = _read_vcs(directory / VC_FILE)
    raw = _read_jobs(directory / JOBS_FILE)
    raw.sort(key=lambda row: (row[0], row[4]))
    if limit_jobs is not None:
        raw = raw[:limit_jobs]
    start = raw[0][0] if raw else datetime(2017, 9, 1, tzinfo=UTC)
    unlisted = 0
    jobs = []
    for at, duration, gpus, listed, line in raw:
        vc = listed if listed in vc_nodes else UNLISTED_VC
        unlisted += vc == UNLISTED_VC
        submitted = (at - start).total_seconds()
        jobs.append(PhillyJob(f"job-{line:05d}", vc, submitted, duration, gpus, line))
    if unlisted:
        vc_nodes[UNLISTED_VC] = 0
    return PhillyTrace(tuple(jobs), vc_nodes, unlisted, start)


def _rows(path: Path, header: list[str]) -> list[tuple[int, list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as file:
            lines = list(csv.reader(file))
    except OSError as error:
        raise TraceError(f"{path}: cannot read: {error.strerror or error}") from error
    if not lines or [cell.strip() for cell in lines[0]] != header:
        found = ",".join(lines[0]) if lines else "an empty file"
        raise TraceError(f"{path}:1: expected the header {','.join(header)!r}, found {found!r}")
    rows = []
    for number, cells in enumerate(lines[1:], start=2):
        if not cells:
            continue
        if len(cells) != len(header):
            raise TraceError(f"{path}:{number}: expected {len(header)} fields, got {len(cells)}")
        rows.append((number, cells))
    return rows


def _read_vcs(path: Path) -> dict[str, int]:
    vc_nodes: dict[str, int] = {}
    for number, (vc, nodes) in _rows(path, _VC_HEADER):
        where = f"{path}:{number}"
        if not vc or vc == UNLISTED_VC:
            raise TraceError(f"{where}: vc must be a non-empty name other than {UNLISTED_VC!r}")
        if vc in vc_nodes:
            raise TraceError(f"{where}: vc {vc!r} is listed twice")
        vc_nodes[vc] = _integer(nodes, where, "node num", minimum=1)
    if not vc_nodes:
        raise TraceError(f"{path}: lists no virtual cluster")
    return vc_nodes


def _read_jobs(path: Path) -> list[tuple[datetime, float, int, str, int]]:
    jobs = []
    for number, (stamp, duration, gpus, gpu_time, vc) in _rows(path, _JOB_HEADER):
        where = f"{path}:{number}"
        try:
            at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            raise TraceError(
                f"{where}: timestamp must be YYYY-MM-DD HH:MM:SS, got {stamp!r}"
            ) from None
        seconds = _positive(duration, where, "duration")
        count = _integer(gpus, where, "num_gpus", minimum=1)
        total = _positive(gpu_time, where, "gpu_time")
        if not math.isclose(total, seconds * count, rel_tol=1e-6, abs_tol=1e-3):
            raise TraceError(
                f"{where}: gpu_time {total:g} is not duration x num_gpus ({seconds * count:g})"
            )
        if not vc:
            raise TraceError(f"{where}: cluster (the VC) must not be empty")
        jobs.append((at, seconds, count, vc, number))
    return jobs


def _positive(text: str, where: str, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{where}: {field} must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise TraceError(f"{where}: {field} must be a finite number > 0, got {text!r}")
    return value


def _integer(text: str, where: str, field: str, *, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise TraceError(f"{where}: {field} must be an integer, got {text!r}") from None
    if value < minimum:
        raise TraceError(f"{where}: {field} must be >= {minimum}, got {value}")
    return value
