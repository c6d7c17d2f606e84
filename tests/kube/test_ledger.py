"""The driver's bookkeeping: pods in, scheduler reports and intents out, derived from the pods."""

from __future__ import annotations

import json

import pytest

from scheduler_service import pod_contract as keys
from scheduler_service.core import Policy, WorkloadState
from scheduler_service.kube._ledger import (
    PodEviction,
    PodLedger,
    PodMessage,
    PodRelease,
    _places_in,
    format_time,
)
from tests.kube.objects import (
    Pod,
    make_gpu_node,
    make_pod,
    make_queue,
    released,
    stopped,
    with_containers,
    with_phase,
)

NOW = 1_795_000_000.0


def make_ledger(
    *queues: dict[str, object],
    nodes: int = 1,
    gpus: int = 8,
    grace: float = 30,
    assembly_timeout: float = 600,
) -> PodLedger:
    ledger = PodLedger(
        pool_label=keys.POOL_LABEL,
        policy=Policy(),
        eviction_grace_seconds=grace,
        gang_assembly_timeout_seconds=assembly_timeout,
    )
    for queue in queues or (make_queue("a", quota=8),):
        ledger.queue_changed(queue)
    for i in range(nodes):
        ledger.node_changed(make_gpu_node(f"n{i}", gpus=gpus))
    return ledger


def admit(ledger: PodLedger, pods: list[Pod], now: float = NOW) -> list[Pod]:
    """Run a cycle and apply its releases as the API server would; return the released pods."""
    by_name = {p["metadata"]["name"]: p for p in pods}
    out = []
    for release in ledger.cycle(now).releases:
        pod = released(by_name[release.name], release)
        ledger.pod_changed(pod)
        out.append(pod)
    return out


def state_of(ledger: PodLedger, name: str, now: float = NOW) -> WorkloadState:
    ledger.sync(now)
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
        "aistack: waiting for the rest of gang g: 1 of 2 pods exist; it fails if still "
        "incomplete 600s after its first pod"
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


def test_reclaim_stops_borrowed_pods_with_the_cores_message_until_their_containers_stop() -> None:
    ledger = make_ledger(make_queue("a", quota=4), make_queue("b", quota=4))
    borrowed = [make_pod(f"a{i}", "a", gpus=2) for i in range(4)]
    for pod in borrowed:
        ledger.pod_changed(pod)
    running = {p["metadata"]["name"]: with_phase(p, "Running") for p in admit(ledger, borrowed)}
    for pod in running.values():
        ledger.pod_changed(pod)
    ledger.pod_changed(make_pod("b0", "b", gpus=4, created="2026-11-24T10:05:00Z"))
    intents = ledger.cycle(NOW + 600)
    assert intents.releases == ()
    assert len(intents.evictions) == 2
    for eviction in intents.evictions:
        assert eviction.cause == "Reclaimed"
        assert eviction.message.startswith(f"{keys.RECLAIMED_MESSAGE_PREFIX}team/b0: queue a ")
        assert eviction.message.count("reclaimed for") == 1
    # Not carried out yet: the next cycle asks again, and does not stop more.
    again = ledger.cycle(NOW + 601)
    assert sorted(e.name for e in again.evictions) == sorted(e.name for e in intents.evictions)
    victims = {e.name: stopped(running[e.name], e, NOW + 602) for e in intents.evictions}
    for pod in victims.values():
        ledger.pod_changed(pod)
    # Failed, but the kubelet has not stopped their containers: they still hold their GPUs.
    held = ledger.cycle(NOW + 603)
    assert (held.evictions, held.releases) == ((), ())
    assert {state_of(ledger, f"team/{name}", NOW + 603) for name in victims} == {
        WorkloadState.EVICTING
    }
    for pod in victims.values():
        ledger.pod_changed(with_containers(pod, "terminated"))
    (release,) = ledger.cycle(NOW + 604).releases
    assert release.name == "b0"


