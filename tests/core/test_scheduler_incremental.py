"""`Scheduler` keeps the core warm between cycles; it must decide exactly as `schedule` does.

Random event histories (submit, carry out admissions and evictions, finish, requeue, node
loss) drive a `Scheduler`; after every step its plan must equal `schedule` on its snapshot,
and carrying out that plan must keep every invariant. A cycle without reasons
(`explain=False`) must decide the same and change nothing either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_service.core import (
    Plan,
    Scheduler,
    SchedulerError,
    WaitingForEviction,
    WorkloadState,
    check_plan,
    schedule,
)
from tests.core.builders import make_node, make_queue, make_step, pod_on
from tests.core.strategies import clusters, queue_trees, workloads

STEPS = 8


def _carry_out(scheduler: Scheduler, plan: Plan, now: float) -> None:
    for admission in plan.admissions:
        scheduler.started(admission.workload, admission.allocation, now)
    for eviction in plan.evictions:
        scheduler.evicting(eviction.workload)


@given(st.data())
def test_scheduler_decides_as_schedule_does_after_any_history(data: st.DataObject) -> None:
    nodes = data.draw(clusters(max_nodes=6))
    pools = sorted({n.pool for n in nodes})
    queues = data.draw(queue_trees(pools, contended=data.draw(st.booleans())))
    scheduler = Scheduler(nodes, queues)
    now = 0.0
    count = 0
    for _ in range(STEPS):
        for _ in range(data.draw(st.integers(0, 3))):
            count += 1
            scheduler.submit(data.draw(workloads(f"w{count:03}", queues, pools, submitted_at=now)))
        snapshot = scheduler.snapshot()
        # Decisions alone first: the same decisions, and the world left as it was found.
        decided = scheduler.cycle(now, explain=False)
        plan = scheduler.cycle(now)
        assert plan == schedule(snapshot, now)
        assert decided == replace(plan, pending=())
        assert check_plan(snapshot, plan) == []
        _carry_out(scheduler, plan, now)
        now += 60.0
        placed = [w for w in scheduler.snapshot().workloads if w.state is not WorkloadState.PENDING]
        for workload in placed:
            event = data.draw(st.sampled_from(("keep", "keep", "finish", "requeue")))
            if event == "finish":
                scheduler.finished(workload.name)
            elif event == "requeue" or workload.state is WorkloadState.EVICTING:
                scheduler.requeued(workload.name)
        if data.draw(st.sampled_from((False, False, False, True))):
            node = data.draw(st.sampled_from(nodes))
            scheduler.set_node_ready(node.name, data.draw(st.sampled_from((True, False))))
    assert scheduler.cycle(now) == schedule(scheduler.snapshot(), now)


def test_decisions_alone_still_use_room_being_freed_in_a_single_queue() -> None:
    # One queue, so reclaim has nothing to take, but room is being freed (e, evicting): the
    # decisions-only cycle must not skip what uses it. w waits for e's GPUs rather than
    # preempting l, and both forms of the cycle decide so.
    scheduler = Scheduler([make_node("n1", gpus=8)], [make_queue("team", quota=8)])
    for name, gpus in (("e", (0, 1, 2, 3)), ("l", (4, 5, 6, 7))):
        scheduler.submit(make_step(name, "team", gpus=4))
        scheduler.started(name, (pod_on("n1", *gpus),), 0.0)
    scheduler.evicting("e")
    scheduler.submit(make_step("w", "team", gpus=4, priority=5))
    plan = scheduler.cycle(100.0)
    assert plan.evictions == ()
    assert isinstance(plan.reason_for("w"), WaitingForEviction)
    assert scheduler.cycle(100.0, explain=False) == replace(plan, pending=())


def test_a_cycle_leaves_the_scheduler_unchanged() -> None:
    scheduler = Scheduler([make_node("n1", gpus=8)], [make_queue("a", quota=2)])
    scheduler.submit(make_step("train", "a", gpus=4, pods=2))
    first = scheduler.cycle(10.0)
    assert first.admissions
    assert scheduler.cycle(10.0) == first
    assert scheduler.snapshot().workloads[0].state is WorkloadState.PENDING


def test_a_node_removed_under_running_work_is_refused_and_an_added_node_is_used() -> None:
    scheduler = Scheduler([make_node("n1", gpus=2)], [make_queue("a", quota=4)])
    scheduler.submit(make_step("train", "a", gpus=2, pods=2))
    assert not scheduler.cycle(0.0).admissions
    scheduler.set_nodes([make_node("n1", gpus=2), make_node("n2", gpus=2)])
    (admission,) = scheduler.cycle(0.0).admissions
    scheduler.started(admission.workload, admission.allocation, 0.0)
    before = scheduler.snapshot()
    with pytest.raises(SchedulerError, match="unknown node 'n2'"):
        scheduler.set_nodes([make_node("n1", gpus=2)])
    assert scheduler.snapshot() == before


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda s: s.submit(make_step("train", "a", gpus=1)), "a workload of that name exists"),
        (lambda s: s.evicting("ghost"), "no running or evicting workload"),
        (lambda s: s.finished("ghost"), "no such workload"),
        (lambda s: s.started("train", (pod_on("n9", 0),), 0.0), "does not match the cluster"),
        (lambda s: s.started("train", (pod_on("n1", 0), pod_on("n1", 1)), 0.0), "allocation has 2"),
        (lambda s: s.set_node_ready("n9", False), "no such node"),
        (lambda s: s.set_nodes([make_node("n1", gpus=2), make_node("n1", gpus=2)]), "duplicate"),
    ],
)
def test_reports_that_do_not_fit_are_refused_and_change_nothing(
    action: Callable[[Scheduler], object], message: str
) -> None:
    scheduler = Scheduler([make_node("n1", gpus=2)], [make_queue("a", quota=2)])
    scheduler.submit(make_step("train", "a", gpus=1))
    before = scheduler.snapshot()
    with pytest.raises(SchedulerError, match=message):
        action(scheduler)
    assert scheduler.snapshot() == before
