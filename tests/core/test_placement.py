"""Phase 3's placement: least fragmentation for the learned mix, ties to the tightest fit.

Every pod goes where it adds the least fragmentation for the request mix learned from
submissions; slices share GPUs tightly.
"""

from __future__ import annotations

from scheduler_service.core import Allocation, Workload
from tests.core.builders import (
    admitted,
    decide,
    gpu_of,
    make_node,
    make_queue,
    make_snapshot,
    make_step,
    pod_on,
    run,
)

TEAM = make_queue("team", quota=16)


def test_whole_gpus_go_to_the_tightest_node_that_fits() -> None:
    # Only 2-GPU pods were ever submitted: no placement strands anything, the tightest fit wins.
    busy = run(make_step("busy", gpus=2, pods=3), tuple(pod_on("n2", i, i + 1) for i in (0, 2, 4)))
    assert _new_two_gpu_step_beside(busy) == (pod_on("n2", 6, 7),)


def test_whole_gpus_go_where_the_learned_mix_strands_least() -> None:
    # The mix holds 6-GPU pods, which the 4-GPU node n3 can never hold: its 4 free GPUs can
    # serve only the 2-GPU pods. Filling n3 halfway leaves 2 GPUs a 2-GPU pod can still use and
    # takes nothing a 6-GPU pod could use; the tightest fit (n2) would leave n3 with 4.
    # Two pods ahead, n3 then fills exactly; so the score sends the pod to n3.
    busy = run(make_step("busy", gpus=6), pod_on("n2", *range(6)))
    assert _new_two_gpu_step_beside(busy) == (pod_on("n3", 0, 1),)


def _new_two_gpu_step_beside(busy: Workload) -> Allocation:
    """Where a new 2-GPU step goes on n1 (8 free), n2 (8, `busy` on 6) and n3 (4 free)."""
    snapshot = make_snapshot(
        [make_node("n1"), make_node("n2"), make_node("n3", gpus=4)],
        [TEAM],
        [busy, make_step("new", gpus=2)],
    )
    return admitted(decide(snapshot))["new"]


def test_whole_gpus_leave_a_whole_node_free_for_a_large_gang() -> None:
    snapshot = make_snapshot(
        [make_node("n1", gpus=8), make_node("n2", gpus=4)],
        [TEAM],
        [make_step("small", gpus=4)],
    )
    assert admitted(decide(snapshot))["small"][0].node == "n2"


def test_whole_gpus_of_one_pod_stay_inside_one_numa_group() -> None:
    busy = run(make_step("busy", gpus=1), pod_on("n1", 0))
    snapshot = make_snapshot(
        [make_node("n1", gpus=8, numa_groups=2)], [TEAM], [busy, make_step("new", gpus=4)]
    )
    # GPUs 1-3 and 4 would also be four free GPUs, but across both NUMA groups.
    assert admitted(decide(snapshot))["new"] == (pod_on("n1", 4, 5, 6, 7),)


def test_slices_share_a_gpu_while_compute_and_memory_fit() -> None:
    # Seven 30% slices on two GPUs: three fit on each (90%), the seventh would overflow both.
    snapshot = make_snapshot(
        [make_node("n1", gpus=2)],
        [TEAM],
        [make_step(f"s{i}", slice=(20480, 30)) for i in range(7)],
    )
    placements = admitted(decide(snapshot))
    gpus = sorted(allocation[0].gpus[0] for allocation in placements.values())
    assert gpus == [gpu_of("n1", 0)] * 3 + [gpu_of("n1", 1)] * 3


def test_slices_move_to_another_gpu_when_memory_would_overflow() -> None:
    snapshot = make_snapshot(
        [make_node("n1", gpus=2)],
        [TEAM],
        [make_step("big", slice=(60000, 10)), make_step("also-big", slice=(30000, 10))],
    )
    placements = admitted(decide(snapshot))
    assert placements["big"][0].gpus != placements["also-big"][0].gpus


def test_slices_never_overcommit_a_gpu_and_wait_when_none_has_room() -> None:
    snapshot = make_snapshot(
        [make_node("n1", gpus=1)],
        [TEAM],
        [make_step("a", slice=(10240, 60)), make_step("b", slice=(10240, 60))],
    )
    plan = decide(snapshot)
    assert list(admitted(plan)) == ["a"]
    assert plan.reason_for("b") is not None


def test_a_slice_prefers_a_gpu_that_is_already_shared() -> None:
    shared = run(make_step("shared", slice=(10240, 20)), pod_on("n2", 5, slice=(10240, 20)))
    snapshot = make_snapshot(
        [make_node("n1", gpus=1), make_node("n2", gpus=8)],
        [TEAM],
        [shared, make_step("new", slice=(10240, 20))],
    )
    # n1 is the tighter node for a fresh GPU, but a shared GPU keeps whole GPUs whole.
    assert admitted(decide(snapshot))["new"] == (pod_on("n2", 5, slice=(10240, 20)),)


def test_a_slice_prefers_the_shared_gpu_with_the_least_compute_left() -> None:
    roomy = run(make_step("roomy", slice=(1024, 20)), pod_on("n1", 0, slice=(1024, 20)))
    tight = run(make_step("tight", slice=(1024, 70)), pod_on("n1", 1, slice=(1024, 70)))
    snapshot = make_snapshot(
        [make_node("n1", gpus=2)], [TEAM], [roomy, tight, make_step("new", slice=(1024, 25))]
    )
    assert admitted(decide(snapshot))["new"] == (pod_on("n1", 1, slice=(1024, 25)),)


def test_a_slice_takes_a_fresh_gpu_on_the_tightest_node() -> None:
    busy = run(make_step("busy", gpus=7), pod_on("n2", *range(7)))
    snapshot = make_snapshot(
        [make_node("n1", gpus=8), make_node("n2", gpus=8)],
        [TEAM],
        [busy, make_step("new", slice=(1024, 10))],
    )
    assert admitted(decide(snapshot))["new"] == (pod_on("n2", 7, slice=(1024, 10)),)


def test_a_whole_gpu_pod_never_lands_on_a_shared_gpu() -> None:
    shared = run(make_step("shared", slice=(1024, 10)), pod_on("n1", 0, slice=(1024, 10)))
    snapshot = make_snapshot([make_node("n1", gpus=1)], [TEAM], [shared, make_step("whole")])
    plan = decide(snapshot)
    assert admitted(plan) == {}
    assert plan.reason_for("whole") is not None


def test_node_cpu_and_memory_limit_how_many_pods_fit() -> None:
    snapshot = make_snapshot(
        [make_node("n1", gpus=8, cpu_milli=16_000, node_memory_mib=65536)],
        [TEAM],
        [
            make_step("a", cpu_milli=10_000),
            make_step("b", cpu_milli=10_000),
            make_step("c", memory_mib=60000),
            make_step("d", memory_mib=60000),
        ],
    )
    assert sorted(admitted(decide(snapshot))) == ["a", "c"]


def test_nodes_that_are_not_ready_receive_no_work() -> None:
    snapshot = make_snapshot(
        [make_node("down", gpus=8, ready=False), make_node("up", gpus=2)],
        [TEAM],
        [make_step("a", gpus=2), make_step("b", gpus=2)],
    )
    plan = decide(snapshot)
    assert [a.allocation[0].node for a in plan.admissions] == ["up"]
