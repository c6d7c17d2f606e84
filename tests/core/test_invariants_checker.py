"""The invariant checker must be able to fail: each hand-built bad plan is caught by name.

Every test starts from a sound plan for the same situation (checked clean), breaks one thing,
and expects exactly the invariant that thing breaks: a checker that stays silent, or blames the
wrong invariant, fails here.
"""

from __future__ import annotations

from dataclasses import replace

from scheduler_service.core import (
    Admission,
    Eviction,
    EvictionCause,
    InsufficientCapacity,
    Kind,
    Pending,
    Plan,
    Snapshot,
    Violation,
    Workload,
    check_plan,
    schedule,
)
from tests.core.builders import (
    A100_MIB,
    evicting,
    make_node,
    make_queue,
    make_snapshot,
    make_step,
    pod_on,
    run,
)


def broken(snapshot: Snapshot, plan: Plan) -> set[str]:
    return {violation.invariant for violation in check_plan(snapshot, plan)}


def waiting(*names: str) -> tuple[Pending, ...]:
    reason = InsufficientCapacity(
        pool="h100", pods=1, per_pod="1 GPU", free_milli=0, largest_free_node="none"
    )
    return tuple(Pending(name, reason) for name in names)


def cluster(*workloads: Workload) -> Snapshot:
    return make_snapshot(
        nodes=[
            make_node("n1", gpus=8, topology={"rack": "r1"}, cpu_milli=16_000),
            make_node("n2", gpus=8, topology={"rack": "r2"}),
            make_node("a1", gpus=4, model="A100", pool="a100", memory_mib=A100_MIB),
            make_node("down", gpus=8, ready=False),
        ],
        queues=[
            make_queue("org", quota=8, limit=12),
            make_queue("team", "org", quota=4, limit=10),
            make_queue("other", "org", quota=4),
        ],
        workloads=workloads,
    )


def test_the_schedulers_own_plan_is_clean() -> None:
    snapshot = cluster(
        run(make_step("old", gpus=2), pod_on("n1", 0, 1)),
        make_step("gang", gpus=4, pods=2, topology="rack"),
        make_step("build", "other", slice=(10240, 20), kind=Kind.BUILD),
    )
    plan = schedule(snapshot, now=0.0)
    assert len(plan.admissions) == 2
    assert check_plan(snapshot, plan) == []


def test_a_gpu_given_to_two_pods_is_an_overcommit() -> None:
    snapshot = cluster(run(make_step("old", gpus=2), pod_on("n1", 0, 1)), make_step("new"))
    plan = Plan(admissions=(Admission("new", (pod_on("n1", 1),)),))
    assert broken(snapshot, plan) == {Violation.OVERCOMMIT}
    assert "n1-gpu1" in str(check_plan(snapshot, plan)[0])


def test_a_gpu_held_whole_and_shared_by_a_slice_is_an_overcommit() -> None:
    snapshot = cluster(
        run(make_step("old", gpus=1), pod_on("n1", 0)), make_step("s", slice=(1024, 10))
    )
    plan = Plan(admissions=(Admission("s", (pod_on("n1", 0, slice=(1024, 10)),)),))
    assert broken(snapshot, plan) == {Violation.OVERCOMMIT}


def test_slices_past_100_percent_compute_are_an_overcommit() -> None:
    old = run(make_step("old", slice=(1024, 60)), pod_on("n1", 0, slice=(1024, 60)))
    snapshot = cluster(old, make_step("new", slice=(1024, 50)))
    plan = Plan(admissions=(Admission("new", (pod_on("n1", 0, slice=(1024, 50)),)),))
    violations = check_plan(snapshot, plan)
    assert {v.invariant for v in violations} == {Violation.OVERCOMMIT}
    assert "110%" in violations[0].message


def test_slices_past_the_gpus_memory_are_an_overcommit() -> None:
    old = run(make_step("old", slice=(60_000, 10)), pod_on("n1", 0, slice=(60_000, 10)))
    snapshot = cluster(old, make_step("new", slice=(30_000, 10)))
    plan = Plan(admissions=(Admission("new", (pod_on("n1", 0, slice=(30_000, 10)),)),))
    violations = check_plan(snapshot, plan)
    assert {v.invariant for v in violations} == {Violation.OVERCOMMIT}
    assert "90000 MiB" in violations[0].message


def test_an_evicting_workload_still_holds_its_gpus() -> None:
    old = evicting(run(make_step("old", gpus=2), pod_on("n1", 0, 1)))
    snapshot = cluster(old, make_step("new"))
    plan = Plan(admissions=(Admission("new", (pod_on("n1", 0),)),))
    assert broken(snapshot, plan) == {Violation.OVERCOMMIT}


def test_pods_past_a_nodes_cpu_are_an_overcommit() -> None:
    snapshot = cluster(make_step("big", pods=2, cpu_milli=10_000))
    plan = Plan(admissions=(Admission("big", (pod_on("n1", 0), pod_on("n1", 1))),))
    violations = check_plan(snapshot, plan)
    assert {v.invariant for v in violations} == {Violation.OVERCOMMIT}
    assert "20000m CPU" in violations[0].message


