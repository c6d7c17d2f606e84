"""Properties of `schedule` on random snapshots: DESIGN.md's invariants, determinism, reasons.

The snapshots come from `strategies.any_cycles`: random clusters (several pools, mixed memory,
topology, nodes not ready, taints), queue trees (oversubscribed quotas, limits, zero weights),
and RUNNING, EVICTING and PENDING work, some of it a user's mistake.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_service.core import Snapshot, check_plan, schedule
from tests.core.builders import apply
from tests.core.strategies import Cycle, any_cycles, cycles

EXAMPLES = 150
T = TypeVar("T")


@settings(max_examples=EXAMPLES)
@given(any_cycles())
def test_plans_keep_every_invariant(cycle: Cycle) -> None:
    plan = schedule(cycle.snapshot, cycle.now)
    assert check_plan(cycle.snapshot, plan) == []


@settings(max_examples=EXAMPLES // 2)
@given(any_cycles())
def test_the_next_cycle_on_the_applied_plan_keeps_every_invariant(cycle: Cycle) -> None:
    after = apply(cycle.snapshot, schedule(cycle.snapshot, cycle.now), cycle.now)
    plan = schedule(after, cycle.now + 1)
    assert check_plan(after, plan) == []


@settings(max_examples=EXAMPLES // 2)
@given(cycles(keep_work_on_lost_nodes=True))
def test_work_still_on_a_node_that_went_not_ready_keeps_every_invariant(cycle: Cycle) -> None:
    plan = schedule(cycle.snapshot, cycle.now)
    assert check_plan(cycle.snapshot, plan) == []


@settings(max_examples=EXAMPLES // 2)
@given(any_cycles())
def test_the_same_snapshot_gives_the_same_plan(cycle: Cycle) -> None:
    assert schedule(cycle.snapshot, cycle.now) == schedule(cycle.snapshot, cycle.now)


@settings(max_examples=EXAMPLES)
@given(any_cycles(), st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_the_order_of_the_snapshot(
    cycle: Cycle, rng: random.Random
) -> None:
    shuffled = _shuffled(cycle.snapshot, rng)
    assert schedule(shuffled, cycle.now) == schedule(cycle.snapshot, cycle.now)


@settings(max_examples=EXAMPLES // 2)
@given(any_cycles())
def test_every_pending_workload_gets_one_reason_with_a_message(cycle: Cycle) -> None:
    plan = schedule(cycle.snapshot, cycle.now)
    for entry in plan.pending:
        assert entry.reason.message.strip(), f"{entry.workload}: {entry.reason!r}"
        assert entry.reason.code


def _shuffled(snapshot: Snapshot, rng: random.Random) -> Snapshot:
    """The same snapshot with nodes, GPUs, queues, quotas and workloads in another order."""

    def mix(items: tuple[T, ...]) -> tuple[T, ...]:
        return tuple(rng.sample(items, len(items)))

    return replace(
        snapshot,
        nodes=mix(tuple(replace(node, gpus=mix(node.gpus)) for node in snapshot.nodes)),
        queues=mix(tuple(replace(queue, quotas=mix(queue.quotas)) for queue in snapshot.queues)),
        workloads=mix(snapshot.workloads),
    )
