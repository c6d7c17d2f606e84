"""GPU requests as authors write them: typed, bounded, and read back from annotations unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import aistack_flows as af
from aistack_flows._declare import GPUS_DECLARATION, GpuRequest
from scheduler_service import pod_contract as contract


def test_whole_gpus_become_the_contracts_annotations() -> None:
    assert af.gpus(8, queue="research", gang=4, topology="rack", priority=5) == {
        GPUS_DECLARATION: "8",
        contract.QUEUE_LABEL: "research",
        contract.KIND_LABEL: "train",
        contract.PRIORITY_ANNOTATION: "5",
        contract.TOPOLOGY_ANNOTATION: "rack",
        contract.GANG_SIZE_ANNOTATION: "4",
    }


def test_a_slice_is_given_in_gib_and_written_in_mib() -> None:
    found = af.gpu_slice(memory_gib=7.5, compute_percent=25, kind="build", preemptible=False)
    assert found[contract.GPU_MEMORY_ANNOTATION] == "7680"
    assert found[contract.GPU_COMPUTE_ANNOTATION] == "25"
    assert found[contract.KIND_LABEL] == "build"
    assert found[contract.PREEMPTIBLE_ANNOTATION] == "false"


def test_placeholders_pass_and_a_gib_parameter_becomes_an_argo_expression() -> None:
    found = af.gpu_slice(
        memory_gib="{{inputs.parameters.memory-gib}}",
        compute_percent="{{inputs.parameters.share}}",
        queue="{{inputs.parameters.queue}}",
    )
    assert found[contract.GPU_MEMORY_ANNOTATION] == (
        '{{=int(float(inputs.parameters["memory-gib"]) * 1024)}}'
    )
    assert found[contract.GPU_COMPUTE_ANNOTATION] == "{{inputs.parameters.share}}"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: af.gpus(0), "gpus: must be a whole number from 1 to 64"),
        (lambda: af.gpus(65), "gpus: must be a whole number from 1 to 64"),
        (lambda: af.gpus(1.5), "got 1.5"),  # type: ignore[arg-type]
        (lambda: af.gpus(True), "got True"),
        (lambda: af.gpus("two"), "got 'two'"),
        (lambda: af.gpu_slice(memory_gib=0, compute_percent=10), "memory_gib: must be a number"),
        (lambda: af.gpu_slice(memory_gib=2048, compute_percent=10), "at most 1024"),
        (lambda: af.gpu_slice(memory_gib=8, compute_percent=101), "compute_percent: must be"),
        (lambda: af.gpu_slice(memory_gib=8, compute_percent=0), "compute_percent: must be"),
        (lambda: af.gpus(1, queue="Team_A"), "queue: 'Team_A' is not a name"),
        (lambda: af.gpus(1, queue="q" * 64), "at most 63"),
        (lambda: af.gpus(1, priority=2_000_000), "priority: must be a whole number"),
        (lambda: af.gpus(1, gang=1), "gang: must be a whole number from 2"),
        (lambda: af.gpus(1, gang=5000), "gang: must be a whole number from 2 to 4096"),
        (lambda: af.gpus(1, topology="rack"), "a topology wish only applies to a gang"),
        (lambda: af.gpus(1, topology="galaxy"), "topology: Input should be"),  # type: ignore[arg-type]
        (lambda: af.gpus(1, pools=["H100s"]), "pools.0: 'H100s' is not a name"),
        (lambda: af.gpus(1, gpu_models=["A100,H100"]), "is not a GPU model name"),
        (lambda: af.gpus(1, reclaim_retries=-1), "reclaim_retries"),
        (lambda: af.gpus(1, kind="serve"), "kind: Input should be"),  # type: ignore[arg-type]
        (lambda: af.gpus(1, colour="red"), "colour: is not a field"),  # type: ignore[call-arg]
        (
            lambda: af.gpu_slice(memory_gib="{{workflow.name}}", compute_percent=10),
            "must be one input parameter",
        ),
    ],
)
def test_a_bad_request_is_refused_naming_the_field(call: Any, message: str) -> None:
    with pytest.raises(af.RequestError) as refused:
        call()
    assert message in str(refused.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(af.RequestError) as refused:
        af.gpu_slice(memory_gib=-1, compute_percent=500, queue="Bad!")
    fields = {p.field for p in refused.value.problems}
    assert fields == {"memory_gib", "compute_percent", "queue"}


def test_a_slice_and_whole_gpus_together_are_refused() -> None:
    parsed = GpuRequest.from_metadata(
        {},
        {contract.GPU_MEMORY_ANNOTATION: "1024", contract.GPU_COMPUTE_ANNOTATION: "10"},
        resource_gpus="2",
    )
    assert isinstance(parsed, list)
    assert "not both" in parsed[0].message


def test_the_declared_gpus_and_the_containers_must_agree() -> None:
    parsed = GpuRequest.from_metadata({}, {GPUS_DECLARATION: "2"}, resource_gpus="4")
    assert isinstance(parsed, list)
    assert "declare the GPUs once" in parsed[0].message


def test_a_step_without_gpus_is_no_request() -> None:
    assert GpuRequest.from_metadata({"app": "x"}, {}, resource_gpus=None) is None
    assert GpuRequest.from_metadata({}, {}, resource_gpus="0") is None


def test_pod_metadata_splits_labels_from_annotations() -> None:
    request = GpuRequest(memory_gib=4, compute_percent=10, kind="infer")
    assert af.pod_metadata(request, queue="serving") == {
        "labels": {contract.QUEUE_LABEL: "serving", contract.KIND_LABEL: "infer"},
        "annotations": {
            contract.GPU_MEMORY_ANNOTATION: "4096",
            contract.GPU_COMPUTE_ANNOTATION: "10",
        },
    }


names = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
options = st.fixed_dictionaries(
    {},
    optional={
        "queue": names,
        "kind": st.sampled_from(["build", "train", "infer"]),
        "priority": st.integers(contract.MIN_PRIORITY, contract.MAX_PRIORITY),
        "preemptible": st.booleans(),
        "pools": st.lists(names, max_size=3).map(tuple),
        "checkpoint": st.sampled_from(["/ckpt", "s3://bucket/runs"]),
        "reclaim_retries": st.integers(0, 1000),
    },
)
sizes = st.one_of(
    st.fixed_dictionaries({"gpus": st.integers(1, 64)}),
    st.fixed_dictionaries(
        {"memory_gib": st.integers(1, 1024).map(float), "compute_percent": st.integers(1, 100)}
    ),
    st.fixed_dictionaries(
        {
            "gpus": st.integers(1, 64),
            "gang": st.integers(2, 4096),
            "topology": st.sampled_from(["rack", "zone:preferred"]),
        }
    ),
)


@given(sizes, options)
def test_a_request_survives_its_annotation_form(
    size: dict[str, Any], extra: dict[str, Any]
) -> None:
    request = GpuRequest.model_validate({**size, **extra})
    annotations = request.annotations()
    keys: tuple[str, ...] = (contract.QUEUE_LABEL, contract.KIND_LABEL)
    labels = {k: annotations.pop(k) for k in keys if k in annotations}
    gpus = annotations.pop(GPUS_DECLARATION, None)
    read = GpuRequest.from_metadata(labels, annotations, resource_gpus=gpus)
    assert read == request


def test_the_contracts_kinds_are_the_cores() -> None:
    from scheduler_service.core import Kind  # noqa: PLC0415 (only this test needs the core)

    assert tuple(k.value for k in Kind) == contract.KINDS
    assert Kind.TRAIN.value == contract.DEFAULT_KIND