def test_a_partial_gang_breaks_the_gang_invariant() -> None:
    snapshot = cluster(make_step("gang", gpus=4, pods=2))
    plan = Plan(admissions=(Admission("gang", (pod_on("n1", 0, 1, 2, 3),)),))
    assert broken(snapshot, plan) == {Violation.GANG}


def test_a_gang_over_two_pools_breaks_the_gang_invariant() -> None:
    snapshot = cluster(make_step("gang", gpus=1, pods=2))
    plan = Plan(admissions=(Admission("gang", (pod_on("n1", 0), pod_on("a1", 0))),))
    assert broken(snapshot, plan) == {Violation.GANG}


def test_a_gang_spread_over_racks_breaks_its_required_topology() -> None:
    snapshot = cluster(make_step("gang", gpus=4, pods=2, topology="rack"))
    plan = Plan(
        admissions=(Admission("gang", (pod_on("n1", 0, 1, 2, 3), pod_on("n2", 0, 1, 2, 3))),)
    )
    assert broken(snapshot, plan) == {Violation.TOPOLOGY}


def test_a_gang_spread_over_racks_is_fine_when_the_topology_is_only_preferred() -> None:
    gang = make_step("gang", gpus=4, pods=2, topology="rack", topology_required=False)
    snapshot = cluster(gang)
    plan = Plan(
        admissions=(Admission("gang", (pod_on("n1", 0, 1, 2, 3), pod_on("n2", 0, 1, 2, 3))),)
    )
    assert check_plan(snapshot, plan) == []


def test_evicting_a_build_step_breaks_non_preemptibility() -> None:
    build = run(make_step("build", "team", gpus=2, kind=Kind.BUILD), pod_on("n1", 0, 1))
    snapshot = cluster(build, make_step("urgent", "team", priority=9))
    plan = Plan(
        evictions=(Eviction("build", EvictionCause.PREEMPT, "urgent", "preempted"),),
        pending=waiting("urgent"),
    )
    assert broken(snapshot, plan) == {Violation.NON_PREEMPTIBLE_EVICTED}


def test_admitting_past_a_queues_limit_breaks_the_limit() -> None:
    running = run(make_step("old", "team", gpus=8), pod_on("n2", *range(8)))
    snapshot = cluster(running, make_step("more", "team", gpus=4))
    plan = Plan(admissions=(Admission("more", (pod_on("n1", 0, 1, 2, 3),)),))
    violations = check_plan(snapshot, plan)
    assert {v.invariant for v in violations} == {Violation.OVER_LIMIT}
    assert "queue team holds 12 GPUs" in violations[0].message
    assert "limit of 10" in violations[0].message


def test_admitting_past_a_parents_limit_breaks_the_limit() -> None:
    running = run(make_step("old", "other", gpus=8), pod_on("n2", *range(8)))
    snapshot = cluster(running, make_step("more", "team", gpus=6))
    plan = Plan(admissions=(Admission("more", (pod_on("n1", *range(6)),)),))
    violations = check_plan(snapshot, plan)
    assert [v.invariant for v in violations] == [Violation.OVER_LIMIT]
    assert "queue org holds 14 GPUs" in violations[0].message


def test_a_pending_workload_missing_from_the_plan_is_lost() -> None:
    snapshot = cluster(make_step("a"), make_step("b"))
    plan = Plan(pending=waiting("a"))
    violations = check_plan(snapshot, plan)
    assert {v.invariant for v in violations} == {Violation.WORKLOAD_STATE}
    assert "'b' is lost" in violations[0].message


def test_a_workload_both_admitted_and_pending_is_in_two_states() -> None:
    snapshot = cluster(make_step("a"))
    plan = Plan(admissions=(Admission("a", (pod_on("n1", 0),)),), pending=waiting("a"))
    assert broken(snapshot, plan) == {Violation.WORKLOAD_STATE}


def test_admitting_a_running_workload_again_is_a_state_error() -> None:
    running = run(make_step("old"), pod_on("n1", 0))
    snapshot = cluster(running)
    plan = Plan(admissions=(Admission("old", (pod_on("n1", 1),)),))
    assert Violation.WORKLOAD_STATE in broken(snapshot, plan)


def test_evicting_a_pending_or_unknown_workload_is_a_state_error() -> None:
    snapshot = cluster(make_step("a"), make_step("b"))
    plan = Plan(
        evictions=(
            Eviction("a", EvictionCause.PREEMPT, "b", "x"),
            Eviction("ghost", EvictionCause.PREEMPT, "b", "x"),
        ),
        pending=waiting("a", "b"),
    )
    messages = [v.message for v in check_plan(snapshot, plan)]
    assert any("evicts 'a', which is pending" in m for m in messages)
    assert any("evicts 'ghost', which is not in the snapshot" in m for m in messages)


