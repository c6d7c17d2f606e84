"""GPU reservations decided from pods alone: what is created, finished, told and deleted."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler_service import cli
from scheduler_service import pod_contract as keys
from scheduler_service.gpu_sharing import GpuSharing
from scheduler_service.kube._reservations import Reservations, reservation_name
from scheduler_service.translate import signed_by

GPU = "GPU-aaaa"
OTHER = "GPU-bbbb"


def reservations(linger: float = 30) -> Reservations:
    return Reservations(
        namespace="aistack-system",
        image="aistack:1",
        service_account="aistack-gpu-reservation",
        sharing=GpuSharing(default="mps"),
        linger_seconds=linger,
    )


def released_slice(
    name: str, gpu: str = GPU, *, gated: bool = True, phase: str = "Pending", message: str = ""
) -> dict[str, Any]:
    """A slice as the service's release leaves it with reservations on."""
    gates = [{"name": keys.RESERVATION_GATE}] if gated else []
    return {
        "metadata": {
            "namespace": "team",
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "annotations": {
                keys.GPU_MEMORY_ANNOTATION: "8192",
                keys.NODE_ANNOTATION: "n1",
                keys.GPUS_ANNOTATION: gpu,
                keys.GPU_SHARING_ANNOTATION: "mps",
            },
        },
        "spec": {"schedulingGates": [{"name": "other.io/gate"}, *gates]},
        "status": {
            "phase": phase,
            "conditions": [{"type": "PodScheduled", "status": "False", "message": message}],
        },
    }


def reservation_pod(
    gpu: str = GPU,
    *,
    device: str = "",
    phase: str = "Running",
    deleting: bool = False,
    bound: bool = True,
) -> dict[str, Any]:
    annotations = {keys.RESERVES_ANNOTATION: f"n1/{gpu}"}
    if device:
        annotations[keys.RESERVED_DEVICE_ANNOTATION] = device
    metadata: dict[str, Any] = {"name": reservation_name("n1", gpu), "annotations": annotations}
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-04T00:00:00Z"
    spec = {"nodeName": "n1"} if bound else {}
    return {"metadata": metadata, "spec": spec, "status": {"phase": phase}}


def test_a_gpu_hosting_slices_gets_one_reservation_pod_on_its_node() -> None:
    book = reservations()
    book.slice_changed(released_slice("a"))
    book.slice_changed(released_slice("b"))

    intents = book.intents(0, {"n1": "host-1"})

    (pod,) = intents.create
    assert pod["metadata"]["name"] == reservation_name("n1", GPU)
    assert pod["metadata"]["namespace"] == "aistack-system"
    assert pod["metadata"]["annotations"] == {keys.RESERVES_ANNOTATION: f"n1/{GPU}"}
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "host-1"}
    assert pod["spec"]["serviceAccountName"] == "aistack-gpu-reservation"
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"][keys.GPU_RESOURCE] == "1"
    assert (container["image"], container["command"]) == ("aistack:1", ["aistack", "reserve-gpu"])
    assert intents.finish == ()
    assert [(ns, name) for ns, name, _, _ in intents.waiting] == [("team", "a"), ("team", "b")]
    assert "being created" in intents.waiting[0][3]


def test_slices_finish_on_the_device_once_the_reservation_runs_and_says_it() -> None:
    book = reservations()
    book.slice_changed(released_slice("a"))
    book.reservation_changed(reservation_pod(phase="Pending"))
    waiting = book.intents(0, {})
    assert waiting.create == ()
    assert waiting.finish == ()
    assert "(reservation pod aistack-system/" in waiting.waiting[0][3]
    assert "Pending" in waiting.waiting[0][3]

    book.reservation_changed(reservation_pod(device=OTHER))
    (finish,) = book.intents(1, {}).finish

    assert (finish.namespace, finish.name, finish.resource_version) == ("team", "a", "7")
    assert finish.annotations == {keys.DEVICE_ANNOTATION: OTHER, keys.MPS_GPU_ANNOTATION: OTHER}
    assert finish.remaining_gates == ("other.io/gate",)  # only the reservation gate goes


def test_a_slice_is_told_once_and_again_only_when_the_reason_changes() -> None:
    book = reservations()
    book.slice_changed(released_slice("a"))
    ((_, _, _, why),) = book.intents(0, {}).waiting
    book.slice_changed(released_slice("a", message=why))
    assert book.intents(1, {}).waiting == ()