def test_a_stopped_pod_whose_kubelet_never_reports_holds_its_gpus_for_the_grace_only() -> None:
    ledger = make_ledger(grace=30)
    pod = make_pod("p", gpus=8, kind="train")
    ledger.pod_changed(pod)
    (running,) = admit(ledger, [pod])
    running = with_containers(with_phase(running, "Running"), "running")
    ledger.pod_changed(running)
    uid = running["metadata"]["uid"]
    eviction = PodEviction("team", "p", uid, "aistack: x", "team/p", "a", "Reclaimed")
    ledger.pod_changed(stopped(running, eviction, NOW + 10))
    ledger.pod_changed(make_pod("q", gpus=8))
    assert ledger.cycle(NOW + 39).releases == ()
    # No pod changes: the grace alone ends the hold (its DisruptionTarget's time + 30 s).
    (release,) = ledger.cycle(NOW + 40).releases
    assert release.name == "q"


def test_a_restarted_ledger_holds_a_stopped_pod_and_never_stops_it_again() -> None:
    queues = (make_queue("a", quota=0), make_queue("b", quota=8))
    ledger = make_ledger(*queues)
    borrowed = make_pod("a0", "a", gpus=8)
    ledger.pod_changed(borrowed)
    (running,) = admit(ledger, [borrowed])
    running = with_phase(running, "Running")
    ledger.pod_changed(running)
    owner = make_pod("b0", "b", gpus=4, created="2026-11-24T10:05:00Z")
    ledger.pod_changed(owner)
    (eviction,) = ledger.cycle(NOW + 600).evictions
    victim = stopped(running, eviction, NOW + 600)
    fresh = make_ledger(*queues)
    for pod in (victim, owner):
        fresh.pod_changed(pod)
    intents = fresh.cycle(NOW + 610)
    assert (intents.evictions, intents.releases) == ((), ())
    assert state_of(fresh, "team/a0", NOW + 610) is WorkloadState.EVICTING
    (release,) = fresh.cycle(NOW + 630).releases  # the grace has passed
    assert release.name == "b0"
    assert fresh.cycle(NOW + 631).evictions == ()


def test_preemption_stops_lower_priority_work_with_the_preemption_prefix() -> None:
    ledger = make_ledger(make_queue("a", quota=8))
    low = make_pod("low", gpus=8, annotations={keys.PRIORITY_ANNOTATION: "-5"})
    ledger.pod_changed(low)
    admit(ledger, [low])
    ledger.pod_changed(make_pod("high", gpus=8, annotations={keys.PRIORITY_ANNOTATION: "5"}))
    (eviction,) = ledger.cycle(NOW + 60).evictions
    assert (eviction.name, eviction.cause) == ("low", "Preempted")
    assert eviction.message.startswith(f"{keys.PREEMPTED_MESSAGE_PREFIX}team/high (priority 5")


def test_a_gang_eviction_cut_short_is_finished_after_a_restart() -> None:
    queues = (make_queue("a", quota=0), make_queue("b", quota=16))
    ledger = make_ledger(*queues, nodes=2)
    gang = [make_pod(f"g-{i}", "a", gpus=8, gang="g", gang_size=2) for i in range(2)]
    for pod in gang:
        ledger.pod_changed(pod)
    running = [with_phase(p, "Running") for p in admit(ledger, gang)]
    for pod in running:
        ledger.pod_changed(pod)
    owner = make_pod("b0", "b", gpus=8, created="2026-11-24T10:05:00Z")
    ledger.pod_changed(owner)
    first, second = ledger.cycle(NOW + 600).evictions
    # The service dies after stopping one member: a new one finishes the job, saying the same.
    fresh = make_ledger(*queues, nodes=2)
    for pod in (stopped(running[0], first, NOW + 600), running[1], owner):
        fresh.pod_changed(pod)
    (again,) = fresh.cycle(NOW + 601).evictions
    assert (again.name, again.cause, again.message) == (second.name, "Reclaimed", second.message)
    assert fresh.cycle(NOW + 601).releases == ()


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
        (
            {"metadata": {"name": "q"}, "spec": {"pools": [{"quota": 2}]}},
            "malformed: spec.pools[0] needs a pool",
        ),
        (
            {"metadata": {"name": "q"}, "spec": {"pools": [{"pool": "x", "quota": 1e306}]}},
            "spec.pools[0].quota 1e+306 is outside 0..1e+06",
        ),
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


# -- what a waiting pod is told ---------------------------------------------------------------


