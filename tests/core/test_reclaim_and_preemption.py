"""Phases 4 and 5: reclaim across queues by fair share and quota, preemption inside a queue."""

from __future__ import annotations

from dataclasses import replace

from scheduler_service.core import (
    EvictionCause,
    InsufficientCapacity,
    Kind,
    Plan,
    Policy,
    Snapshot,
    WaitingForEviction,
    Workload,
    check_plan,
    schedule,
)
from tests.core.builders import (
    admitted,
    evicting,
    make_node,
    make_queue,
    make_snapshot,
    make_step,
    pod_on,
    reason,
    run,
)

NODE = make_node("n1", gpus=8)
QUEUES = [make_queue("mine", quota=4), make_queue("theirs", quota=4)]


def decide(snapshot: Snapshot, now: float = 1000.0) -> Plan:
    plan = schedule(snapshot, now)
    assert check_plan(snapshot, plan) == []
    return plan


def borrowed(*sizes: int, queue: str = "theirs", kind: Kind = Kind.TRAIN) -> list[Workload]:
    """RUNNING work of `queue`, one workload per size, packed onto n1 from GPU 0, started at 0."""
    workloads, first = [], 0
    for i, size in enumerate(sizes):
        step = make_step(f"{queue}-{i}", queue, gpus=size, kind=kind)
        workloads.append(run(step, pod_on("n1", *range(first, first + size)), started_at=0.0))
        first += size
    return workloads


def evicted(plan: Plan) -> dict[str, EvictionCause]:
    return {e.workload: e.cause for e in plan.evictions}


# -- reclaim ----------------------------------------------------------------------------------


def test_a_queue_below_its_fair_share_reclaims_borrowed_gpus() -> None:
    snapshot = make_snapshot([NODE], QUEUES, [*borrowed(4, 4), make_step("want", "mine", gpus=4)])
    plan = decide(snapshot)
    assert len(plan.evictions) == 1
    (eviction,) = plan.evictions
    assert eviction.cause is EvictionCause.RECLAIM
    assert eviction.beneficiary == "want"
    assert eviction.message.startswith("reclaimed for want: queue theirs held 8 GPUs")
    why = reason(plan, "want")
    assert isinstance(why, WaitingForEviction)
    assert (why.victims, why.freed_milli) == ((eviction.workload,), 4000)
    assert why.message == (
        "waiting for 4 GPUs in pool h100 to be released by 1 evicted workload(s): "
        f"{eviction.workload}"
    )


def test_reclaim_takes_the_most_recently_started_work_first() -> None:
    older, newer = borrowed(4, 4)
    newer = replace(newer, started_at=500.0)
    snapshot = make_snapshot([NODE], QUEUES, [older, newer, make_step("want", "mine", gpus=4)])
    assert evicted(decide(snapshot)) == {"theirs-1": EvictionCause.RECLAIM}


def test_reclaim_takes_the_fewest_victims() -> None:
    # Four 1-GPU workloads or one 4-GPU workload free the same room, at the same cost each.
    snapshot = make_snapshot(
        [NODE], QUEUES, [*borrowed(1, 1, 1, 1, 4), make_step("want", "mine", gpus=4)]
    )
    assert set(evicted(decide(snapshot))) == {"theirs-4"}


def test_reclaim_of_one_gpu_takes_one_small_victim() -> None:
    snapshot = make_snapshot(
        [NODE], QUEUES, [*borrowed(4, 1, 1, 1, 1), make_step("want", "mine", gpus=1)]
    )
    (victim,) = evicted(decide(snapshot))
    assert victim != "theirs-0"


def test_reclaim_never_takes_a_queue_below_its_quota() -> None:
    snapshot = make_snapshot([NODE], QUEUES, [*borrowed(8), make_step("want", "mine", gpus=1)])
    plan = decide(snapshot)
    assert plan.evictions == ()
    why = reason(plan, "want")
    assert isinstance(why, InsufficientCapacity)
    assert "reclaim found no room" in why.message


def test_reclaim_never_evicts_work_that_is_not_preemptible() -> None:
    # The other queue's quota was cut after its inference service started: over quota now, but
    # still protected.
    queues = [make_queue("mine", quota=8), make_queue("theirs", quota=0)]
    snapshot = make_snapshot(
        [NODE], queues, [*borrowed(4, 4, kind=Kind.INFER), make_step("want", "mine", gpus=4)]
    )
    plan = decide(snapshot)
    assert plan.evictions == ()


def test_the_minimum_runtime_protects_fresh_work_from_reclaim() -> None:
    workloads = [*borrowed(4, 4), make_step("want", "mine", gpus=4)]
    snapshot = make_snapshot(
        [NODE], QUEUES, workloads, policy=Policy(reclaim_min_runtime_seconds=600)
    )
    assert decide(snapshot, now=300).evictions == ()
    assert len(decide(snapshot, now=600).evictions) == 1


