"""A snapshot a driver got wrong is refused at the seam, with a message that names the part."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from scheduler_service.core import (
    GPU,
    Node,
    PodAllocation,
    PoolQuota,
    Queue,
    Request,
    Snapshot,
    SnapshotError,
    Workload,
    WorkloadState,
)
from tests.core.builders import make_node, make_queue, make_snapshot, make_step, pod_on, run

NODE = make_node("n1", gpus=2)
TEAM = make_queue("team")


def snapshot_with(*workloads: Workload) -> Snapshot:
    return make_snapshot([NODE], [TEAM], workloads)


CASES: list[tuple[str, Callable[[], object], str]] = [
    (
        "duplicate-node",
        lambda: make_snapshot([NODE, NODE], [TEAM]),
        "snapshot: duplicate node 'n1'",
    ),
    (
        "duplicate-queue",
        lambda: make_snapshot([NODE], [TEAM, TEAM]),
        "snapshot: duplicate queue 'team'",
    ),
    (
        "duplicate-workload",
        lambda: snapshot_with(make_step("w"), make_step("w")),
        "snapshot: duplicate workload 'w'",
    ),
    (
        "duplicate-gpu-uuid",
        lambda: make_snapshot([NODE, replace(make_node("n2"), gpus=NODE.gpus)], [TEAM]),
        "snapshot: duplicate GPU uuid 'n1-gpu0'",
    ),
    (
        "unknown-parent",
        lambda: make_snapshot([NODE], [make_queue("team", "org")]),
        "queue 'team': parent 'org' does not exist; create it first",
    ),
    (
        "parent-cycle",
        lambda: make_snapshot([NODE], [make_queue("a", "b"), make_queue("b", "a")]),
        "parent chain forms a cycle",
    ),
    (
        "own-parent",
        lambda: Queue("team", parent="team"),
        "queue 'team': a queue cannot be its own parent",
    ),
    (
        "allocation-on-unknown-node",
        lambda: snapshot_with(run(make_step("w"), pod_on("ghost", 0))),
        "workload 'w': allocated on unknown node 'ghost'",
    ),
    (
        "gpu-of-another-node",
        lambda: snapshot_with(run(make_step("w"), PodAllocation("n1", ("n9-gpu0",)))),
        "workload 'w': GPUs ['n9-gpu0'] are not on node 'n1'",
    ),
    (
        "running-without-allocation",
        lambda: replace(make_step("w"), state=WorkloadState.RUNNING),
        "workload 'w': a running workload needs an allocation",
    ),
    (
        "pending-with-allocation",
        lambda: replace(make_step("w"), allocation=(pod_on("n1", 0),)),
        "workload 'w': a pending workload must not carry an allocation",
    ),
    (
        "allocation-of-the-wrong-size",
        lambda: run(make_step("w", pods=2), pod_on("n1", 0)),
        "workload 'w': allocation has 1 pods, expected 2",
    ),
    (
        "placed-without-start-time",
        lambda: replace(run(make_step("w"), pod_on("n1", 0)), started_at=None),
        "workload 'w': a placed workload needs started_at",
    ),
    (
        "no-pods",
        lambda: make_step("w", pods=0),
        "workload 'w': pods must be >= 1, got 0",
    ),
    (
        "whole-gpus-and-a-slice",
        lambda: Request(gpus=1, gpu_memory_mib=1024, gpu_compute_percent=10),
        "request: ask for whole GPUs or a slice of one GPU, not both",
    ),
    (
        "slice-over-100-percent",
        lambda: Request(gpu_memory_mib=1024, gpu_compute_percent=150),
        "0 < gpu_compute_percent <= 100, got gpu_memory_mib=1024, gpu_compute_percent=150",
    ),
    (
        "limit-below-quota",
        lambda: PoolQuota("h100", quota=4, limit=2),
        "pool quota 'h100': limit must be >= quota (4), got 2",
    ),
    (
        "negative-weight",
        lambda: PoolQuota("h100", over_quota_weight=-1),
        "pool quota 'h100': over_quota_weight must be >= 0, got -1",
    ),
    (
        "gpu-without-memory",
        lambda: GPU(index=0, uuid="u", model="H100", memory_mib=0),
        "GPU 'u': memory_mib must be > 0, got 0",
    ),
    (
        "mixed-models-on-a-node",
        lambda: Node(
            "n1",
            "h100",
            gpus=(GPU(0, "u0", "H100", 81920), GPU(1, "u1", "A100", 40960)),
        ),
        "node 'n1': all GPUs of a node must be one model, got ['A100', 'H100']",
    ),
    (
        "repeated-topology-level",
        lambda: Node("n1", "h100", topology=(("rack", "r1"), ("rack", "r2"))),
        "node 'n1': topology levels must be distinct, got ['rack', 'rack']",
    ),
]


@pytest.mark.parametrize(
    ("build", "message"), [(b, m) for _, b, m in CASES], ids=[c[0] for c in CASES]
)
def test_a_bad_snapshot_is_refused_with_a_message_naming_the_part(
    build: Callable[[], object], message: str
) -> None:
    with pytest.raises(SnapshotError) as refused:
        build()
    assert message in str(refused.value)


def test_a_workload_naming_an_unknown_queue_is_not_a_snapshot_error() -> None:
    # A user's mistake, not the driver's: the workload waits with a reason instead.
    snapshot = snapshot_with(make_step("w", "ghost"))
    assert snapshot.workloads[0].queue == "ghost"
