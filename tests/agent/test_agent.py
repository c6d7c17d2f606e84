"""The agent's loop against a fake API server: what it writes, when, and how it survives errors."""

from __future__ import annotations

import json
import random
import threading
from typing import Any, cast

import pytest
import urllib3
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, generate_latest

from scheduler_service import pod_contract as keys
from scheduler_service.agent import (
    INVENTORY_CONDITION,
    AgentCollector,
    NodeAgent,
    PodDirectory,
    PodRef,
    inventory_annotation,
)
from scheduler_service.gpu_discovery import discover
from scheduler_service.translate import node_from_k8s
from tests.agent.fake_kube import FakeCoreApi, gpu_node_object, pod_object
from tests.gpus.fake_nvml import FakeNvml

NODE = "gpu-1"


class Clock:
    """Seconds that move only when a test moves them."""

    def __init__(self, now: float = 1_796_126_400.0) -> None:  # 2026-12-01T12:00:00Z
        self.now = now

    def __call__(self) -> float:
        return self.now


class StopAfter(threading.Event):
    """A stop event that records each wait and sets itself after `waits` of them."""

    def __init__(self, waits: int) -> None:
        super().__init__()
        self.waits = waits
        self.delays: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.delays.append(timeout)
        if len(self.delays) >= self.waits:
            self.set()
        return self.is_set()


def _agent(api: FakeCoreApi, nvml: FakeNvml, **kwargs: Any) -> NodeAgent:
    return NodeAgent(NODE, cast(CoreV1Api, api), nvml=nvml, clock=Clock(), **kwargs)


def _condition(node: dict[str, Any], kind: str = INVENTORY_CONDITION) -> dict[str, Any]:
    (found,) = [c for c in node["status"]["conditions"] if c["type"] == kind]
    return dict(found)


def test_a_sync_writes_the_inventory_labels_and_condition_once() -> None:
    api = FakeCoreApi(nodes={NODE: gpu_node_object(NODE)})
    nvml = FakeNvml.h100_hgx()
    agent = _agent(api, nvml)

    first = agent.sync()
    second = agent.sync()

    node = api.nodes[NODE]
    annotation = node["metadata"]["annotations"][keys.GPU_INVENTORY_ANNOTATION]
    assert annotation == inventory_annotation(discover(FakeNvml.h100_hgx()))
    assert node["metadata"]["labels"][keys.GPU_PRODUCT_LABEL] == "NVIDIA-H100-80GB-HBM3"
    assert _condition(node)["status"] == "True"
    assert _condition(node, "Ready")["status"] == "True"  # the kubelet's condition stays
    assert first.metadata_patch is not None
    assert first.condition_patch is not None
    assert (second.metadata_patch, second.condition_patch) == (None, None)
    assert api.writes() == [("patch_node", NODE), ("patch_node_status", NODE)]
    assert [call for call, _ in api.calls].count("read_node") == 2
    assert not nvml.initialised  # NVML is shut down between passes
    parsed = node_from_k8s(node, pool_label=keys.POOL_LABEL)
    assert parsed is not None
    assert [gpu.uuid for gpu in parsed.gpus] == [gpu.uuid for gpu in nvml.gpus]


def test_nvml_failing_keeps_the_inventory_and_turns_the_condition_false() -> None:
    api = FakeCoreApi(nodes={NODE: gpu_node_object(NODE)})
    _agent(api, FakeNvml.h100_hgx()).sync()
    before = json.dumps(api.nodes[NODE]["metadata"], sort_keys=True)

    result = _agent(api, FakeNvml.no_driver()).sync()

    assert result.metadata_patch is None
    assert json.dumps(api.nodes[NODE]["metadata"], sort_keys=True) == before
    condition = _condition(api.nodes[NODE])
    assert (condition["status"], condition["reason"]) == ("False", "NVMLUnavailable")
    assert api.writes()[-1] == ("patch_node_status", NODE)


def test_a_node_the_agent_cannot_read_is_an_error_for_the_loop_to_retry() -> None:
    api = FakeCoreApi()

    with pytest.raises(ApiException) as raised:
        _agent(api, FakeNvml.h100_hgx()).sync()

    assert raised.value.status == 404