def test_a_refused_reservation_is_deleted_and_made_again_and_one_going_away_waited_for() -> None:
    book = reservations()
    book.slice_changed(released_slice("a"))
    book.reservation_changed(reservation_pod(phase="Failed"))
    first = book.intents(0, {})
    assert first.delete == (reservation_name("n1", GPU),)
    assert "refused by the node" in first.waiting[0][3]

    book.reservation_changed(reservation_pod(phase="Failed", deleting=True))
    assert (book.intents(1, {}).create, book.intents(1, {}).delete) == ((), ())
    book.reservation_deleted(reservation_pod())
    assert len(book.intents(2, {}).create) == 1


def test_an_unneeded_reservation_lingers_then_goes_and_a_running_slice_keeps_its_own() -> None:
    book = reservations(linger=30)
    book.slice_changed(released_slice("a", gated=False, phase="Running"))  # released before
    book.reservation_changed(reservation_pod(device=GPU))
    book.reservation_changed(reservation_pod(OTHER, device=OTHER))  # nobody's any more

    assert book.intents(100, {}).delete == ()  # the linger starts
    assert book.intents(129, {}).delete == ()
    assert book.intents(130, {}).delete == (reservation_name("n1", OTHER),)
    # A running slice needs its GPU's reservation: never deleted, nothing to finish.
    book.slice_changed(released_slice("a", gated=False, phase="Running"))
    assert reservation_name("n1", GPU) not in book.intents(500, {}).delete

    book.slice_changed(released_slice("a", gated=False, phase="Succeeded"))
    assert reservation_name("n1", GPU) not in book.intents(510, {}).delete  # lingers from 510
    assert reservation_name("n1", GPU) in book.intents(540, {}).delete


def test_a_bound_reservation_no_slice_needs_is_idle_until_it_is_gone() -> None:
    book = reservations()
    book.slice_changed(released_slice("a", gated=False, phase="Running"))
    book.reservation_changed(reservation_pod(device=GPU))  # needed by slice a
    book.reservation_changed(reservation_pod(OTHER, device=OTHER, deleting=True))
    assert book.idle() == {reservation_name("n1", OTHER): "n1"}  # holds a device until gone

    book.reservation_changed(reservation_pod(OTHER, phase="Pending", bound=False))
    assert book.idle() == {}  # not bound: it holds no device
    book.slice_changed(released_slice("a", gated=False, phase="Succeeded"))
    assert book.idle() == {reservation_name("n1", GPU): "n1"}  # lingers after its slice
    book.reservation_changed(reservation_pod(phase="Failed"))
    assert book.idle() == {}


def test_whole_gpus_and_pods_without_allocation_need_no_reservation() -> None:
    book = reservations()
    whole = released_slice("w")
    del whole["metadata"]["annotations"][keys.GPU_MEMORY_ANNOTATION]
    pending = released_slice("p")
    del pending["metadata"]["annotations"][keys.NODE_ANNOTATION]
    book.slice_changed(whole)
    book.slice_changed(pending)
    assert book.intents(0, {}).create == ()


@pytest.mark.parametrize("named", ["", "all", "void", "GPU-a,GPU-b"])
def test_reserve_gpu_refuses_to_hold_anything_but_one_named_device(
    named: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", named)
    status = cli.main(["reserve-gpu", "--pod", "r", "--namespace", "aistack-system"])
    assert status == 1
    assert "names no single device" in capsys.readouterr().err


def test_reserve_gpu_needs_its_pod(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", GPU)
    assert cli.main(["reserve-gpu", "--namespace", "aistack-system"]) == 2
    assert "give the pod with --pod and --namespace" in capsys.readouterr().err


def test_a_finished_slice_s_allocation_is_signed_again_with_its_device() -> None:
    key = b"s" * 32
    book = Reservations(
        namespace="aistack-system",
        image="aistack:1",
        service_account="sa",
        sharing=GpuSharing(default="mps"),
        signing_key=key,
    )
    pod = released_slice("a")
    book.slice_changed(pod)
    book.reservation_changed(reservation_pod(device=OTHER))
    (finish,) = book.intents(0, {}).finish

    after = {**pod["metadata"]["annotations"], **finish.annotations}
    signed = {"metadata": {"uid": "uid-a", "annotations": after}}
    assert signed_by(key, signed)
    assert not signed_by(key, {"metadata": {"uid": "uid-b", "annotations": after}})
