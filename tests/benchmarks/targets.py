"""Timing a benchmark run and judging it against its target: plain functions, tested alone.

A benchmark that only prints "MISSED" passes whatever the figure; each benchmark case ends
with `assert_targets_met`, so a figure over its target fails the case and `scripts/bench` exits
non-zero.

Each repeat is timed twice: wall-clock (`time.perf_counter`) and the process's CPU time
(`time.process_time`). The core is single-threaded and does no I/O, so on a quiet machine the
two agree; on a shared one, wall-clock also counts the time other processes held the core. The
target is judged on CPU time, which other processes disturb much less (not at all only on a
core of its own; docs/benchmarks.md says by how much), and both are reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

_T = TypeVar("_T")


@dataclass(frozen=True)
class Timing:
    """The seconds of each repeat of one run, wall-clock and CPU, and its target."""

    seconds: tuple[float, ...]
    """Wall-clock seconds of each repeat."""
    cpu_seconds: tuple[float, ...]
    """CPU seconds of each repeat (this process)."""
    target_seconds: float | None
    """None where the run has no target (it only shows how cost grows)."""

    @property
    def best_seconds(self) -> float:
        """The best repeat's CPU time: what the target is judged on."""
        return min(self.cpu_seconds)

    @property
    def best_wall_seconds(self) -> float:
        return min(self.seconds)

    @property
    def verdict(self) -> str:
        """`met`, `MISSED`, or `no target`."""
        if self.target_seconds is None:
            return "no target"
        return "met" if self.best_seconds <= self.target_seconds else "MISSED"

    def __str__(self) -> str:
        shown = (
            f"best {self.best_seconds * 1000:8.1f} ms CPU, "
            f"{self.best_wall_seconds * 1000:8.1f} ms wall"
        )
        if self.target_seconds is None:
            return f"{shown}  (no target)"
        return f"{shown}  (target {self.target_seconds * 1000:g} ms, {self.verdict})"


def timed(
    run: Callable[[], _T], *, repeats: int, target_seconds: float | None
) -> tuple[_T, Timing]:
    """Call `run` `repeats` times (at least once); its last result and each call's times."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = run()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    if not wall:
        raise ValueError("repeats must be at least 1")
    return result, Timing(tuple(wall), tuple(cpu), target_seconds)


def missed_targets(results: Iterable[tuple[str, Timing]]) -> list[str]:
    """One line per named timing that misses its target (empty when every target is met)."""
    return [
        f"{name}: best {timing.best_seconds * 1000:.1f} ms CPU, target {target * 1000:g} ms"
        for name, timing in results
        if (target := timing.target_seconds) is not None and timing.best_seconds > target
    ]


def assert_targets_met(results: Iterable[tuple[str, Timing]]) -> None:
    """Fail (AssertionError) naming every timing that misses its target."""
    missed = missed_targets(results)
    assert not missed, "missed: " + "; ".join(missed)
