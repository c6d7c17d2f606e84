"""The benchmarks' target check can fail: a missed figure fails the case (and `scripts/bench`).

These run in the normal test run (they are not benchmarks): they judge made-up figures, and one
deliberately slow "core" against a target it cannot meet.
"""

from __future__ import annotations

import time

import pytest

from tests.benchmarks.targets import Timing, assert_targets_met, missed_targets, timed


def test_a_figure_over_its_target_is_missed() -> None:
    slow = Timing(seconds=(0.4, 0.4, 0.4), cpu_seconds=(0.31, 0.35, 0.32), target_seconds=0.3)

    assert slow.verdict == "MISSED"
    assert missed_targets([("reclaim-64-10000 Scheduler", slow)]) == [
        "reclaim-64-10000 Scheduler: best 310.0 ms CPU, target 300 ms"
    ]


def test_a_figure_within_its_target_or_without_one_is_not_missed() -> None:
    met = Timing(seconds=(0.5, 0.35), cpu_seconds=(0.5, 0.29), target_seconds=0.3)
    untargeted = Timing(seconds=(9.0,), cpu_seconds=(9.0,), target_seconds=None)

    assert (met.verdict, untargeted.verdict) == ("met", "no target")
    assert missed_targets([("met", met), ("growth", untargeted)]) == []


def test_the_best_repeat_s_cpu_time_is_judged() -> None:
    # Wall-clock over the target (the core was shared), CPU time within it.
    timing = Timing(seconds=(0.5, 0.3, 0.4), cpu_seconds=(0.5, 0.1, 0.4), target_seconds=0.2)
    assert timing.verdict == "met"


def test_a_deliberately_slow_core_fails_the_benchmark_assertion() -> None:
    def broken_cycle() -> str:
        # A core that got slower than its 10 ms target (busy, so it shows in CPU time too).
        deadline = time.process_time() + 0.02
        while time.process_time() < deadline:
            pass
        return "plan"

    plan, timing = timed(broken_cycle, repeats=2, target_seconds=0.010)

    assert plan == "plan"
    assert len(timing.seconds) == 2
    with pytest.raises(
        AssertionError, match=r"steady-10000 Scheduler: best \d+\.\d ms CPU, target 10"
    ):
        assert_targets_met([("steady-10000 Scheduler", timing)])


def test_met_targets_pass() -> None:
    assert_targets_met([("fill-1000 schedule", Timing((0.3,), (0.3,), target_seconds=2.0))])