def test_a_queues_own_minimum_runtime_overrides_the_policy() -> None:
    queues = [
        make_queue("mine", quota=4),
        make_queue("theirs", quota=4, reclaim_min_runtime_seconds=0),
    ]
    workloads = [*borrowed(4, 4), make_step("want", "mine", gpus=4)]
    snapshot = make_snapshot(
        [NODE], queues, workloads, policy=Policy(reclaim_min_runtime_seconds=600)
    )
    assert len(decide(snapshot, now=10).evictions) == 1


def test_work_already_being_evicted_is_waited_for_before_evicting_more() -> None:
    first, second = borrowed(4, 4)
    snapshot = make_snapshot(
        [NODE], QUEUES, [first, evicting(second), make_step("want", "mine", gpus=4)]
    )
    plan = decide(snapshot)
    assert plan.evictions == ()
    why = reason(plan, "want")
    assert isinstance(why, WaitingForEviction)
    assert why.victims == ("theirs-1",)


def test_a_gang_with_a_slice_on_a_lost_node_can_still_be_reclaimed() -> None:
    nodes = [make_node("lost", gpus=1, ready=False), make_node("up", gpus=1)]
    queues = [make_queue("theirs", quota=0), make_queue("mine", quota=2)]
    gang = make_step("gang", "theirs", slice=(10240, 50), pods=2)
    spread = run(gang, (pod_on("lost", 0, slice=(10240, 50)), pod_on("up", 0, slice=(10240, 50))))
    snapshot = make_snapshot(nodes, queues, [spread, make_step("want", "mine", gpus=1)])
    plan = decide(snapshot, now=10)
    assert evicted(plan) == {"gang": EvictionCause.RECLAIM}


def test_in_quota_work_is_not_reclaimed_because_its_queue_has_a_nominee() -> None:
    # team-b runs exactly its quota (4) and has b-new nominated for the room a-slice leaves.
    # Counting that nominee as held must not make b-old look reclaimable: team-b would run 2.
    queues = [
        make_queue("org", quota=12),
        make_queue("team-a", "org", quota=8),
        make_queue("team-b", "org", quota=4, weight=2),
        make_queue("team-c", quota=4, priority=1),
    ]
    slice_ = (10240, 20)
    workloads = [
        run(make_step("b-old", "team-b", gpus=2), pod_on("n2", 0, 1)),
        run(make_step("a", "team-a", gpus=2), pod_on("n2", 2, 3)),
        run(make_step("c", "team-c", gpus=4), pod_on("n1", 0, 1, 2, 3)),
        run(make_step("b", "team-b", gpus=2), pod_on("n1", 4, 5)),
        evicting(run(make_step("a-slice", "team-a", slice=slice_), pod_on("n1", 6, slice=slice_))),
        make_step("b-new", "team-b", gpus=2),
        make_step("a-new", "team-a", slice=slice_),
    ]
    snapshot = make_snapshot([make_node("n1", gpus=8), make_node("n2", gpus=4)], queues, workloads)
    plan = decide(snapshot, now=20)
    assert "b-old" not in evicted(plan)


# -- preemption -------------------------------------------------------------------------------


TEAM = [make_queue("team", quota=8)]


def team_work(priority: int, *, kind: Kind = Kind.TRAIN, started_at: float = 0.0) -> Workload:
    step = make_step("low", "team", gpus=8, priority=priority, kind=kind)
    return run(step, pod_on("n1", *range(8)), started_at=started_at)


def test_higher_priority_work_preempts_lower_priority_work_in_its_queue() -> None:
    snapshot = make_snapshot(
        [NODE], TEAM, [team_work(0), make_step("high", "team", gpus=4, priority=2)]
    )
    plan = decide(snapshot)
    assert evicted(plan) == {"low": EvictionCause.PREEMPT}
    assert plan.evictions[0].message == "preempted by high (priority 2 > 0) in queue team"
    assert isinstance(reason(plan, "high"), WaitingForEviction)


def test_equal_priority_does_not_preempt() -> None:
    snapshot = make_snapshot(
        [NODE], TEAM, [team_work(1), make_step("same", "team", gpus=4, priority=1)]
    )
    assert decide(snapshot).evictions == ()


def test_preemption_never_evicts_work_that_is_not_preemptible() -> None:
    snapshot = make_snapshot(
        [NODE],
        TEAM,
        [team_work(0, kind=Kind.BUILD), make_step("high", "team", gpus=4, priority=2)],
    )
    assert decide(snapshot).evictions == ()