def test_a_waiting_pod_is_told_its_queue_place_the_queues_standing_and_the_reason() -> None:
    ledger = make_ledger(make_queue("a", quota=4, limit=8), make_queue("b", quota=4))
    first = make_pod("p0", gpus=8)
    ledger.pod_changed(first)
    admit(ledger, [first])
    ledger.pod_changed(make_pod("p1", gpus=4, created="2026-11-24T10:01:00Z"))
    ledger.pod_changed(make_pod("p2", gpus=2, created="2026-11-24T10:02:00Z"))
    told = {m.name: m.message for m in ledger.cycle(NOW + 1).messages}
    assert told == {
        "p1": "aistack: queue a, 1st of 2 waiting; pool H100: quota 4, used 8 (4 borrowed) GPUs; "
        "queue a at limit 8/8 GPUs; this step needs 4 more",
        "p2": "aistack: queue a, 2nd of 2 waiting; pool H100: quota 4, used 8 (4 borrowed) GPUs; "
        "queue a at limit 8/8 GPUs; this step needs 2 more",
    }


def tell(ledger: PodLedger, messages: tuple[PodMessage, ...]) -> None:
    """As the driver does once the API server accepted each message."""
    for message in messages:
        ledger.message_written(message, "1")


def test_a_long_queue_rewrites_only_the_messages_whose_place_changes_in_words() -> None:
    ledger = make_ledger(make_queue("a", quota=0, limit=0))
    pods = [make_pod(f"p{i:02}", gpus=1, created=format_time(NOW - 600 + i)) for i in range(60)]
    for pod in pods:
        ledger.pod_changed(pod)
    first = ledger.cycle(NOW).messages
    assert len(first) == 60
    places = {m.name: m.message.split(";")[0] for m in first}
    assert places["p01"] == "aistack: queue a, 2nd of 60 waiting"
    assert places["p10"] == "aistack: queue a, 11th-20th in line"
    assert places["p59"] == "aistack: queue a, 51st-100th in line"
    tell(ledger, first)
    ledger.pod_deleted(pods[0])  # the head leaves: every place behind it moves up by one
    moved = ledger.cycle(NOW + 1).messages
    # The nine still in the first ten, the one that enters them, and the two that cross a
    # range's bound (21st -> 20th, 51st -> 50th); not the other 47.
    assert sorted(m.name for m in moved) == [*(f"p{i:02}" for i in range(1, 11)), "p20", "p50"]
    tell(ledger, moved)
    ledger.pod_changed(make_pod("late", gpus=1, created=format_time(NOW)))
    arrived = ledger.cycle(NOW + 2).messages
    assert sorted(m.name for m in arrived) == ["late", *(f"p{i:02}" for i in range(1, 11))]


def test_places_are_exact_at_the_head_and_ranges_behind() -> None:
    order = [f"w{i}" for i in range(1, 9001)]
    places = dict(_places_in(order))
    assert [places[f"w{i}"] for i in (1, 3, 10)] == [
        "1st of 9000 waiting",
        "3rd of 9000 waiting",
        "10th of 9000 waiting",
    ]
    assert {places[f"w{i}"] for i in range(11, 21)} == {"11th-20th in line"}
    assert places["w21"] == places["w50"] == "21st-50th in line"
    assert places["w101"] == "101st-200th in line"
    assert places["w734"] == "501st-1000th in line"
    assert places["w4000"] == places["w5000"] == "2001st-5000th in line"
    assert places["w9000"] == "5001st-10000th in line"
    assert dict(_places_in(["only"])) == {"only": "1st of 1 waiting"}


# -- gangs that lose a member or never assemble ----------------------------------------------------


def running_gang(ledger: PodLedger, size: int = 3) -> list[Pod]:
    """A gang `g` of `size` 8-GPU pods, placed and running (one per node)."""
    pods = [make_pod(f"g-{i}", gpus=8, gang="g", gang_size=size) for i in range(size)]
    for pod in pods:
        ledger.pod_changed(pod)
    running = [with_phase(p, "Running") for p in admit(ledger, pods)]
    for pod in running:
        ledger.pod_changed(pod)
    return running


