"""The driver's bookkeeping: pods in, scheduler reports and intents out, derived from the pods."""

from __future__ import annotations

import json

import pytest

from scheduler_service import pod_contract as keys
from scheduler_service.core import Policy, WorkloadState
from scheduler_service.kube._ledger import Ledger, PodRelease
from tests.kube.objects import Pod, make_gpu_node, make_pod, make_queue, released, with_phase

NOW = 1_795_000_000.0


def make_ledger(*queues: dict[str, object], nodes: int = 1, gpus: int = 8) -> Ledger:
    ledger = Ledger(pool_label=keys.POOL_LABEL, policy=Policy())
    for queue in queues or (make_queue("a", quota=8),):
        ledger.queue_changed(queue)
    for i in range(nodes):
        ledger.node_changed(make_gpu_node(f"n{i}", gpus=gpus))
    return ledger


def admit(ledger: Ledger, pods: list[Pod], now: float = NOW) -> list[Pod]:
    """Run a cycle and apply its releases as the API server would; return the released pods."""
    by_name = {p["metadata"]["name"]: p for p in pods}
    out = []
    for release in ledger.cycle(now).releases:
        pod = released(by_name[release.name], release)
        ledger.pod_changed(pod)
        out.append(pod)
    return out


def state_of(ledger: Ledger, name: str) -> WorkloadState:
    ledger.sync()
    return next(
        w.state for w in ledger.status(cycle_at=0, leader=True).snapshot.workloads if w.name == name
    )


def test_a_pod_is_released_onto_its_node_with_its_allocation_and_then_runs() -> None:
    ledger = make_ledger()
    pod = make_pod("p", gpus=2)
    ledger.pod_changed(pod)
    (release,) = ledger.cycle(NOW).releases
    assert release.hostname == "n0"
    assert release.remaining_gates == ()
    assert release.annotations[keys.NODE_ANNOTATION] == "n0"
    assert len(release.annotations[keys.GPUS_ANNOTATION].split(",")) == 2
    assert keys.GANG_ALLOCATION_ANNOTATION not in release.annotations
    ledger.pod_changed(released(pod, release))
    assert state_of(ledger, "team/p") is WorkloadState.RUNNING
    ledger.pod_changed(with_phase(released(pod, release), "Running"))  # bound and started
    assert state_of(ledger, "team/p") is WorkloadState.RUNNING
    ledger.pod_changed(make_pod("q", gpus=8))
    assert ledger.cycle(NOW + 1).releases == ()  # its GPUs are still held


def test_a_slice_carries_its_limits_for_the_container() -> None:
    ledger = make_ledger()
    ledger.pod_changed(make_pod("s", gpu_memory_mib=10240, gpu_compute_percent=25))
    (release,) = ledger.cycle(NOW).releases
    assert release.annotations[keys.MEMORY_LIMIT_ANNOTATION] == "0=10240M"
    assert release.annotations[keys.COMPUTE_LIMIT_ANNOTATION] == "25"
    assert release.annotations[keys.GPUS_ANNOTATION].isdigit()


def test_a_gang_waits_for_all_its_pods_and_is_released_whole_with_its_record() -> None:
    ledger = make_ledger(nodes=2)
    pods = [make_pod(f"g-{i}", gpus=8, gang="g", gang_size=2) for i in range(2)]
    ledger.pod_changed(pods[0])
    intents = ledger.cycle(NOW)
    assert intents.releases == ()
    assert [m.message for m in intents.messages] == [
        "aistack: waiting for the rest of gang g: 1 of 2 pods exist"
    ]
    ledger.pod_changed(pods[1])
    releases = ledger.cycle(NOW).releases
    assert sorted(r.name for r in releases) == ["g-0", "g-1"]
    records = {r.annotations[keys.GANG_ALLOCATION_ANNOTATION] for r in releases}
    assert len(records) == 1
    assert sorted(json.loads(records.pop())) == ["g-0", "g-1"]
    assert {r.hostname for r in releases} == {"n0", "n1"}


