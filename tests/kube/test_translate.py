"""Pods and queues as the webhook and the ledger read them.

GPUs are counted as Kubernetes counts them, every number is bounded, and every refusal names the
field, the value and the range.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from scheduler_service import pod_contract as keys
from scheduler_service.core import GpuSlice, PodAllocation
from scheduler_service.translate import (
    PodRequestError,
    QueueError,
    allocation_annotations,
    asks_for_gpus,
    default_namespaces,
    parse_pod_request,
    queue_from_k8s,
)
from tests.kube.objects import make_pod, make_queue


def container(name: str, gpus: str | None = None, **resources: str) -> dict[str, Any]:
    """A container asking for `gpus` (limit) and CPU/memory requests."""
    limits = {keys.GPU_RESOURCE: gpus} if gpus is not None else {}
    return {"name": name, "resources": {"limits": limits, "requests": dict(resources)}}


def sidecar(name: str, gpus: str | None = None, **resources: str) -> dict[str, Any]:
    return {**container(name, gpus, **resources), "restartPolicy": "Always"}


def pod_with(
    containers: list[dict[str, Any]], init: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    pod = make_pod("p")
    pod["spec"]["containers"] = containers
    if init is not None:
        pod["spec"]["initContainers"] = init
    return pod


# -- GPUs, CPU and memory as Kubernetes charges them ---------------------------------------------


@pytest.mark.parametrize(
    ("containers", "init", "gpus"),
    [
        ([container("a", "2"), container("b", "3")], None, 5),
        # A regular init container runs alone: the larger of it and the containers.
        ([container("main", "2")], [container("warmup", "6")], 6),
        ([container("main", "6")], [container("warmup", "2")], 6),
        ([container("main")], [container("warmup", "4")], 4),
        # A sidecar runs beside the containers, and beside the init containers after it.
        ([container("main", "2")], [sidecar("proxy", "1")], 3),
        ([container("main", "2")], [sidecar("proxy", "1"), container("warmup", "3")], 4),
        ([container("main", "2")], [container("warmup", "3"), sidecar("proxy", "1")], 3),
        (
            [container("main", "1")],
            [sidecar("s1", "1"), sidecar("s2", "1"), container("w", "2")],
            4,
        ),
    ],
)
def test_gpus_are_counted_as_kubernetes_counts_a_pod_s_effective_request(
    containers: list[dict[str, Any]], init: list[dict[str, Any]] | None, gpus: int
) -> None:
    assert parse_pod_request(pod_with(containers, init)).request.gpus == gpus


def test_a_gpu_request_without_a_limit_counts() -> None:
    pod = pod_with([{"name": "main", "resources": {"requests": {keys.GPU_RESOURCE: "2"}}}])
    assert parse_pod_request(pod).request.gpus == 2


def test_cpu_and_memory_follow_the_same_rule() -> None:
    pod = pod_with(
        [container("main", cpu="1", memory="1Gi")],
        [container("unpack", cpu="4", memory="512Mi"), sidecar("proxy", cpu="500m", memory="1Gi")],
    )
    request = parse_pod_request(pod).request
    assert (request.cpu_milli, request.memory_mib) == (4000, 2048)


def test_a_fraction_of_a_gpu_in_an_init_container_is_refused_naming_it() -> None:
    with pytest.raises(PodRequestError) as refused:
        parse_pod_request(pod_with([container("main")], [container("warmup", "0.5")]))
    assert "init container warmup: nvidia.com/gpu must be a whole number of GPUs, got '0.5'" in (
        str(refused.value)
    )


@pytest.mark.parametrize(
    ("pod", "asks"),
    [
        (pod_with([container("main", "1")]), True),
        (pod_with([container("main")], [container("warmup", "1")]), True),
        (pod_with([{"name": "m", "resources": {"requests": {keys.GPU_RESOURCE: "1"}}}]), True),
        (pod_with([container("main", "lots")]), True),  # the webhook must see it to refuse it
        (pod_with([container("main", "0")]), False),
        (pod_with([container("main", cpu="8")]), False),
        ({"metadata": {"name": "bare"}}, False),
    ],
)
def test_asks_for_gpus(pod: dict[str, Any], asks: bool) -> None:
    assert asks_for_gpus(pod) is asks


# -- bounds ---------------------------------------------------------------------------------------

LONG = "q" * (keys.MAX_NAME_LENGTH + 1)


def annotated(**annotations: str) -> dict[str, Any]:
    return make_pod(
        "p", annotations={f"aistack.io/{k.replace('_', '-')}": v for k, v in annotations.items()}
    )


def gang_pod(size: str | None) -> dict[str, Any]:
    pod = make_pod("p", gang="g", gang_size=1)
    if size is None:
        del pod["metadata"]["annotations"][keys.GANG_SIZE_ANNOTATION]
    else:
        pod["metadata"]["annotations"][keys.GANG_SIZE_ANNOTATION] = size
    return pod


def labelled(label: str, value: str) -> dict[str, Any]:
    pod = make_pod("p", gang="g", gang_size=2)
    pod["metadata"]["labels"][label] = value
    return pod


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        (
            annotated(priority="1000001"),
            "annotation aistack.io/priority='1000001' is out of range: use -1000000 to 1000000",
        ),
        (
            annotated(priority="-1000001"),
            "annotation aistack.io/priority='-1000001' is out of range: use -1000000 to 1000000",
        ),
        (
            annotated(priority="1e3"),
            "annotation aistack.io/priority='1e3' must be an integer from -1000000 to 1000000",
        ),
        (
            annotated(gpu_memory_mib="0", gpu_compute_percent="50"),
            "annotation aistack.io/gpu-memory-mib='0' is out of range: use 1 to 1048576",
        ),
        (
            annotated(gpu_memory_mib="1048577", gpu_compute_percent="50"),
            "annotation aistack.io/gpu-memory-mib='1048577' is out of range: use 1 to 1048576",
        ),
        (
            annotated(gpu_memory_mib="1024", gpu_compute_percent="0"),
            "annotation aistack.io/gpu-compute-percent='0' is out of range: use 1 to 100",
        ),
        (
            annotated(gpu_memory_mib="1024", gpu_compute_percent="101"),
            "annotation aistack.io/gpu-compute-percent='101' is out of range: use 1 to 100",
        ),
        (
            gang_pod("0"),
            "annotation aistack.io/gang-size='0' is out of range: use 1 to 4096",
        ),
        (
            gang_pod("4097"),
            "annotation aistack.io/gang-size='4097' is out of range: use 1 to 4096",
        ),
        (
            gang_pod(None),
            "annotation aistack.io/gang-size must give the gang's pod count (1 to 4096) when "
            "label aistack.io/gang is set",
        ),
        (
            pod_with([container("a", "40"), container("b", "25")]),
            "nvidia.com/gpu: the pod asks for 65 GPUs (counted as Kubernetes counts them, over "
            "containers and init containers); one pod may ask for 0 to 64",
        ),
        (
            labelled(keys.QUEUE_LABEL, LONG),
            f"label aistack.io/queue: '{'q' * 63}'... is 64 characters long; a name has 1 to 63",
        ),
        (
            labelled(keys.GANG_LABEL, LONG),
            f"label aistack.io/gang: '{'q' * 63}'... is 64 characters long; a name has 1 to 63",
        ),
        (
            annotated(pools=f"h100,{LONG}"),
            f"annotation aistack.io/pools: '{'q' * 63}'... is 64 characters long; a name has 1 to "
            "63",
        ),
        (
            annotated(gpu_models=LONG),
            "annotation aistack.io/gpu-models: 'qqq",
        ),
        (
            annotated(gpu_compute_percent="50"),
            "a GPU slice needs both annotations aistack.io/gpu-memory-mib (1 to 1048576) and "
            "aistack.io/gpu-compute-percent (1 to 100)",
        ),
    ],
)
def test_every_number_and_name_is_bounded(pod: dict[str, Any], message: str) -> None:
    with pytest.raises(PodRequestError) as refused:
        parse_pod_request(pod)
    assert message in str(refused.value)


def test_an_out_of_range_slice_is_refused_once() -> None:
    """The slice's other problems are not piled on top of the one that matters."""
    with pytest.raises(PodRequestError) as refused:
        parse_pod_request(annotated(gpu_memory_mib="1024", gpu_compute_percent="150"))
    assert str(refused.value) == (
        "pod p: annotation aistack.io/gpu-compute-percent='150' is out of range: use 1 to 100"
    )