def test_a_pod_beyond_a_placed_gang_s_size_is_stopped_saying_why_and_the_gang_runs_on() -> None:
    ledger = make_ledger(nodes=3)
    running_gang(ledger, size=2)
    extra = make_pod("g-2", gpus=8, gang="g", gang_size=2)
    ledger.pod_changed(extra)

    (stop,) = ledger.cycle(NOW + 60).evictions

    assert (stop.name, stop.cause) == ("g-2", "GangFull")
    assert stop.message == (
        "aistack: gang g already runs its 2 pods (g-0, g-1); a pod beyond its "
        "aistack.io/gang-size can never join it: delete the pod, or give it a gang of its own"
    )
    assert state_of(ledger, "team/g", NOW + 60) is WorkloadState.RUNNING
    ledger.pod_changed(stopped(extra, stop, NOW + 60))
    assert ledger.cycle(NOW + 61).evictions == ()  # the gang's own pods are not stopped with it
    assert state_of(ledger, "team/g", NOW + 61) is WorkloadState.RUNNING


LOST_FAILED = (
    "aistack: gang g lost member g-1 (failed); its other pods are stopped so that the gang is "
    "retried, or fails, as a unit"
)


def test_a_gang_whose_member_fails_is_stopped_as_a_unit_and_not_as_a_reclaim() -> None:
    ledger = make_ledger(nodes=3)
    gang = running_gang(ledger)
    ledger.pod_changed(with_phase(gang[1], "Failed"))
    stops = ledger.cycle(NOW + 60).evictions
    assert sorted(s.name for s in stops) == ["g-0", "g-2"]
    assert {(s.cause, s.message) for s in stops} == {("GangMemberLost", LOST_FAILED)}
    assert not LOST_FAILED.startswith(
        (keys.RECLAIMED_MESSAGE_PREFIX, keys.PREEMPTED_MESSAGE_PREFIX)
    )  # aistack_flows retries those for free; these follow the step's own retry policy
    assert state_of(ledger, "team/g", NOW + 60) is WorkloadState.EVICTING
    # A restart reaches the same decision from the pods; once stopped, no one asks again.
    fresh = make_ledger(nodes=3)
    for pod in (gang[0], with_phase(gang[1], "Failed"), gang[2]):
        fresh.pod_changed(pod)
    assert fresh.cycle(NOW + 61).evictions == stops
    for stop, pod in zip(stops, (gang[0], gang[2]), strict=True):
        fresh.pod_changed(stopped(pod, stop, NOW + 61))
    assert fresh.cycle(NOW + 62).evictions == ()


def test_a_gang_whose_member_is_deleted_is_stopped_as_a_unit() -> None:
    ledger = make_ledger(nodes=3)
    gang = running_gang(ledger)
    ledger.pod_deleted(gang[1])
    stops = ledger.cycle(NOW + 60).evictions
    assert sorted(s.name for s in stops) == ["g-0", "g-2"]
    assert stops[0].message.startswith("aistack: gang g lost member g-1 (deleted); ")


def test_a_member_gone_before_a_restart_is_not_taken_as_lost() -> None:
    # It may have succeeded and been garbage-collected (Argo's podGC): nothing says otherwise.
    fresh = make_ledger(nodes=3)
    gang = running_gang(make_ledger(nodes=3))
    for pod in (gang[0], gang[2]):
        fresh.pod_changed(pod)
    assert fresh.cycle(NOW + 60).evictions == ()
    assert state_of(fresh, "team/g", NOW + 60) is WorkloadState.RUNNING


def test_a_gang_member_that_succeeds_leaves_the_others_alone() -> None:
    ledger = make_ledger(nodes=3)
    gang = running_gang(ledger)
    done = with_phase(gang[0], "Succeeded")
    ledger.pod_changed(done)
    assert ledger.cycle(NOW + 60).evictions == ()
    ledger.pod_deleted(done)  # and garbage-collected
    assert ledger.cycle(NOW + 61).evictions == ()
    assert state_of(ledger, "team/g", NOW + 61) is WorkloadState.RUNNING


