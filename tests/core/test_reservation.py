"""A head-of-line gang that cannot fit reserves nodes, so that small work does not starve it."""

from __future__ import annotations

from scheduler_service.core import (
    BlockedByReservation,
    InsufficientCapacity,
    Policy,
    Snapshot,
)
from tests.core.builders import (
    admitted,
    decide,
    make_node,
    make_queue,
    make_snapshot,
    make_step,
    pod_on,
    reason,
    run,
)


def crowded(policy: Policy) -> Snapshot:
    """Two half-used nodes: a 2 x 8 GPU gang cannot fit until both are empty.

    The running work is fresh, so the gang's queue cannot reclaim it yet (minimum runtime).
    """
    return make_snapshot(
        [make_node("n1", gpus=8), make_node("n2", gpus=8)],
        [make_queue("big", quota=16), make_queue("small", quota=0)],
        [
            run(make_step("old-1", "small", gpus=4), pod_on("n1", 0, 1, 2, 3), started_at=990),
            run(make_step("old-2", "small", gpus=4), pod_on("n2", 0, 1, 2, 3), started_at=990),
            make_step("gang", "big", gpus=8, pods=2, submitted_at=900),
            make_step("small-step", "small", gpus=1, submitted_at=995),
        ],
        policy=policy,
    )


def test_a_blocked_gang_reserves_nodes_for_itself() -> None:
    plan = decide(crowded(Policy(reclaim_min_runtime_seconds=600)))
    (reservation,) = plan.reservations
    assert reservation.workload == "gang"
    assert sorted(reservation.nodes) == ["n1", "n2"]
    assert (reservation.free_milli, reservation.needed_milli) == (8000, 16000)
    why = reason(plan, "gang")
    assert isinstance(why, InsufficientCapacity)
    assert "holding 2 reserved node(s) with 8 of 16 GPUs free" in why.message


def test_small_work_is_kept_off_reserved_nodes_and_told_why() -> None:
    plan = decide(crowded(Policy(reclaim_min_runtime_seconds=600)))
    assert admitted(plan) == {}
    why = reason(plan, "small-step")
    assert isinstance(why, BlockedByReservation)
    assert (why.pool, why.holder) == ("h100", "gang")
    assert why.code == "BlockedByReservation"
    assert "reserved for gang gang" in why.message


def test_without_reservations_small_work_takes_the_free_gpus() -> None:
    plan = decide(crowded(Policy(reclaim_min_runtime_seconds=600, reserve_for_gangs=False)))
    assert list(admitted(plan)) == ["small-step"]
    assert plan.reservations == ()
