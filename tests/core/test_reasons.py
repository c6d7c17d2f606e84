"""Every reason a workload waits for says it with numbers (DESIGN.md, phase 6).

Names here carry no digits (pool "main", nodes "alpha" and "beta"), so a digit in a message is
a number the reason gives, not a name it repeats.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from scheduler_service.core import (
    BlockedByReservation,
    InsufficientCapacity,
    InvalidTarget,
    Kind,
    NoTopologyDomain,
    OverQuotaNotAllowed,
    Plan,
    Policy,
    QueueAtLimit,
    Reason,
    Snapshot,
    WaitingForEviction,
    Workload,
    check_plan,
    schedule,
)
from tests.core.builders import make_node, make_queue, make_snapshot, make_step, pod_on, run

NODES = [
    make_node("alpha", gpus=8, pool="main", topology={"rack": "left"}),
    make_node("beta", gpus=8, pool="main", topology={"rack": "right"}),
]


def snapshot_of(*workloads: Workload, policy: Policy | None = None) -> Snapshot:
    queues = [
        make_queue("team", pool="main", quota=16),
        make_queue("capped", pool="main", quota=1, limit=2),
        make_queue("lender", pool="main", quota=0),
    ]
    return make_snapshot(NODES, queues, workloads, policy=policy)


def half_full() -> list[Workload]:
    return [
        run(make_step("fill-a", "team", gpus=4), pod_on("alpha", 0, 1, 2, 3), started_at=990),
        run(make_step("fill-b", "team", gpus=4), pod_on("beta", 0, 1, 2, 3), started_at=990),
    ]


def full() -> list[Workload]:
    return [
        run(make_step("fill-a", "team", gpus=8), pod_on("alpha", *range(8))),
        run(make_step("fill-b", "team", gpus=8), pod_on("beta", *range(8))),
    ]


SCENARIOS: dict[type[Reason], Callable[[], Snapshot]] = {
    QueueAtLimit: lambda: snapshot_of(make_step("subject", "capped", gpus=4)),
    OverQuotaNotAllowed: lambda: snapshot_of(
        make_step("subject", "capped", gpus=2, kind=Kind.BUILD)
    ),
    InsufficientCapacity: lambda: snapshot_of(*full(), make_step("subject", "team", gpus=2)),
    NoTopologyDomain: lambda: snapshot_of(
        *half_full(), make_step("subject", "team", gpus=4, pods=2, topology="rack")
    ),
    WaitingForEviction: lambda: snapshot_of(*full(), make_step("subject", "team", priority=5)),
    BlockedByReservation: lambda: snapshot_of(
        *half_full(),
        make_step("gang", "team", gpus=8, pods=2, submitted_at=900),
        make_step("subject", "lender", gpus=1, submitted_at=995),
        policy=Policy(reclaim_min_runtime_seconds=600),
    ),
    InvalidTarget: lambda: snapshot_of(make_step("subject", "team", gpus=16)),
}


def waiting_reason(snapshot: Snapshot) -> Reason:
    plan: Plan = schedule(snapshot, now=1000.0)
    assert check_plan(snapshot, plan) == []
    found = plan.reason_for("subject")
    assert found is not None
    return found


def test_every_reason_type_has_a_scenario_here() -> None:
    # By name: `dataclass(slots=True)` makes a new class, so each reason appears twice here.
    assert {k.__name__ for k in SCENARIOS} == {k.__name__ for k in Reason.__subclasses__()}


@pytest.mark.parametrize("kind", list(SCENARIOS), ids=lambda kind: kind.__name__)
def test_every_reason_type_gives_its_numbers(kind: type[Reason]) -> None:
    why = waiting_reason(SCENARIOS[kind]())
    assert type(why) is kind
    assert re.search(r"\d", why.message), f"{kind.__name__} without numbers: {why.message!r}"


@pytest.mark.parametrize("kind", list(SCENARIOS), ids=lambda kind: kind.__name__)
def test_every_reason_type_has_its_own_code(kind: type[Reason]) -> None:
    why = waiting_reason(SCENARIOS[kind]())
    assert why.code != Reason.code
    codes = [k.code for k in SCENARIOS]
    assert codes.count(why.code) == 1


def test_an_insufficient_capacity_message_reads_as_the_numbers_behind_it() -> None:
    why = waiting_reason(SCENARIOS[InsufficientCapacity]())
    assert why.message.startswith(
        "needs 1 x 2 GPUs in pool main: 0 GPUs free, best node has 0 GPUs free"
    )