def test_the_bounds_themselves_are_accepted() -> None:
    edges = make_pod(
        "p" * keys.MAX_NAME_LENGTH,
        "q" * keys.MAX_NAME_LENGTH,
        gpus=keys.MAX_GPUS_PER_POD,
        gang="g" * keys.MAX_NAME_LENGTH,
        gang_size=keys.MAX_GANG_SIZE,
        annotations={
            keys.PRIORITY_ANNOTATION: str(keys.MIN_PRIORITY),
            keys.POOLS_ANNOTATION: "p" * keys.MAX_NAME_LENGTH,
        },
    )
    parsed = parse_pod_request(edges)
    assert (parsed.request.gpus, parsed.gang_size, parsed.priority) == (64, 4096, -1_000_000)
    top = parse_pod_request(
        annotated(
            priority=str(keys.MAX_PRIORITY),
            gpu_memory_mib=str(keys.MAX_GPU_MEMORY_MIB),
            gpu_compute_percent="100",
        )
    )
    assert (top.priority, top.request.gpu_memory_mib, top.request.gpu_compute_percent) == (
        1_000_000,
        1 << 20,
        100,
    )


def test_a_huge_value_is_cut_short_in_the_message() -> None:
    with pytest.raises(PodRequestError) as refused:
        parse_pod_request(annotated(priority="9" * 10_000))
    assert len(str(refused.value)) < 200


# -- default queues -------------------------------------------------------------------------------


