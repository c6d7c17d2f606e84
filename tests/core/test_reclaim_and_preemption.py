"""Phases 4 and 5: reclaim across queues by fair share and quota, preemption inside a queue."""

from __future__ import annotations

from dataclasses import replace

from scheduler_service.core import (
    EvictionCause,
    InsufficientCapacity,
    Kind,
    Plan,
    Policy,
    PoolQuota,
    Snapshot,
    WaitingForEviction,
    Workload,
)
from tests.core.builders import (
    A100_MIB,
    LATER,
    admitted,
    apply,
    complete_evictions,
    decide,
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


# -- reclaim frees whole nodes for an in-quota gang -------------------------------------------


def _until_admitted(snapshot: Snapshot, names: set[str], now: float, cycles: int) -> set[str]:
    """Run `cycles` cycles (every eviction done by the next one); the `names` admitted."""
    started: set[str] = set()
    for _ in range(cycles):
        plan = decide(snapshot, now)
        started |= names & set(admitted(plan))
        snapshot = complete_evictions(apply(snapshot, plan, now))
        now += 60.0
    return started


def test_reclaim_does_not_spend_a_queue_s_give_on_a_node_it_cannot_free() -> None:
    # a and c burst past their quotas on every node; b asks for 16 GPUs (two whole nodes) within
    # its quota. c may give 2 GPUs back. n1 comes first (every node could free 8), but it holds
    # 3 of c's GPUs: freeing it would take more than c may give. Taking c's first two there
    # anyway would leave c nothing to give for its GPU on n2, and the search would fail,
    # although n2 and n3 together free the two nodes (c gives 1, a gives 15).
    nodes = [make_node(f"n{i}", gpus=8) for i in (1, 2, 3)]
    queues = [make_queue("a", quota=2), make_queue("b", quota=16), make_queue("c", quota=2)]
    running = [
        *(run(make_step(f"c-{i}", "c", gpus=1), pod_on("n1", i)) for i in range(3)),
        run(make_step("a-0", "a", gpus=5), pod_on("n1", 3, 4, 5, 6, 7)),
        run(make_step("c-3", "c", gpus=1), pod_on("n2", 0)),
        run(make_step("a-1", "a", gpus=4), pod_on("n2", 1, 2, 3, 4)),
        run(make_step("a-2", "a", gpus=3), pod_on("n2", 5, 6, 7)),
        run(make_step("a-3", "a", gpus=8), pod_on("n3", *range(8))),
    ]
    want = make_step("want", "b", gpus=8, pods=2, submitted_at=900.0)
    plan = decide(make_snapshot(nodes, queues, [*running, want]))
    assert set(evicted(plan)) == {"c-3", "a-1", "a-2", "a-3"}
    assert isinstance(reason(plan, "want"), WaitingForEviction)


def test_a_borrower_s_reservation_does_not_keep_an_in_quota_gang_from_reclaiming() -> None:
    # b asks for one whole node within its quota. Only n2 can be freed: n1 and n3 hold d's
    # in-quota work. Phase 3 held n1 for b's gang and n2 for a's older 8-GPU gang; but a is
    # borrowing (it holds 22 GPUs against a quota of 0), and a guarantee comes before a
    # borrower's reservation, so b reclaims n2.
    nodes = [make_node(f"n{i}", gpus=8) for i in (1, 2, 3)]
    queues = [make_queue("a", quota=0), make_queue("b", quota=8), make_queue("d", quota=4)]
    running = [
        run(make_step("d-0", "d", gpus=2), pod_on("n1", 0, 1)),
        run(make_step("a-0", "a", gpus=6), pod_on("n1", *range(2, 8))),
        run(make_step("a-1", "a", gpus=4), pod_on("n2", 0, 1, 2, 3)),
        run(make_step("a-2", "a", gpus=4), pod_on("n2", 4, 5, 6, 7)),
        run(make_step("d-1", "d", gpus=2), pod_on("n3", 0, 1)),
        run(make_step("a-3", "a", gpus=6), pod_on("n3", *range(2, 8))),
    ]
    wants = [
        make_step("a-gang", "a", gpus=8, submitted_at=10.0),
        make_step("want", "b", gpus=8, submitted_at=900.0),
    ]
    plan = decide(make_snapshot(nodes, queues, [*running, *wants]))
    assert set(evicted(plan)) == {"a-1", "a-2"}
    assert isinstance(reason(plan, "want"), WaitingForEviction)


def test_in_quota_8_and_16_gpu_jobs_start_within_one_cycle_and_the_grace() -> None:
    # a bursts past its quota with small jobs on every node, c a little past its own; b's
    # 8-GPU step and 16-GPU gang, both within b's quota, must each get whole nodes by the
    # cycle after the one that saw them (the evictions' grace is over by then).
    nodes = [make_node(f"n{i}", gpus=8) for i in range(1, 6)]
    queues = [make_queue("a", quota=4), make_queue("b", quota=24), make_queue("c", quota=4)]
    running = []
    for i, node in enumerate(node.name for node in nodes):
        c_gpus = 3 if i == 0 else 1
        running += [
            run(make_step(f"c-{node}-{g}", "c", gpus=1), pod_on(node, g), started_at=float(i))
            for g in range(c_gpus)
        ]
        running += [
            run(make_step(f"a-{node}-{g}", "a", gpus=1), pod_on(node, g), started_at=float(g))
            for g in range(c_gpus, 8)
        ]
    wants = [
        make_step("b-8", "b", gpus=8, submitted_at=900.0),
        make_step("b-16", "b", gpus=8, pods=2, submitted_at=950.0),
        make_step("a-more", "a", gpus=8, pods=2, submitted_at=100.0),
    ]
    snapshot = make_snapshot(nodes, queues, [*running, *wants])
    assert _until_admitted(snapshot, {"b-8", "b-16"}, now=1000.0, cycles=2) == {"b-8", "b-16"}


# -- reclaim settles on several pools (docs/core.md, "Order") ------------------------------

_TWO_POOLS = [
    make_node("h1", gpus=4),
    make_node("a1", gpus=4, model="A100", pool="a100", memory_mib=A100_MIB),
]
_TWO_POOL_QUEUES = [
    make_queue("org"),
    make_queue("lender", "org", quota=2, quotas=[PoolQuota("a100", quota=2)]),
    make_queue("owner", "org", quota=2, quotas=[PoolQuota("a100", quota=2)]),
]


def _evictions_per_cycle(snapshot: Snapshot, cycles: int) -> list[int]:
    """Evictions in each of `cycles` cycles carried out at once, nothing new submitted."""
    counts = []
    for cycle in range(cycles):
        plan = decide(snapshot, now=LATER + cycle)
        counts.append(len(plan.evictions))
        snapshot = complete_evictions(apply(snapshot, plan, LATER + cycle))
    return counts


def test_reclaim_settles_when_the_queue_head_borrows_in_another_pool() -> None:
    # owner borrows in h100 (its head waits there) and is owed its quota in a100, where
    # lender borrows and waits with more. Ranked by its head's pool, owner's queue came after
    # lender's, so the a100 GPU it reclaimed went back to lender every cycle.
    running = [
        run(make_step("o-h", "owner", gpus=4, pools=["h100"]), pod_on("h1", 0, 1, 2, 3)),
        *(run(make_step(f"l-a{i}", "lender", pools=["a100"]), pod_on("a1", i)) for i in range(4)),
    ]
    pending = [
        make_step("o-head", "owner", pools=["h100"], submitted_at=1.0),
        make_step("o-a100", "owner", pools=["a100"], submitted_at=2.0),
        make_step("l-more", "lender", pools=["a100"], submitted_at=3.0),
    ]
    counts = _evictions_per_cycle(make_snapshot(_TWO_POOLS, _TWO_POOL_QUEUES, running + pending), 6)
    assert counts[0] == 1  # owner takes one a100 GPU back
    assert counts[2:] == [0, 0, 0, 0], counts


def test_reclaim_settles_when_a_preferred_pool_would_borrow() -> None:
    # waiting prefers a100, where its queue borrows, but is owed quota in h100. Ranked as owed
    # quota yet placed in a100, it took the a100 room reclaimed for owner's step every cycle.
    running = [
        run(make_step("w-a", "waiting", gpus=2, pools=["a100"]), pod_on("a1", 0, 1)),
        run(make_step("o-a", "owner", pools=["a100"]), pod_on("a1", 2)),
        run(make_step("l-a", "lender", pools=["a100"]), pod_on("a1", 3)),
        run(make_step("l-h", "lender", gpus=4, pools=["h100"]), pod_on("h1", 0, 1, 2, 3)),
    ]
    queues = [
        *_TWO_POOL_QUEUES,
        make_queue("waiting", "org", quota=2, quotas=[PoolQuota("a100", quota=0)]),
    ]
    pending = [
        make_step("w-next", "waiting", pools=["a100", "h100"], submitted_at=1.0),
        make_step("o-next", "owner", pools=["a100"], submitted_at=2.0),
    ]
    counts = _evictions_per_cycle(make_snapshot(_TWO_POOLS, queues, running + pending), 6)
    assert counts[2:] == [0, 0, 0, 0], counts
