"""Where a workload may go (pools, models, labels, taints), and what a wrong target says."""

from __future__ import annotations

import pytest

from scheduler_service.core import InvalidTarget, Plan, PoolQuota, Workload, schedule
from tests.core.builders import (
    A100_MIB,
    admitted,
    decide_workloads,
    make_node,
    make_queue,
    make_snapshot,
    make_step,
    pod_on,
    reason,
    run,
)

NODES = [
    make_node("h1", gpus=8),
    make_node("a1", gpus=4, model="A100", pool="a100", memory_mib=A100_MIB),
]
QUEUES = [
    make_queue("org"),
    make_queue("team", "org", quota=8),
    make_queue("other", "org", quota=8),
]


def node_of(plan: Plan, workload: str) -> str:
    return admitted(plan)[workload][0].node


def test_the_first_listed_pool_is_preferred() -> None:
    queues = [
        make_queue("org"),
        make_queue("team", "org", quota=8, quotas=[PoolQuota("a100", quota=4)]),
    ]
    a100_first = decide_workloads(NODES, queues, make_step("a", "team", pools=["a100", "h100"]))
    h100_first = decide_workloads(NODES, queues, make_step("h", "team", pools=["h100", "a100"]))
    assert node_of(a100_first, "a") == "a1"
    assert node_of(h100_first, "h") == "h1"


def test_a_pool_within_quota_comes_before_a_preferred_pool_that_borrows() -> None:
    # "team" has quota in h100 only: in a100 it would borrow, and be reclaimable there.
    plan = decide_workloads(NODES, QUEUES, make_step("a", "team", pools=["a100", "h100"]))
    assert node_of(plan, "a") == "h1"


def test_the_next_pool_is_used_when_the_first_is_full() -> None:
    full = run(make_step("full", "other", gpus=4), pod_on("a1", 0, 1, 2, 3))
    plan = decide_workloads(NODES, QUEUES, full, make_step("a", "team", pools=["a100", "h100"]))
    assert node_of(plan, "a") == "h1"


def test_a_model_wish_keeps_the_workload_on_that_model() -> None:
    full = run(make_step("full", "other", gpus=4), pod_on("a1", 0, 1, 2, 3))
    plan = decide_workloads(NODES, QUEUES, full, make_step("a", "team", models=["A100"]))
    assert admitted(plan) == {}


def test_the_node_selector_must_match_the_nodes_labels() -> None:
    nodes = [make_node("plain", gpus=8), make_node("fast", gpus=8, labels={"net": "ib"})]
    snapshot = make_snapshot(nodes, QUEUES, [make_step("a", "team", node_selector={"net": "ib"})])
    assert node_of(schedule(snapshot, now=0.0), "a") == "fast"


def test_a_tainted_node_takes_only_work_that_tolerates_the_taint() -> None:
    nodes = [make_node("tainted", gpus=8, taints=["dedicated"])]
    snapshot = make_snapshot(
        nodes,
        QUEUES,
        [make_step("plain", "team"), make_step("tolerant", "team", tolerations=["dedicated"])],
    )
    plan = schedule(snapshot, now=0.0)
    assert sorted(admitted(plan)) == ["tolerant"]
    assert isinstance(reason(plan, "plain"), InvalidTarget)


@pytest.mark.parametrize(
    ("workload", "message"),
    [
        pytest.param(
            make_step("w", "ghost"),
            "queue 'ghost' does not exist (queues: org, other, team)",
            id="unknown-queue",
        ),
        pytest.param(
            make_step("w", "org"),
            "queue 'org' has child queues; submit to one of: other, team",
            id="parent-queue",
        ),
        pytest.param(
            make_step("w", "team", pools=["b200"]),
            "pool(s) b200 do not exist (pools: a100, h100)",
            id="unknown-pool",
        ),
        pytest.param(
            make_step("w", "team", models=["B200"]),
            "no node has GPU model B200 (models: A100, H100)",
            id="unknown-model",
        ),
        pytest.param(
            make_step("w", "team", gpus=16),
            "no node in pool(s) a100, h100 can ever hold 1 x 16 GPUs",
            id="too-many-gpus-per-pod",
        ),
        pytest.param(
            make_step("w", "team", slice=(90000, 10)),
            "no node in pool(s) a100, h100 can ever hold 1 x GPU slice (10% compute, 90000 MiB)",
            id="slice-larger-than-any-gpu",
        ),
        pytest.param(
            make_step("w", "team", gpus=8, pods=2, pools=["h100"]),
            "no node in pool(s) h100 can ever hold 2 x 8 GPUs",
            id="gang-larger-than-the-pool",
        ),
    ],
)
def test_an_invalid_target_says_what_is_wrong(workload: Workload, message: str) -> None:
    plan = decide_workloads(NODES, QUEUES, workload)
    why = reason(plan, "w")
    assert isinstance(why, InvalidTarget)
    assert why.code == "InvalidRequest"
    assert why.message == message


def test_a_model_that_exists_only_outside_the_chosen_pools_is_not_called_missing() -> None:
    plan = decide_workloads(NODES, QUEUES, make_step("w", "team", pools=["h100"], models=["A100"]))
    why = reason(plan, "w")
    assert isinstance(why, InvalidTarget)
    # A100 GPUs exist (in pool a100); the message must not say that no node has them.
    assert "no node has GPU model A100" not in why.message
    assert "h100" in why.message


def test_an_invalid_target_does_not_stop_the_others() -> None:
    plan = decide_workloads(NODES, QUEUES, make_step("bad", "ghost"), make_step("good", "team"))
    assert sorted(admitted(plan)) == ["good"]
