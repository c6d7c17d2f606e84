"""values.yaml and values.schema.json: bad values are refused by Helm with a message naming them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm._chart import CHART, KUBE_VERSION, NAMESPACE, TESTDATA, helm, render, render_error

SCHEMA = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
VALUES = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("replicas=-1", "at '/replicas': minimum: got -1, want 1"),
        ("replicas=0", "at '/replicas': minimum: got 0, want 1"),
        ("replicass=2", "at '': additional properties 'replicass' not allowed"),
        (
            'config.cycle_interval_seconds="fast"',
            "at '/config/cycle_interval_seconds': got string, want number",
        ),
        ("config.cycle_interval_seconds=0", "at '/config/cycle_interval_seconds'"),
        ("config.cycle_interval_seconds=120", "at '/config/cycle_interval_seconds': maximum"),
        (
            "config.eviction_grace_seconds=2.5",
            "at '/config/eviction_grace_seconds': got number, want integer",
        ),
        ("config.parallel_requests=0", "at '/config/parallel_requests': minimum"),
        ("config.eviction_grace_seconds=-5", "at '/config/eviction_grace_seconds': minimum"),
        (
            "config.gang_assembly_timeout_seconds=0",
            "at '/config/gang_assembly_timeout_seconds': minimum",
        ),
        (
            "config.gang_assembly_timeout_seconds=90000",
            "at '/config/gang_assembly_timeout_seconds': maximum",
        ),
        ("config.unknown_knob=1", "at '/config': additional properties 'unknown_knob' not allowed"),
        (
            'config.leader_election.lease_name="mine"',
            "additional properties 'lease_name' not allowed",
        ),
        ('config.api.auth="yes"', "at '/config/api/auth': got string, want boolean"),
        ('config.pool_label="not a label"', "at '/config/pool_label'"),
        ('image.pullPolicy="Sometimes"', "at '/image/pullPolicy': value must be one of"),
        ('image.digest="latest"', "at '/image/digest'"),
        ("webhook.timeoutSeconds=60", "at '/webhook/timeoutSeconds': maximum: got 60, want 30"),
        ('webhook.excludedNamespaces=["Kube_System"]', "at '/webhook/excludedNamespaces/0'"),
        ('gpuPods.exemptNamespaces=["GPU_Operator"]', "at '/gpuPods/exemptNamespaces/0'"),
        ('gpuPods.exemptNamespaces="gpu-operator"', "at '/gpuPods/exemptNamespaces'"),
        ('gpuPods.exempt=["gpu-operator"]', "additional properties 'exempt' not allowed"),
        (
            'spreadAcrossNodes.whenUnsatisfiable="Maybe"',
            "at '/spreadAcrossNodes/whenUnsatisfiable'",
        ),
        ('resources.limits.memory="lots"', "at '/resources/limits/memory'"),
        ('certManager.duration="1 year"', "at '/certManager/duration'"),
        ('rbac.queueAdmins=[{"kind":"Robot","name":"r2"}]', "at '/rbac/queueAdmins/0/kind'"),
        ('metrics.serviceMonitor.interval="often"', "at '/metrics/serviceMonitor/interval'"),
    ],
)
def test_schema_refuses_bad_values(assignment: str, message: str) -> None:
    error = render_error(set_json=[assignment])

    assert "values don't meet the specifications of the schema" in error
    assert message in error


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        (
            ["config.leader_election.enabled=false"],
            "config.leader_election.enabled is false with replicas: 2",
        ),
        (
            ["config.leader_election.renew_deadline_seconds=20"],
            "renew_deadline_seconds must be less than lease_duration_seconds",
        ),
        (
            ["config.leader_election.retry_period_seconds=10"],
            "retry_period_seconds must be less than renew_deadline_seconds",
        ),
        (['tls.existingSecret="mine"'], "tls.existingSecret needs tls.caBundle"),
        (
            ['tls.existingSecret="mine"', 'tls.caBundle="QUJD"', "certManager.enabled=true"],
            "certManager.enabled and tls.existingSecret",
        ),
        (
            ["podDisruptionBudget.minAvailable=2"],
            "podDisruptionBudget.minAvailable (2) must be less than replicas (2)",
        ),
        (['serviceAccount={"create":false,"name":""}'], "serviceAccount.name is required"),
    ],
)
def test_chart_refuses_inconsistent_values(assignments: list[str], message: str) -> None:
    assert message in render_error(set_json=assignments)


def test_leader_election_may_stay_on_with_one_replica() -> None:
    config = render(set_json=["replicas=1"])

    assert any(m["kind"] == "Role" for m in config)


@pytest.mark.parametrize("values", sorted(TESTDATA.glob("*.values.yaml")), ids=lambda p: p.name)
def test_helm_lint_passes(values: Path) -> None:
    result = helm(
        "lint",
        "--strict",
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        "--values",
        str(values),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_helm_lint_fails_on_refused_values() -> None:
    """The lint test above can fail: lint applies the schema too."""
    result = helm("lint", str(CHART), "--kube-version", KUBE_VERSION, "--set", "replicas=-1")

    assert result.returncode != 0
    assert "/replicas" in result.stdout + result.stderr


def _leaves(values: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths to every key of values.yaml (maps are walked, lists and scalars are leaves)."""
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from _leaves(value, (*path, key))
    else:
        yield path


def _schema_at(path: tuple[str, ...]) -> dict[str, Any]:
    node: dict[str, Any] = SCHEMA
    for key in path:
        properties = node.get("properties", {})
        if key in properties:
            node = properties[key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            pytest.fail(
                f"values.yaml has {'.'.join(path)}, values.schema.json does not describe it"
            )
    return node


def test_schema_is_draft_07() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"


def test_every_value_is_described_by_the_schema() -> None:
    for path in _leaves(VALUES):
        node = _schema_at(path)
        assert "type" in node or "enum" in node, ".".join(path)


def test_every_schema_object_with_properties_is_closed() -> None:
    """An unknown key anywhere is refused, not silently ignored (a typo in a value name)."""

    def walk(node: dict[str, Any], where: str) -> Iterator[str]:
        if "properties" in node and node.get("additionalProperties") is not False:
            yield where
        for key, child in node.get("properties", {}).items():
            yield from walk(child, f"{where}.{key}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                yield from walk(node[key], f"{where}.{key}")

    assert list(walk(SCHEMA, "$")) == []


def test_defaults_render() -> None:
    kinds = sorted({m["kind"] for m in render()})

    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Deployment",
        "MutatingWebhookConfiguration",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
    ]
