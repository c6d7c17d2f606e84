"""A fake of the four CoreV1Api calls the node agent makes, on Nodes and Pods held as JSON.

Patches are applied as the API server applies them: a JSON merge patch to the Node (a null
removes a key), a strategic merge patch to its status where conditions merge by `type`. Every
call is recorded in `calls` as (function, node or field selector); `failures` makes the next
calls raise, one exception each.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

__all__ = ["FakeCoreApi", "FakeResponse", "gpu_node_object", "pod_object"]


@dataclass(frozen=True, slots=True)
class FakeResponse:
    """What a call with `_preload_content=False` returns: urllib3's response, `.data` only."""

    data: bytes


def gpu_node_object(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    gpus: int = 8,
) -> dict[str, Any]:
    """A Ready GPU Node as the API server returns it, with the kubelet's Ready condition."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, **(labels or {})},
            "annotations": dict(annotations or {}),
        },
        "status": {
            "allocatable": {"cpu": "128", "memory": "1Ti", "nvidia.com/gpu": str(gpus)},
            "capacity": {"cpu": "128", "memory": "1Ti", "nvidia.com/gpu": str(gpus)},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                }
            ],
        },
    }


def pod_object(namespace: str, name: str, uid: str, node: str) -> dict[str, Any]:
    """A Pod bound to `node`."""
    return {
        "metadata": {"namespace": namespace, "name": name, "uid": uid},
        "spec": {"nodeName": node},
    }


@dataclass
class FakeCoreApi:
    """Nodes by name and a list of pods; stands in for `CoreV1Api` (cast it)."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def read_node(self, name: str, **kwargs: Any) -> FakeResponse:
        self._enter("read_node", name, kwargs)
        return FakeResponse(json.dumps(self._node(name)).encode())

    def patch_node(self, name: str, body: dict[str, Any], **kwargs: Any) -> FakeResponse:
        self._enter("patch_node", name, kwargs)
        assert kwargs.get("_content_type") == "application/merge-patch+json"
        node = self._node(name)
        _merge(node, copy.deepcopy(body))
        return FakeResponse(json.dumps(node).encode())

    def patch_node_status(self, name: str, body: dict[str, Any], **kwargs: Any) -> FakeResponse:
        self._enter("patch_node_status", name, kwargs)
        assert kwargs.get("_content_type") == "application/strategic-merge-patch+json"
        assert set(body) == {"status"}, "a status patch changes nothing but the status"
        node = self._node(name)
        conditions = node.setdefault("status", {}).setdefault("conditions", [])
        for condition in body["status"]["conditions"]:
            kept = [c for c in conditions if c["type"] != condition["type"]]
            conditions[:] = [*kept, copy.deepcopy(condition)]
        return FakeResponse(json.dumps(node).encode())

    def list_pod_for_all_namespaces(self, **kwargs: Any) -> FakeResponse:
        selector = kwargs["field_selector"]
        self._enter("list_pod_for_all_namespaces", selector, kwargs)
        key, _, value = selector.partition("=")
        assert key == "spec.nodeName"
        items = [pod for pod in self.pods if pod["spec"]["nodeName"] == value]
        return FakeResponse(json.dumps({"items": items}).encode())

    def writes(self) -> list[tuple[str, str]]:
        """The calls that changed something."""
        return [call for call in self.calls if call[0].startswith("patch")]

    def _enter(self, function: str, subject: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((function, subject))
        assert kwargs.get("_preload_content") is False
        assert kwargs.get("_request_timeout"), "every request has a timeout"
        if self.failures:
            raise self.failures.pop(0)

    def _node(self, name: str) -> dict[str, Any]:
        if name not in self.nodes:
            raise ApiException(status=404, reason="Not Found")
        return self.nodes[name]


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 JSON merge patch, in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