def test_a_queue_names_the_namespaces_it_is_the_default_for() -> None:
    queue = make_queue("a", defaultFor={"namespaces": ["team", "ml", "team"]})
    assert default_namespaces(queue) == ("team", "ml")
    assert default_namespaces(make_queue("b")) == ()
    assert default_namespaces(make_queue("c", defaultFor={})) == ()


@pytest.mark.parametrize(
    "default_for",
    [
        {"namespaces": ["Team"]},
        {"namespaces": "team"},
        {"namespaces": [7]},
        ["team"],
        {"namespaces": ["n" * 64]},
    ],
)
def test_a_bad_default_for_names_the_field(default_for: Any) -> None:
    with pytest.raises(QueueError) as refused:
        default_namespaces(make_queue("a", defaultFor=default_for))
    assert str(refused.value).startswith(
        "queue a: spec.defaultFor.namespaces must be a list of namespace names, got "
    )


# -- allocations and GPU sharing ------------------------------------------------------------------

UUID = "GPU-4b7c6a2e-0000-4000-8000-000000000001"


def slice_on(gpu: str) -> PodAllocation:
    return PodAllocation(
        node="n1", gpus=(gpu,), slice=GpuSlice(memory_mib=4096, compute_percent=30)
    )


def test_a_slice_under_mps_names_its_gpu_s_daemon() -> None:
    annotations = allocation_annotations(slice_on(UUID), "t", sharing="mps", uses_mps=True)
    assert annotations[keys.GPU_SHARING_ANNOTATION] == "mps"
    assert annotations[keys.MPS_GPU_ANNOTATION] == UUID
    assert annotations[keys.MEMORY_LIMIT_ANNOTATION] == "0=4096M"
    assert annotations[keys.COMPUTE_LIMIT_ANNOTATION] == "30"
    assert keys.HAMI_MEMORY_ANNOTATION not in annotations


def test_a_slice_under_hami_core_gets_hami_s_caps_and_no_daemon() -> None:
    annotations = allocation_annotations(slice_on(UUID), "t", sharing="hami-core", uses_mps=True)
    assert annotations[keys.GPU_SHARING_ANNOTATION] == "hami-core"
    assert annotations[keys.HAMI_MEMORY_ANNOTATION] == "4096m"
    assert annotations[keys.HAMI_COMPUTE_ANNOTATION] == "30"
    # The webhook mounted `<root>/<gpu>/pipe` because some pool uses MPS: "none" holds no daemon.
    assert annotations[keys.MPS_GPU_ANNOTATION] == "none"


def test_mps_needs_the_gpu_s_uuid_and_whole_gpus_get_no_sharing() -> None:
    numbered = allocation_annotations(slice_on("n1/0"), "t", sharing="mps", uses_mps=True)
    assert numbered[keys.GPU_SHARING_ANNOTATION] == "none"
    assert numbered[keys.MPS_GPU_ANNOTATION] == "none"
    whole = allocation_annotations(PodAllocation(node="n1", gpus=(UUID,)), "t", sharing="mps")
    assert set(whole) == {keys.NODE_ANNOTATION, keys.GPUS_ANNOTATION, keys.ADMITTED_AT_ANNOTATION}
    plain = allocation_annotations(slice_on(UUID), "t")
    assert plain[keys.GPU_SHARING_ANNOTATION] == "none"
    assert keys.MPS_GPU_ANNOTATION not in plain


# -- queue bounds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (
            {"pools": [{"pool": "p", "quota": 1e306}]},
            "spec.pools[0].quota 1e+306 is outside 0..1e+06",
        ),
        ({"pools": [{"pool": "p", "quota": float("nan")}]}, "spec.pools[0].quota nan is outside"),
        ({"pools": [{"pool": "p", "quota": -1}]}, "spec.pools[0].quota -1 is outside"),
        ({"pools": [{"pool": "p", "quota": True}]}, "spec.pools[0].quota True is not a number"),
        ({"pools": [{"pool": "p", "quota": "8"}]}, "spec.pools[0].quota '8' is not a number"),
        ({"pools": [{"pool": "p", "quota": 1, "limit": 1e9}]}, "spec.pools[0].limit"),
        (
            {"pools": [{"pool": "p", "quota": 1, "overQuotaWeight": 1e12}]},
            "spec.pools[0].overQuotaWeight 1000000000000.0 is outside 0..1000",
        ),
        ({"priority": 10**12}, "spec.priority 1000000000000 is outside -1000000..1000000"),
        ({"priority": 1.5}, "spec.priority 1.5 is not a whole number"),
        ({"reclaimMinRuntimeSeconds": float("inf")}, "spec.reclaimMinRuntimeSeconds inf"),
        (
            {"pools": [{"pool": f"p{i}", "quota": 1} for i in range(65)]},
            "lists 65 pools, at most 64",
        ),
    ],
)
def test_a_queue_number_out_of_bounds_is_refused_naming_the_field(
    spec: dict[str, Any], says: str
) -> None:
    with pytest.raises(QueueError, match=re.escape(says)):
        queue_from_k8s({"metadata": {"name": "q"}, "spec": spec})
