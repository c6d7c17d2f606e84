"""Scheduling-core bugs the simulator found, replayed so that they stay fixed.

Each test names the situation and states the correct behaviour;
`testdata/priority_preemption.toml` tells the first story in full.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from scheduler_service.sim import (
    Admitted,
    Evicted,
    load_scenario,
    parse_scenario,
    run_scenario,
)

TESTDATA = Path(__file__).parent / "testdata"


def test_preemption_evicts_once_while_the_victim_is_still_leaving() -> None:
    """Room being made by an EVICTING workload counts: no second victim during its grace period."""
    scenario = load_scenario(TESTDATA / "priority_preemption.toml")
    scenario = replace(scenario, settings=replace(scenario.settings, eviction_grace_seconds=60))

    result = run_scenario(scenario)

    assert [e.workload for e in result.timeline if isinstance(e, Evicted)] == ["sweep-1"]


def _starvation_scenario() -> str:
    head = """
        [cluster]
        [[cluster.nodes]]
        name = "n"
        count = 2
        gpus = 8

        [[queues]]
        name = "team"
        quota = 16

        [[events]]
        at = 60
        submit = "gang"
        queue = "team"
        pods = 2
        gpus = 8
        duration_seconds = 600
    """
    first = [
        f'[[events]]\nat = 0\nsubmit = "first-{i}"\nqueue = "team"\ngpus = 2\n'
        f"duration_seconds = {300 + 100 * i}\n"
        for i in range(8)
    ]
    stream = [
        f'[[events]]\nat = {120 + 100 * k}\nsubmit = "later-{k}"\nqueue = "team"\ngpus = 2\n'
        "duration_seconds = 800\n"
        for k in range(30)
    ]
    lines = [line.strip() for line in head.splitlines()]
    return "\n".join([*lines, *first, *stream, "[run]\nuntil = 4000\n"])


def test_gang_at_the_head_of_its_queue_is_not_starved_by_later_small_jobs() -> None:
    """The queue's own running work does not disqualify its head-of-line gang from a reservation."""
    result = run_scenario(parse_scenario(_starvation_scenario(), source="starvation"))

    started = [e.at for e in result.timeline if isinstance(e, Admitted) and e.workload == "gang"]
    # The eight jobs running when the gang arrived are all gone by t=1000; a reservation keeps
    # the later jobs off the freed GPUs, so the gang starts then.
    assert started == [1000]
