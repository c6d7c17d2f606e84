"""Bad input never breaks the webhooks: every malformed pod or queue gets a decision.

Hypothesis takes a good managed pod (or Queue) and replaces parts of it with values of the wrong
kind or out of range, as a careless or hostile user could send them. Each must come back as an
AdmissionDecision (refused with a message that says what was wrong, or allowed), never as an
exception, which the API would turn into an "internal error".
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler_service import pod_contract as keys
from scheduler_service.api import AdmissionDecision
from scheduler_service.core import GPU, Node
from scheduler_service.kube import KubeWebhooks
from tests.kube.objects import make_pod, make_queue
from tests.kube.test_admission import QUEUES

_NODES = (
    Node(
        name="n1",
        pool="h100",
        gpus=tuple(GPU(index=i, uuid=f"n1/{i}", model="H100", memory_mib=81920) for i in range(8)),
    ),
)

_BAD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["-1", "1e308", "0.5", "nan", "-4Gi", "1Ei", "", "∞", "0x10", "1e-400"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)

_POD_PATHS = [
    ("metadata", "labels", keys.QUEUE_LABEL),
    ("metadata", "labels"),
    ("metadata", "annotations"),
    ("metadata", "annotations", keys.GPU_MEMORY_ANNOTATION),
    ("metadata", "annotations", keys.GPU_COMPUTE_ANNOTATION),
    ("metadata", "annotations", keys.PRIORITY_ANNOTATION),
    ("metadata", "annotations", keys.GANG_SIZE_ANNOTATION),
    ("metadata", "annotations", keys.POOLS_ANNOTATION),
    ("metadata", "name"),
    ("spec",),
    ("spec", "containers"),
    ("spec", "containers", 0),
    ("spec", "containers", 0, "resources"),
    ("spec", "containers", 0, "resources", "limits"),
    ("spec", "containers", 0, "resources", "limits", keys.GPU_RESOURCE),
    ("spec", "containers", 0, "resources", "requests", "cpu"),
    ("spec", "containers", 0, "resources", "requests", "memory"),
    ("spec", "containers", 0, "env"),
    ("spec", "initContainers"),
    ("spec", "schedulingGates"),
    ("spec", "nodeSelector"),
    ("spec", "tolerations"),
    ("spec", "affinity"),
    ("spec", "activeDeadlineSeconds"),
    ("spec", "volumes"),
]


def _set(document: Any, path: tuple[Any, ...], value: object) -> None:
    """Put `value` at `path`, making the containers on the way as needed."""
    target = document
    for step in path[:-1]:
        if isinstance(target, list):
            if not target or not isinstance(step, int):
                return
            target = target[min(step, len(target) - 1)]
        elif isinstance(target, dict):
            child = target.get(step)
            if not isinstance(child, dict | list):
                child = [] if isinstance(step, int) else {}
                target[step] = child
            target = child
        else:
            return
    last = path[-1]
    if isinstance(target, dict):
        target[last] = value
    elif isinstance(target, list) and target and isinstance(last, int):
        target[min(last, len(target) - 1)] = value


def _hooks() -> KubeWebhooks:
    return KubeWebhooks(lambda: QUEUES, lambda _queue: 0, nodes=lambda: _NODES)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(["whole", "slice", "gang"]),
    edits=st.lists(st.tuples(st.sampled_from(_POD_PATHS), _BAD), min_size=1, max_size=4),
)
def test_a_malformed_pod_gets_a_decision_never_an_exception(
    base: str, edits: list[tuple[tuple[Any, ...], object]]
) -> None:
    if base == "whole":
        pod = make_pod("p", "a", gpus=2)
    elif base == "slice":
        pod = make_pod("p", "a", gpu_memory_mib=4096, gpu_compute_percent=30)
    else:
        pod = make_pod("p", "a", gpus=1, gang="g", gang_size=2)
    pod = copy.deepcopy(pod)
    for path, value in edits:
        _set(pod, path, value)
    decision = _hooks().mutate_pod({"operation": "CREATE", "object": pod, "namespace": "team"})
    assert isinstance(decision, AdmissionDecision)
    if not decision.allowed:
        assert decision.message
        assert "internal error" not in decision.message


_QUEUE_PATHS = [
    ("spec",),
    ("spec", "parent"),
    ("spec", "priority"),
    ("spec", "pools"),
    ("spec", "pools", 0),
    ("spec", "pools", 0, "pool"),
    ("spec", "pools", 0, "quota"),
    ("spec", "pools", 0, "limit"),
    ("spec", "pools", 0, "overQuotaWeight"),
    ("spec", "defaultFor"),
    ("spec", "defaultFor", "namespaces"),
    ("spec", "reclaimMinRuntimeSeconds"),
    ("metadata", "name"),
]


@settings(max_examples=300, deadline=None)
@given(
    operation=st.sampled_from(["CREATE", "UPDATE", "DELETE"]),
    edits=st.lists(st.tuples(st.sampled_from(_QUEUE_PATHS), _BAD), min_size=1, max_size=4),
)
def test_a_malformed_queue_gets_a_decision_never_an_exception(
    operation: str, edits: list[tuple[tuple[Any, ...], object]]
) -> None:
    queue = copy.deepcopy(make_queue("new", quota=2))
    for path, value in edits:
        _set(queue, path, value)
    request = {"operation": operation, "name": "new", "object": queue, "oldObject": queue}
    decision = _hooks().validate_queue(request)
    assert isinstance(decision, AdmissionDecision)
    if not decision.allowed:
        assert decision.message