def test_placing_on_a_node_that_is_not_ready_is_an_allocation_error() -> None:
    snapshot = cluster(make_step("a"))
    plan = Plan(admissions=(Admission("a", (pod_on("down", 0),)),))
    assert broken(snapshot, plan) == {Violation.ALLOCATION}


def test_the_wrong_number_of_gpus_is_an_allocation_error() -> None:
    snapshot = cluster(make_step("a", gpus=2))
    plan = Plan(admissions=(Admission("a", (pod_on("n1", 0),)),))
    assert broken(snapshot, plan) == {Violation.ALLOCATION}


def test_a_gpu_of_another_node_is_an_allocation_error() -> None:
    snapshot = cluster(make_step("a"))
    wrong = replace(pod_on("n1", 0), gpus=("n2-gpu0",))
    plan = Plan(admissions=(Admission("a", (wrong,)),))
    assert broken(snapshot, plan) == {Violation.ALLOCATION}


def test_a_slice_share_other_than_requested_is_an_allocation_error() -> None:
    snapshot = cluster(make_step("s", slice=(1024, 10)))
    plan = Plan(admissions=(Admission("s", (pod_on("n1", 0, slice=(1024, 50)),)),))
    assert broken(snapshot, plan) == {Violation.ALLOCATION}


def test_a_pool_the_workload_did_not_ask_for_is_a_target_error() -> None:
    snapshot = cluster(make_step("a", pools=["a100"]))
    plan = Plan(admissions=(Admission("a", (pod_on("n1", 0),)),))
    assert broken(snapshot, plan) == {Violation.TARGET}


def test_reclaiming_below_the_victims_quota_breaks_reclaim() -> None:
    victim = run(make_step("theirs", "other", gpus=4), pod_on("n1", 0, 1, 2, 3))
    snapshot = cluster(victim, make_step("mine", "team", gpus=8))
    plan = Plan(
        evictions=(Eviction("theirs", EvictionCause.RECLAIM, "mine", "reclaimed"),),
        pending=waiting("mine"),
    )
    violations = check_plan(snapshot, plan)
    assert {v.invariant for v in violations} == {Violation.RECLAIM_BELOW_QUOTA}
    assert "from 4 to 0 GPUs, below 4" in violations[0].message


def test_reclaiming_above_the_victims_quota_is_fine() -> None:
    kept = run(make_step("kept", "other", gpus=4), pod_on("n2", 0, 1, 2, 3))
    victim = run(make_step("theirs", "other", gpus=4), pod_on("n1", 0, 1, 2, 3))
    snapshot = cluster(kept, victim, make_step("mine", "team", gpus=4))
    plan = Plan(
        evictions=(Eviction("theirs", EvictionCause.RECLAIM, "mine", "reclaimed"),),
        pending=waiting("mine"),
    )
    assert check_plan(snapshot, plan) == []


def test_a_move_inside_a_department_does_not_count_as_reclaimed_from_it() -> None:
    # dept-a holds 9 of its quota of 8: one GPU goes to dept-b, one moves from team a1 to a2.
    # dept-a ends at 8, its quota; only the first GPU leaves it.
    a1 = [run(make_step(f"a1-{i}", "a1"), pod_on("n1", i)) for i in range(6)]
    a2 = [
        run(make_step("a2-0", "a2", gpus=2), pod_on("n1", 6, 7)),
        run(make_step("a2-1", "a2"), pod_on("n2", 0)),
    ]
    b1 = run(make_step("b1-0", "b1", gpus=7), pod_on("n2", 1, 2, 3, 4, 5, 6, 7))
    snapshot = make_snapshot(
        nodes=[make_node("n1", gpus=8), make_node("n2", gpus=8)],
        queues=[
            make_queue("dept-a", quota=8),
            make_queue("a1", "dept-a", quota=4),
            make_queue("a2", "dept-a", quota=4),
            make_queue("dept-b", quota=8),
            make_queue("b1", "dept-b", quota=8),
        ],
        workloads=[*a1, *a2, b1, make_step("mine-b", "b1"), make_step("mine-a", "a2")],
    )
    plan = Plan(
        evictions=(
            Eviction("a1-0", EvictionCause.RECLAIM, "mine-b", "reclaimed"),
            Eviction("a1-1", EvictionCause.RECLAIM, "mine-a", "reclaimed"),
        ),
        pending=waiting("mine-a", "mine-b"),
    )
    assert check_plan(snapshot, plan) == []


def test_non_preemptible_work_past_the_quota_breaks_the_quota_gate() -> None:
    snapshot = cluster(make_step("build", "team", gpus=6, kind=Kind.BUILD))
    plan = Plan(admissions=(Admission("build", (pod_on("n1", *range(6)),)),))
    violations = check_plan(snapshot, plan)
    assert {v.invariant for v in violations} == {Violation.NON_PREEMPTIBLE_OVER_QUOTA}
    assert "6 GPUs of non-preemptible work" in violations[0].message


def test_a_violation_reads_as_its_invariant_and_its_message() -> None:
    violation = Violation(Violation.GANG, "'g' is spread over pools a, b")
    assert str(violation) == "gang: 'g' is spread over pools a, b"