def test_a_release_cut_short_is_finished_from_the_record_and_nothing_is_placed_twice() -> None:
    ledger = make_ledger(nodes=2)
    pods = [make_pod(f"g-{i}", gpus=8, gang="g", gang_size=2) for i in range(2)]
    for pod in pods:
        ledger.pod_changed(pod)
    releases = ledger.cycle(NOW).releases
    first = released(pods[0], releases[0])
    # The service dies after the first patch: a new one starts from what the cluster holds.
    fresh = make_ledger(nodes=2)
    fresh.pod_changed(first)
    fresh.pod_changed(pods[1])
    intents = fresh.cycle(NOW + 5)
    (roll_forward,) = intents.releases
    assert roll_forward.name == "g-1"
    assert (
        roll_forward.annotations[keys.NODE_ANNOTATION]
        == releases[1].annotations[keys.NODE_ANNOTATION]
    )
    assert state_of(fresh, "team/g") is WorkloadState.RUNNING
    fresh.pod_changed(released(pods[1], roll_forward))
    assert fresh.cycle(NOW + 6).releases == ()


def test_a_restarted_ledger_rebuilds_placements_from_pods() -> None:
    ledger = make_ledger()
    pods = [make_pod(f"p{i}", gpus=4) for i in range(3)]
    for pod in pods:
        ledger.pod_changed(pod)
    running = admit(ledger, pods)
    assert len(running) == 2
    fresh = make_ledger()
    for pod in [*running, pods[2]]:
        fresh.pod_changed(pod)
    intents = fresh.cycle(NOW + 60)
    assert intents.releases == ()
    assert [m.name for m in intents.messages] == ["p2"]
    assert "InsufficientCapacity" not in intents.messages[0].message
    assert intents.messages[0].message.startswith("aistack: ")


def test_reclaim_evicts_borrowed_pods_with_a_recognisable_message_until_they_go() -> None:
    ledger = make_ledger(make_queue("a", quota=4), make_queue("b", quota=4))
    borrowed = [make_pod(f"a{i}", "a", gpus=2) for i in range(4)]
    for pod in borrowed:
        ledger.pod_changed(pod)
    running = admit(ledger, borrowed)
    assert len(running) == 4
    ledger.pod_changed(make_pod("b0", "b", gpus=4, created="2026-11-24T10:05:00Z"))
    intents = ledger.cycle(NOW + 600)
    assert intents.releases == ()
    assert len(intents.evictions) == 2
    assert all(e.message.startswith("aistack: reclaimed for team/b0") for e in intents.evictions)
    # Not deleted yet: the next cycle asks again, and does not evict more.
    again = ledger.cycle(NOW + 601)
    assert sorted(e.name for e in again.evictions) == sorted(e.name for e in intents.evictions)
    by_name = {p["metadata"]["name"]: p for p in running}
    for eviction in intents.evictions:
        ledger.pod_changed(with_phase(by_name[eviction.name], "Running", deleting=True))
    assert ledger.cycle(NOW + 602).evictions == ()
    for eviction in intents.evictions:
        ledger.pod_deleted(by_name[eviction.name])
    (release,) = ledger.cycle(NOW + 603).releases
    assert release.name == "b0"


def test_a_pending_pod_is_told_why_once() -> None:
    ledger = make_ledger(make_queue("a", quota=0, limit=0))
    pod = make_pod("p", gpus=1)
    ledger.pod_changed(pod)
    (message,) = ledger.cycle(NOW).messages
    assert message.message.startswith("aistack: ")
    told = pod | {
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message.message,
                }
            ],
        }
    }
    told["metadata"] = pod["metadata"] | {"resourceVersion": "999999"}
    ledger.pod_changed(told)
    assert ledger.cycle(NOW + 1).messages == ()


def test_finished_pods_free_their_gpus() -> None:
    ledger = make_ledger(nodes=1, gpus=8)
    first = make_pod("p0", gpus=8)
    ledger.pod_changed(first)
    (running,) = admit(ledger, [first])
    second = make_pod("p1", gpus=8)
    ledger.pod_changed(second)
    assert ledger.cycle(NOW + 1).releases == ()
    ledger.pod_changed(with_phase(running, "Succeeded"))
    (release,) = ledger.cycle(NOW + 2).releases
    assert release.name == "p1"