def test_an_incomplete_gang_fails_after_the_assembly_timeout_counted_from_its_first_pod() -> None:
    ledger = make_ledger(nodes=3, assembly_timeout=600)
    pods = [
        make_pod(f"g-{i}", gpus=8, gang="g", gang_size=3, created=format_time(NOW + i * 10))
        for i in range(2)
    ]
    for pod in pods:
        ledger.pod_changed(pod)
    waiting = ledger.cycle(NOW + 599)
    assert waiting.evictions == ()
    assert waiting.messages[0].message == (
        "aistack: waiting for the rest of gang g: 2 of 3 pods exist; it fails if still "
        "incomplete 600s after its first pod"
    )
    stops = ledger.cycle(NOW + 600).evictions  # no pod changed: the time alone did it
    assert sorted(s.name for s in stops) == ["g-0", "g-1"]
    assert {(s.cause, s.message) for s in stops} == {
        (
            "GangIncomplete",
            "aistack: gang g incomplete: 2 of 3 pods appeared in 600s "
            "(gang_assembly_timeout_seconds 600)",
        )
    }
    fresh = make_ledger(nodes=3, assembly_timeout=600)  # a restart does not start it again
    for pod in pods:
        fresh.pod_changed(pod)
    assert [s.name for s in fresh.cycle(NOW + 601).evictions] == ["g-0", "g-1"]
    for stop, pod in zip(stops, pods, strict=True):
        fresh.pod_changed(stopped(pod, stop, NOW + 601))
    assert fresh.cycle(NOW + 602).evictions == ()
    assert fresh.status(cycle_at=0, leader=True).snapshot.workloads == ()


# -- deadlines ------------------------------------------------------------------------------------


def test_a_waiting_pod_whose_deadline_passes_is_failed_naming_its_queue_and_wait() -> None:
    ledger = make_ledger(make_queue("a", quota=0, limit=0))
    pod = make_pod("p", gpus=1, created=format_time(NOW), active_deadline_seconds=600)
    ledger.pod_changed(pod)
    assert ledger.cycle(NOW + 599).evictions == ()
    (stop,) = ledger.cycle(NOW + 601).evictions  # no pod changed: the time alone did it
    assert (stop.name, stop.cause) == ("p", "DeadlineExceeded")
    assert stop.message == (
        "aistack: deadline passed: waited 601s in queue a (activeDeadlineSeconds 600)"
    )
    assert stop.message.startswith(keys.DEADLINE_MESSAGE_PREFIX)
    ledger.pod_changed(stopped(pod, stop, NOW + 601))
    again = ledger.cycle(NOW + 602)
    assert (again.evictions, again.messages) == ((), ())


def test_a_pod_whose_gate_was_lifted_by_hand_is_stopped_and_never_placed() -> None:
    ledger = make_ledger()
    pod = make_pod("p", gpus=1)
    pod["spec"]["schedulingGates"] = []  # removed by someone else; no allocation written
    ledger.pod_changed(pod)

    intents = ledger.cycle(NOW)

    assert intents.releases == ()
    (stop,) = intents.evictions
    assert (stop.name, stop.cause) == ("p", "GateRemoved")
    assert "aistack.io/admission of pod p was removed outside the scheduler" in stop.message
    assert stop.message.endswith("create it again to wait in queue a")
    ledger.pod_changed(stopped(pod, stop, NOW))
    assert ledger.cycle(NOW + 1).evictions == ()


def test_a_pod_past_its_deadline_is_failed_not_admitted_even_when_room_appears() -> None:
    ledger = make_ledger(nodes=0)
    pod = make_pod("p", gpus=1, created=format_time(NOW), active_deadline_seconds=60)
    ledger.pod_changed(pod)
    ledger.cycle(NOW + 1)
    ledger.node_changed(make_gpu_node("n0"))
    intents = ledger.cycle(NOW + 60)
    assert [s.name for s in intents.evictions] == ["p"]
    assert intents.releases == ()


def test_a_gang_fails_whole_when_one_members_deadline_passes() -> None:
    ledger = make_ledger(make_queue("a", quota=0, limit=0))
    pods = [
        make_pod(
            f"g-{i}",
            gpus=1,
            gang="g",
            gang_size=2,
            created=format_time(NOW),
            active_deadline_seconds=300 if i else None,
        )
        for i in range(2)
    ]
    for pod in pods:
        ledger.pod_changed(pod)
    stops = ledger.cycle(NOW + 300).evictions
    assert sorted(s.name for s in stops) == ["g-0", "g-1"]
    assert stops[0].message == (
        "aistack: deadline passed: waited 300s in queue a (activeDeadlineSeconds 300); all 2 "
        "pods of gang g fail with it"
    )