def test_the_minimum_runtime_protects_fresh_work_from_preemption() -> None:
    queues = [make_queue("team", quota=8, preempt_min_runtime_seconds=120)]
    workloads = [team_work(0, started_at=950), make_step("high", "team", gpus=4, priority=2)]
    snapshot = make_snapshot([NODE], queues, workloads)
    assert decide(snapshot, now=1000).evictions == ()
    assert len(decide(snapshot, now=1070).evictions) == 1


def test_priority_does_not_preempt_across_queues() -> None:
    queues = [make_queue("team", quota=4), make_queue("rival", quota=4)]
    theirs = run(make_step("theirs", "rival", gpus=4), pod_on("n1", 4, 5, 6, 7))
    mine = run(make_step("mine", "team", gpus=4), pod_on("n1", 0, 1, 2, 3))
    snapshot = make_snapshot([NODE], queues, [mine, theirs, make_step("vip", "team", priority=9)])
    plan = decide(snapshot)
    # Within its fair share the rival keeps its GPUs; only the team's own work may give way.
    assert set(evicted(plan)) <= {"mine"}
    assert admitted(plan) == {}


# -- order: guaranteed quota before borrowing -------------------------------------------------


def test_free_room_goes_to_a_queue_within_its_quota_before_one_that_borrows() -> None:
    # Both queues stand at 0 of their fair share; the borrower would win the tie by name. The
    # owner asks within its quota, so it gets the free GPUs, and the borrower (within its fair
    # share) reclaims from x, which holds more than its own. Were the order the other way, the
    # owner would reclaim room that the borrower could take again next cycle, and so on.
    nodes = [make_node("n1", gpus=8), make_node("n2", gpus=8)]
    queues = [
        make_queue("x", quota=4),
        make_queue("owner", quota=4),
        make_queue("borrower", quota=0),
    ]
    x_work = [
        run(make_step("x-0", "x", gpus=4), pod_on("n1", 0, 1, 2, 3)),
        run(make_step("x-1", "x", gpus=8), pod_on("n2", *range(8))),
    ]
    wants = [make_step("owner-1", "owner", gpus=4), make_step("borrower-1", "borrower", gpus=4)]
    plan = decide(make_snapshot(nodes, queues, [*x_work, *wants]))
    assert list(admitted(plan)) == ["owner-1"]
    assert isinstance(reason(plan, "borrower-1"), WaitingForEviction)


def test_among_queues_within_quota_the_oldest_head_gets_free_room_first() -> None:
    # GPUs 2-3 of n1 were just freed by reclaim for a-1 (submitted at 100). b-1 arrived since
    # (at 200); b stands further below its fair share (0 of 4 against a's 2 of 4), which used to
    # win it the room, so a-1 reclaimed again and waited a second cycle. Both are owed their
    # room: the older takes the free GPUs and the newer reclaims from the borrower c.
    queues = [make_queue("a", quota=4), make_queue("b", quota=4), make_queue("c", quota=0)]
    running = [
        run(make_step("a-0", "a", gpus=2), pod_on("n1", 0, 1)),
        run(make_step("c-0", "c", gpus=4), pod_on("n1", 4, 5, 6, 7)),
    ]
    wants = [
        make_step("b-1", "b", gpus=2, submitted_at=200.0),
        make_step("a-1", "a", gpus=2, submitted_at=100.0),
    ]
    plan = decide(make_snapshot([NODE], queues, [*running, *wants]))
    assert list(admitted(plan)) == ["a-1"]
    assert isinstance(reason(plan, "b-1"), WaitingForEviction)
    assert evicted(plan) == {"c-0": EvictionCause.RECLAIM}


def test_reclaim_passes_over_a_node_that_could_not_hold_the_workload() -> None:
    # b may give back 8 GPUs (it holds 10 against a quota of 2). Its 2-GPU job sits on n1 beside
    # c's in-quota work, and n1 comes first (it could free as much as n2, and sorts first by
    # name). Taken first, that job would leave b only 8 GPUs, too few to give up its 8-GPU job
    # on n2 as well: the search would fail with the one fitting victim untried. n1 cannot hold
    # an 8-GPU pod whatever goes, so it is passed over, and b's job on n2 makes the room.
    nodes = [make_node("n1", gpus=8), make_node("n2", gpus=8)]
    queues = [make_queue("a", quota=8), make_queue("b", quota=2), make_queue("c", quota=5)]
    running = [
        run(make_step("c-0", "c", gpus=5), pod_on("n1", 0, 1, 2, 3, 4)),
        run(make_step("b-small", "b", gpus=2), pod_on("n1", 5, 6)),
        run(make_step("b-big", "b", gpus=8), pod_on("n2", *range(8))),
    ]
    plan = decide(make_snapshot(nodes, queues, [*running, make_step("want", "a", gpus=8)]))
    assert evicted(plan) == {"b-big": EvictionCause.RECLAIM}
    assert isinstance(reason(plan, "want"), WaitingForEviction)