def test_a_vanished_node_stays_as_a_stand_in_until_its_pods_go() -> None:
    ledger = make_ledger(nodes=1)
    pod = make_pod("p", gpus=8)
    ledger.pod_changed(pod)
    (running,) = admit(ledger, [pod])
    ledger.node_deleted(make_gpu_node("n0"))
    ledger.cycle(NOW + 1)
    (node,) = ledger.status(cycle_at=0, leader=True).snapshot.nodes
    assert (node.name, node.ready) == ("n0", False)
    ledger.pod_deleted(running)
    ledger.cycle(NOW + 2)
    assert ledger.status(cycle_at=0, leader=True).snapshot.nodes == ()


def test_queue_status_is_sent_only_when_it_changes() -> None:
    ledger = make_ledger(make_queue("a", quota=4))
    (update,) = ledger.cycle(NOW).queue_statuses
    assert update.name == "a"
    assert update.status["quota"] == 4.0
    assert ledger.cycle(NOW + 1).queue_statuses == ()
    ledger.pod_changed(make_pod("p", gpus=2))
    (update,) = ledger.cycle(NOW + 2).queue_statuses
    assert update.status["pools"][0]["demand"] == 2.0


def test_a_pod_the_service_cannot_read_is_told_what_is_wrong() -> None:
    ledger = make_ledger()
    pod = make_pod("p", annotations={keys.PRIORITY_ANNOTATION: "high"})
    ledger.pod_changed(pod)
    (message,) = ledger.cycle(NOW).messages
    assert "aistack.io/priority='high' must be an integer" in message.message


def test_a_stale_watch_event_does_not_undo_a_patch() -> None:
    ledger = make_ledger()
    pod = make_pod("p", gpus=1)
    ledger.pod_changed(pod)
    (release,) = ledger.cycle(NOW).releases
    ledger.pod_changed(released(pod, release))
    ledger.pod_changed(pod)  # the watch delivers the pre-patch copy late
    assert state_of(ledger, "team/p") is WorkloadState.RUNNING
    assert ledger.cycle(NOW + 1).releases == ()


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        (
            {"metadata": {"name": "q"}, "spec": {"pools": [{"pool": "x", "quota": 2, "limit": 1}]}},
            "limit must be >= quota",
        ),
        ({"metadata": {"name": "q"}, "spec": {"pools": [{"quota": 2}]}}, "'pool'"),
    ],
)
def test_a_bad_queue_is_recorded_with_its_error_and_not_used(
    queue: dict[str, object], message: str
) -> None:
    ledger = make_ledger()
    ledger.queue_changed(queue)
    assert message in ledger.queue_errors["q"]
    assert "q" not in ledger.queues()


def test_release_patches_keep_other_gates() -> None:
    ledger = make_ledger()
    pod = make_pod("p", gpus=1)
    pod["spec"]["schedulingGates"].append({"name": "example.com/other"})
    ledger.pod_changed(pod)
    (release,) = ledger.cycle(NOW).releases
    assert isinstance(release, PodRelease)
    assert release.remaining_gates == ("example.com/other",)


def test_an_accepted_release_holds_the_gpus_before_its_watch_event_arrives() -> None:
    ledger = make_ledger(nodes=1, gpus=8)
    pod = make_pod("p", gpus=8)
    ledger.pod_changed(pod)
    (release,) = ledger.cycle(NOW).releases
    after = released(pod, release)
    ledger.released(release, after["metadata"]["resourceVersion"])
    ledger.pod_changed(make_pod("q", gpus=8))
    assert ledger.cycle(NOW + 1).releases == ()
    ledger.pod_changed(pod)  # an older copy, still on its way through the watch
    assert ledger.cycle(NOW + 2).releases == ()
    assert state_of(ledger, "team/p") is WorkloadState.RUNNING
    ledger.pod_changed(after)  # the watch catches up: nothing changes
    assert state_of(ledger, "team/p") is WorkloadState.RUNNING