def test_the_loop_retries_api_errors_with_backoff_and_never_stops() -> None:
    api = FakeCoreApi(
        nodes={NODE: gpu_node_object(NODE)},
        failures=[
            ApiException(status=503, reason="Service Unavailable"),
            urllib3.exceptions.ProtocolError("Connection aborted."),
            ConnectionRefusedError(111, "Connection refused"),
            ApiException(status=403, reason="Forbidden"),
        ],
    )
    agent = _agent(api, FakeNvml.h100_hgx(), rng=random.Random(7))
    stop = StopAfter(waits=6)

    agent.run(stop, interval_seconds=5.0)

    # 1, 2, 4 and then the interval (5) as ceilings, each drawn from its upper half.
    assert len(stop.delays) == 6
    for delay, ceiling in zip(stop.delays[:4], [1, 2, 4, 5], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert stop.delays[4:] == [5.0, 5.0]  # synced: the regular interval
    assert agent.failures_total == 4
    assert agent.last_success_at is not None
    assert _condition(api.nodes[NODE])["status"] == "True"


def test_the_retry_delay_never_passes_the_interval() -> None:
    api = FakeCoreApi(failures=[ApiException(status=500, reason="Internal")] * 40)
    agent = _agent(api, FakeNvml.h100_hgx(), rng=random.Random(1))
    stop = StopAfter(waits=40)

    agent.run(stop, interval_seconds=30.0)

    assert max(stop.delays) <= 30.0
    assert min(stop.delays[10:]) >= 15.0


def test_a_bug_is_not_swallowed_by_the_loop() -> None:
    api = FakeCoreApi(nodes={NODE: gpu_node_object(NODE)}, failures=[KeyError("metadata")])

    with pytest.raises(KeyError):
        _agent(api, FakeNvml.h100_hgx()).run(StopAfter(waits=3), interval_seconds=1.0)


def test_a_set_stop_event_ends_the_loop_before_any_pass() -> None:
    api = FakeCoreApi(nodes={NODE: gpu_node_object(NODE)})
    stop = threading.Event()
    stop.set()

    _agent(api, FakeNvml.h100_hgx()).run(stop, interval_seconds=1.0)

    assert api.calls == []


# -- pods by UID -----------------------------------------------------------------------------------


def test_the_pod_directory_lists_the_nodes_pods_once_and_again_only_for_a_stranger() -> None:
    api = FakeCoreApi(
        pods=[
            pod_object("team-a", "train-0", "uid-1", NODE),
            pod_object("team-b", "serve-0", "uid-2", "other-node"),
        ]
    )
    clock = Clock(100.0)
    directory = PodDirectory(cast(CoreV1Api, api), NODE, clock=clock, refresh_seconds=10.0)

    assert directory(["uid-1"]) == {"uid-1": PodRef("team-a", "train-0")}
    assert directory(["uid-1"]) == {"uid-1": PodRef("team-a", "train-0")}
    assert directory(["uid-3"]) == {}  # too soon to list again
    api.pods.append(pod_object("team-c", "eval-0", "uid-3", NODE))
    clock.now += 10
    assert directory(["uid-1", "uid-3"]) == {
        "uid-1": PodRef("team-a", "train-0"),
        "uid-3": PodRef("team-c", "eval-0"),
    }
    assert directory(["uid-2"]) == {}  # bound to another node
    assert api.calls == [
        ("list_pod_for_all_namespaces", f"spec.nodeName={NODE}"),
        ("list_pod_for_all_namespaces", f"spec.nodeName={NODE}"),
    ]


def test_a_failed_pod_list_keeps_the_last_answer() -> None:
    api = FakeCoreApi(pods=[pod_object("team-a", "train-0", "uid-1", NODE)])
    clock = Clock(0.0)
    directory = PodDirectory(cast(CoreV1Api, api), NODE, clock=clock, refresh_seconds=1.0)
    directory(["uid-1"])
    api.failures.append(ApiException(status=500, reason="Internal"))
    clock.now += 5

    assert directory(["uid-1", "uid-9"]) == {"uid-1": PodRef("team-a", "train-0")}


# -- the agent's own metrics ----------------------------------------------------------------------


def test_the_agent_reports_its_last_sync_and_its_failures() -> None:
    api = FakeCoreApi(nodes={NODE: gpu_node_object(NODE)})
    agent = _agent(api, FakeNvml.h100_hgx())
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))

    before = generate_latest(registry).decode()
    agent.sync()
    after = generate_latest(registry).decode()

    assert "aistack_agent_last_sync_timestamp_seconds{" not in before
    assert f'aistack_agent_sync_failures_total{{node="{NODE}"}} 0.0' in before
    assert f'aistack_agent_last_sync_timestamp_seconds{{node="{NODE}"}} 1.7961264e+09' in after
