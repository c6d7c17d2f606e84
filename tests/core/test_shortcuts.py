"""The cycle's shortcuts decide exactly as the plain searches they stand in for.

A replay runs tens of thousands of cycles, so the cycle skips work it can prove useless: a
reclaim search whose workload cannot fit even if every candidate went (`ReclaimRoom.may_fit`,
from GPU counts the world keeps between cycles when minimum runtimes cannot matter), a
placement of a shape that already failed in phase 3 (`_fails_for_good`), the rest of a queue
that can change nothing (`_rest_cannot_change`), the reclaim checks of a queue none of whose
workloads may reclaim (`_none_entitled`), reclaim searches when one queue alone has work and
no reasons are wanted (`_nothing_to_take`), the reserved nodes read off the pool's buckets
(`_fullest_nodes`), one reason per class of workloads and one holder search per shape in
phase 6, and the fullest node read off the buckets. Each test runs the cycle with
`shortcuts=False` as well and compares plans: the fast algorithm checked against the naive one.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings

from scheduler_service.core import Plan, Scheduler, Snapshot, _reclaim, schedule
from scheduler_service.core._victims import VictimSearch, find_victims
from tests.core.builders import make_node, make_queue, make_snapshot, make_step, pod_on, run
from tests.core.strategies import Cycle, any_cycles

EXAMPLES = 200


def plain_searches(snapshot: Snapshot, now: float, *, explain: bool = True) -> Plan:
    """The cycle with every shortcut off: it searches, sorts and scans as if it knew nothing."""
    return Scheduler.from_snapshot(snapshot).cycle(now, explain=explain, shortcuts=False)


@settings(max_examples=EXAMPLES)
@given(any_cycles())
def test_the_shortcuts_do_not_change_the_plan(cycle: Cycle) -> None:
    assert plain_searches(cycle.snapshot, cycle.now) == schedule(cycle.snapshot, cycle.now)


@settings(max_examples=EXAMPLES)
@given(any_cycles())
def test_the_shortcuts_do_not_change_the_decisions_alone(cycle: Cycle) -> None:
    fast = Scheduler.from_snapshot(cycle.snapshot).cycle(cycle.now, explain=False)
    assert plain_searches(cycle.snapshot, cycle.now, explain=False) == fast


def test_a_reclaim_that_cannot_fit_is_not_searched(monkeypatch: pytest.MonkeyPatch) -> None:
    # Queue b borrows 4 GPUs on each node, beside a's work within a's quota: reclaim may take
    # b's but never a's, so no node can be emptied for c's 8-GPU step.
    nodes = [make_node("n1", gpus=8), make_node("n2", gpus=8)]
    queues = [make_queue("a", quota=8), make_queue("b", quota=0), make_queue("c", quota=8)]
    workloads = [
        run(make_step("a1", "a", gpus=4), pod_on("n1", 0, 1, 2, 3)),
        run(make_step("a2", "a", gpus=4), pod_on("n2", 0, 1, 2, 3)),
        run(make_step("b1", "b", gpus=4), pod_on("n1", 4, 5, 6, 7)),
        run(make_step("b2", "b", gpus=4), pod_on("n2", 4, 5, 6, 7)),
        make_step("c1", "c", gpus=8),
    ]
    snapshot = make_snapshot(nodes, queues, workloads)
    searches: list[str] = []

    def counted(*args: Any, **kwargs: Any) -> VictimSearch | None:
        searches.append("search")
        return find_victims(*args, **kwargs)

    monkeypatch.setattr(_reclaim, "find_victims", counted)  # a spy: it only counts the calls
    fast = schedule(snapshot, 100.0)
    assert searches == []
    plain = plain_searches(snapshot, 100.0)
    assert searches == ["search"]
    assert fast == plain
    assert not fast.evictions


def test_a_reclaim_for_guaranteed_quota_counts_victims_within_their_fair_share() -> None:
    # a borrows 8 GPUs, 4 on each node, and its fair share is those 8 once c asks; c takes back
    # its guaranteed quota, so reclaim may take a's work although a is within its fair share.
    nodes = [make_node("n1", gpus=8), make_node("n2", gpus=8)]
    queues = [make_queue("a", quota=0), make_queue("c", quota=8)]
    workloads = [
        run(make_step("a1", "a", gpus=4), pod_on("n1", 0, 1, 2, 3)),
        run(make_step("a2", "a", gpus=4), pod_on("n2", 0, 1, 2, 3)),
        make_step("c1", "c", gpus=8),
    ]
    snapshot = make_snapshot(nodes, queues, workloads)
    fast = schedule(snapshot, 100.0)
    assert plain_searches(snapshot, 100.0) == fast
    assert [e.workload for e in fast.evictions] == ["a1"]


def test_a_blocked_head_does_not_keep_smaller_work_of_its_queue_out() -> None:
    # The 8-GPU head fits nowhere and reserves n1; the queue's next step still fits on n2.
    nodes = [make_node("n1", gpus=8), make_node("n2", gpus=8)]
    queues = [make_queue("a", quota=16), make_queue("b", quota=0)]
    workloads = [
        run(make_step("b1", "b", gpus=4), pod_on("n1", 0, 1, 2, 3)),
        run(make_step("b2", "b", gpus=6), pod_on("n2", 0, 1, 2, 3, 4, 5)),
        make_step("big", "a", gpus=8, submitted_at=1.0),
        make_step("small", "a", gpus=1, submitted_at=2.0),
    ]
    snapshot = make_snapshot(nodes, queues, workloads)
    fast = schedule(snapshot, 100.0)
    assert plain_searches(snapshot, 100.0) == fast
    assert [a.workload for a in fast.admissions] == ["small"]
    assert [pod.node for pod in fast.admissions[0].allocation] == ["n2"]