def test_a_running_pods_deadline_is_the_kubelets_business() -> None:
    ledger = make_ledger()
    pod = make_pod("p", gpus=1, created=format_time(NOW), active_deadline_seconds=60)
    ledger.pod_changed(pod)
    (running,) = admit(ledger, [pod], now=NOW + 1)
    ledger.pod_changed(with_phase(running, "Running"))
    assert ledger.cycle(NOW + 120).evictions == ()


# -- gang DNS -------------------------------------------------------------------------------------


def test_a_gang_whose_pods_want_dns_names_asks_for_the_gang_service_on_release() -> None:
    ledger = make_ledger(nodes=2)
    dns = {keys.GANG_DNS_LABEL: "true"}
    for i in range(2):
        ledger.pod_changed(make_pod(f"g-{i}", gpus=8, gang="g", gang_size=2, labels=dns))
    ledger.pod_changed(make_pod("plain", "a", gpus=0))
    releases = ledger.cycle(NOW).releases
    assert {(r.name, r.gang_dns) for r in releases} == {
        ("g-0", True),
        ("g-1", True),
        ("plain", False),
    }


def test_a_queue_s_namespaces_narrow_along_its_ancestors() -> None:
    ledger = make_ledger()
    org = make_queue("org", quota=8)
    org["spec"]["namespaces"] = ["vision", "nlp"]
    team = make_queue("vision", quota=4, parent="org")
    team["spec"]["namespaces"] = ["vision", "robotics"]
    free = make_queue("free", quota=1)
    for queue in (org, team, free, make_queue("vision-train", quota=1, parent="vision")):
        ledger.queue_changed(queue)

    assert ledger.allowed_namespaces("vision-train") == ("vision",)
    assert ledger.allowed_namespaces("org") == ("nlp", "vision")
    assert ledger.allowed_namespaces("free") is None
    bad = make_queue("bad", quota=1)
    bad["spec"]["namespaces"] = "vision"
    ledger.queue_changed(bad)
    assert "spec.namespaces must be a list of namespace names" in ledger.queue_errors["bad"]


def test_a_queue_holding_half_a_gang_still_counts_it() -> None:
    ledger = make_ledger()
    ledger.pod_changed(make_pod("g-0", gpus=1, gang="g", gang_size=2))
    ledger.cycle(NOW)
    assert ledger.workloads_in("a") == 1  # the gang waits for its second pod: not reported
    broken = make_pod("b", gpus=1, annotations={keys.PRIORITY_ANNOTATION: "many"})
    ledger.pod_changed(broken)
    ledger.cycle(NOW)
    assert ledger.workloads_in("a") == 2  # a pod the scheduler cannot read still holds it
    assert ledger.workloads_in("b") == 0


# -- GPUs held by pods the scheduler does not manage -----------------------------------------------


def unmanaged(name: str, node: str, gpus: int, *, init_gpus: int = 0) -> Pod:
    """A pod without the queue label, bound to `node`, holding GPUs through the device plugin."""
    limits = {keys.GPU_RESOURCE: str(gpus)} if gpus else {}
    init = [{"name": "warm", "resources": {"limits": {keys.GPU_RESOURCE: str(init_gpus)}}}]
    return {
        "metadata": {"uid": f"uid-{name}", "name": name, "namespace": "kube-system"},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "resources": {"limits": limits}}],
            "initContainers": init if init_gpus else [],
        },
        "status": {"phase": "Running"},
    }


