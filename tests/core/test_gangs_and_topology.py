"""Gangs are placed whole or not at all; topology wishes keep them inside one domain."""

from __future__ import annotations

from scheduler_service.core import (
    InsufficientCapacity,
    InvalidTarget,
    NoTopologyDomain,
)
from tests.core.builders import (
    admitted,
    decide,
    make_node,
    make_queue,
    make_snapshot,
    make_step,
    nodes_of,
    pod_on,
    reason,
    run,
)

TEAM = make_queue("team", quota=32)


RACKED = [
    make_node("r1-a", gpus=8, topology={"block": "b1", "rack": "r1"}),
    make_node("r1-b", gpus=8, topology={"block": "b1", "rack": "r1"}),
    make_node("r2-a", gpus=8, topology={"block": "b1", "rack": "r2"}),
    make_node("r2-b", gpus=8, topology={"block": "b1", "rack": "r2"}),
]


def test_a_gang_is_placed_with_every_pod() -> None:
    snapshot = make_snapshot(
        [make_node("n1"), make_node("n2")], [TEAM], [make_step("gang", gpus=4, pods=3)]
    )
    allocation = admitted(decide(snapshot))["gang"]
    assert len(allocation) == 3
    assert all(len(pod.gpus) == 4 for pod in allocation)


def test_a_gang_that_does_not_fit_whole_takes_nothing() -> None:
    busy = run(make_step("busy", gpus=1), pod_on("n3", 0))
    snapshot = make_snapshot(
        [make_node("n1"), make_node("n2"), make_node("n3")],
        [TEAM],
        [busy, make_step("gang", gpus=8, pods=3)],
    )
    plan = decide(snapshot)
    assert admitted(plan) == {}
    why = reason(plan, "gang")
    assert isinstance(why, InsufficientCapacity)
    assert why.pods == 3
    assert "needs 3 x 8 GPUs" in why.message


def test_a_required_topology_keeps_the_gang_inside_one_rack() -> None:
    # r1-a is partly used: the gang fits in rack r2, not over r1-a and r1-b.
    busy = run(make_step("busy", gpus=4), pod_on("r1-a", 0, 1, 2, 3))
    snapshot = make_snapshot(
        RACKED, [TEAM], [busy, make_step("gang", gpus=4, pods=3, topology="rack")]
    )
    placed = nodes_of(admitted(decide(snapshot))["gang"])
    racks_used = {node[:2] for node in placed}
    assert len(racks_used) == 1


def test_a_required_topology_waits_rather_than_spreading_the_gang() -> None:
    blockers = [
        run(make_step("x1", gpus=8), pod_on("r1-a", *range(8))),
        run(make_step("x2", gpus=8), pod_on("r2-a", *range(8))),
    ]
    snapshot = make_snapshot(
        RACKED, [TEAM], [*blockers, make_step("gang", gpus=8, pods=2, topology="rack")]
    )
    plan = decide(snapshot)
    assert "gang" not in admitted(plan)
    why = reason(plan, "gang")
    assert isinstance(why, NoTopologyDomain)
    assert (why.level, why.pods, why.best_domain_pods) == ("rack", 2, 1)
    assert "no rack in pool h100 has room for 2 x 8 GPUs" in why.message


def test_a_preferred_topology_spreads_the_gang_when_no_domain_fits() -> None:
    blockers = [
        run(make_step("x1", gpus=8), pod_on("r1-a", *range(8))),
        run(make_step("x2", gpus=8), pod_on("r2-a", *range(8))),
    ]
    gang = make_step("gang", gpus=8, pods=2, topology="rack", topology_required=False)
    snapshot = make_snapshot(RACKED, [TEAM], [*blockers, gang])
    assert sorted(nodes_of(admitted(decide(snapshot))["gang"])) == ["r1-b", "r2-b"]


def test_a_preferred_topology_uses_one_domain_when_one_fits() -> None:
    gang = make_step("gang", gpus=4, pods=4, topology="rack", topology_required=False)
    snapshot = make_snapshot(RACKED, [TEAM], [gang])
    placed = nodes_of(admitted(decide(snapshot))["gang"])
    assert len({node[:2] for node in placed}) == 1


def test_racks_of_the_same_name_in_different_blocks_are_different_domains() -> None:
    nodes = [
        make_node("b1", gpus=4, topology={"block": "b1", "rack": "r1"}),
        make_node("b2", gpus=4, topology={"block": "b2", "rack": "r1"}),
    ]
    snapshot = make_snapshot(nodes, [TEAM], [make_step("gang", gpus=4, pods=2, topology="rack")])
    plan = decide(snapshot)
    why = reason(plan, "gang")
    assert isinstance(why, InvalidTarget)
    assert why.message == "no node in pool(s) h100 can ever hold 2 x 4 GPUs inside one rack"


def test_nodes_without_the_level_are_outside_every_domain_of_it() -> None:
    nodes = [make_node("bare-1", gpus=4), make_node("bare-2", gpus=4)]
    snapshot = make_snapshot(nodes, [TEAM], [make_step("gang", gpus=4, pods=2, topology="rack")])
    plan = decide(snapshot)
    assert "gang" not in admitted(plan)
    assert "inside one rack" in reason(plan, "gang").message