def test_gpus_of_unmanaged_pods_are_never_handed_out_and_come_back_when_they_end() -> None:
    ledger = make_ledger(nodes=1, gpus=8)
    ledger.unmanaged_pod_changed(unmanaged("dcgm-probe", "n0", 2))
    ledger.unmanaged_pod_changed(unmanaged("warmup", "n0", 1, init_gpus=3))  # init counts: 3
    ledger.unmanaged_pod_changed(unmanaged("no-gpu", "n0", 0))
    assert ledger.unmanaged_gpus() == {"n0": 5}

    whole = make_pod("w", gpus=3)
    ledger.pod_changed(whole)
    (placed,) = admit(ledger, [whole])
    assert placed["metadata"]["annotations"][keys.GPUS_ANNOTATION] == "0,1,2"  # not 3..7
    big = make_pod("big", gpus=1)
    ledger.pod_changed(big)
    assert admit(ledger, [big], NOW + 1) == []  # 3 + 5 = 8: nothing left

    ledger.unmanaged_pod_deleted(unmanaged("dcgm-probe", "n0", 2))
    (later,) = admit(ledger, [big], NOW + 2)
    assert later["metadata"]["name"] == "big"


def test_a_reservation_pod_no_slice_needs_holds_its_gpu_in_the_books_until_it_goes() -> None:
    ledger = make_ledger(nodes=1, gpus=2)
    ledger.idle_reservations_changed({"aistack-gpu-1": "n0"})  # lingering after its slices
    assert ledger.unmanaged_gpus() == {"n0": 1}
    whole = make_pod("w", gpus=2)
    ledger.pod_changed(whole)
    assert admit(ledger, [whole]) == []  # the device plugin has 1 device free, not 2

    ledger.idle_reservations_changed({})
    (placed,) = admit(ledger, [whole], NOW + 1)
    assert placed["metadata"]["annotations"][keys.GPUS_ANNOTATION] == "0,1"


def test_unmanaged_pods_beyond_the_free_gpus_are_said_and_placed_work_stays() -> None:
    ledger = make_ledger(nodes=1, gpus=8)
    work = make_pod("w", gpus=6)
    ledger.pod_changed(work)
    assert len(admit(ledger, [work])) == 1
    ledger.unmanaged_pod_changed(unmanaged("rogue", "n0", 4))
    ledger.cycle(NOW + 1)
    assert ledger.unmanaged_shortfall == {"n0": 2}
    assert state_of(ledger, "team/w", NOW + 1) is WorkloadState.RUNNING


# -- signed allocations ----------------------------------------------------------------------------

KEY = b"k" * 32


def test_what_the_ledger_writes_is_signed_and_a_forgery_is_stopped_not_counted() -> None:
    ledger = PodLedger(pool_label=keys.POOL_LABEL, policy=Policy(), signing_key=KEY)
    ledger.queue_changed(make_queue("a", quota=8))
    ledger.node_changed(make_gpu_node("n0", gpus=8))
    honest = make_pod("honest", gpus=4)
    ledger.pod_changed(honest)
    (placed,) = admit(ledger, [honest])
    assert placed["metadata"]["annotations"][keys.SIGNATURE_ANNOTATION]
    assert state_of(ledger, "team/honest") is WorkloadState.RUNNING

    # Someone writes an allocation on another pod: GPUs 4-7, ungated, with no good signature.
    forged = make_pod("forged", gpus=4)
    forged["metadata"]["annotations"].update(
        {keys.NODE_ANNOTATION: "n0", keys.GPUS_ANNOTATION: "4,5,6,7"}
    )
    forged["spec"]["schedulingGates"] = []
    ledger.pod_changed(forged)
    intents = ledger.cycle(NOW + 1)
    (stop,) = intents.evictions
    assert (stop.name, stop.cause) == ("forged", "ForgedAllocation")
    assert "carries an allocation the scheduler did not write" in stop.message
    # Its GPUs were never counted: another pod gets them.
    ledger.pod_changed(stopped(forged, stop, NOW + 1))
    other = make_pod("other", gpus=4)
    ledger.pod_changed(other)
    (given,) = admit(ledger, [other], NOW + 2)
    assert given["metadata"]["annotations"][keys.GPUS_ANNOTATION] == "4,5,6,7"

    # A copy of the honest pod's signed allocation on another pod does not match either.
    copied = make_pod("copied", gpus=4)
    copied["metadata"]["annotations"].update(
        {k: v for k, v in placed["metadata"]["annotations"].items() if k.startswith("alloc.")}
    )
    ledger.pod_changed(copied)
    assert [s.cause for s in ledger.cycle(NOW + 3).evictions] == ["ForgedAllocation"]
