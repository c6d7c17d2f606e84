"""The Queue CRD file: well-formed, structural, printable, and its samples use only known fields.

What only a real API server can say (CEL compiles within its cost budget, defaults are applied,
the samples are accepted or refused with the expected message) is in test_crd_apiserver.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler_service import pod_contract as keys
from tests.helm._chart import CRD, TESTDATA, expected_errors

QUEUES = sorted((TESTDATA / "queues").glob("*.yaml"))
Schema = dict[str, Any]


def _crd() -> dict[str, Any]:
    (crd,) = list(yaml.safe_load_all(CRD.read_text(encoding="utf-8")))
    assert isinstance(crd, dict)
    return crd


def _version() -> dict[str, Any]:
    (version,) = _crd()["spec"]["versions"]
    assert isinstance(version, dict)
    return version


def _schema() -> Schema:
    schema = _version()["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def _nodes(node: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node below (and including) `node`, with a readable path."""
    yield path or ".", node
    for key, child in node.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{key}")
    if "items" in node:
        yield from _nodes(node["items"], f"{path}[*]")


def _at(path: str) -> Schema:
    """The schema node of a JSONPath like `.status.fairShare`."""
    node = _schema()
    for key in path.strip(".").split("."):
        node = node["properties"][key]
    return node


def test_names_scope_and_version() -> None:
    crd = _crd()
    version = _version()

    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "queues.aistack.io"
    assert crd["spec"]["group"] == "aistack.io"
    assert crd["spec"]["scope"] == "Cluster"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == ("Queue", "queues", "queue")
    assert names["shortNames"] == ["aq"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_kube_keys_agree_with_the_crd() -> None:
    """The service's contract module names the same group, version and plural."""
    crd = _crd()

    assert (crd["spec"]["group"], _version()["name"], crd["spec"]["names"]["plural"]) == (
        keys.GROUP,
        keys.QUEUE_VERSION,
        keys.QUEUE_PLURAL,
    )


def test_schema_is_structural() -> None:
    """Kubernetes' structural-schema rules that a file can break, checked node by node."""
    schema = _schema()
    assert schema["properties"]["metadata"] == {"type": "object"}, "metadata may not be restricted"
    for path, node in _nodes(schema):
        assert "type" in node, f"{path}: every node needs a type"
        assert "x-kubernetes-preserve-unknown-fields" not in node, (
            f"{path}: unknown fields must be pruned"
        )
        assert "additionalProperties" not in node, f"{path}: fields are listed, never open"
        for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "not", "nullable"):
            assert forbidden not in node, f"{path}: {forbidden}"
        if node["type"] == "object" and path not in {".metadata"}:
            assert node.get("properties"), f"{path}: an object lists its fields"
        if node["type"] == "array":
            assert "items" in node, f"{path}: an array has an item schema"


def test_map_lists_are_keyed_by_required_fields() -> None:
    for path, node in _nodes(_schema()):
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), path


def test_spec_fields_and_defaults() -> None:
    spec = _at(".spec")
    pool = spec["properties"]["pools"]["items"]

    assert set(spec["properties"]) == {
        "parent",
        "priority",
        "pools",
        "reclaimMinRuntimeSeconds",
        "preemptMinRuntimeSeconds",
        "defaultFor",
        "namespaces",
    }
    for namespaces in (
        spec["properties"]["defaultFor"]["properties"]["namespaces"],
        spec["properties"]["namespaces"],
    ):
        assert namespaces["x-kubernetes-list-type"] == "set"
        assert namespaces["items"]["maxLength"] == 63
    # Bounded, so that no number in a Queue can overflow the scheduler's arithmetic.
    assert pool["properties"]["quota"]["maximum"] == 1_000_000
    assert pool["properties"]["overQuotaWeight"]["maximum"] == 1000
    assert spec["properties"]["reclaimMinRuntimeSeconds"]["maximum"] == 31_536_000
    assert spec["properties"]["priority"]["default"] == 0
    assert spec["properties"]["pools"]["default"] == []
    assert set(pool["properties"]) == {"pool", "quota", "limit", "overQuotaWeight"}
    assert pool["required"] == ["pool", "quota"]
    assert pool["properties"]["overQuotaWeight"]["default"] == 1
    for field in ("quota", "limit", "overQuotaWeight"):
        assert (
            pool["properties"][field] | {"minimum": 0, "type": "number"}
            == pool["properties"][field]
        )
    assert pool["properties"]["pool"]["maxLength"] == 63
    for field in ("reclaimMinRuntimeSeconds", "preemptMinRuntimeSeconds"):
        assert spec["properties"][field]["minimum"] == 0


def test_status_fields() -> None:
    status = _at(".status")

    assert set(status["properties"]) == {
        "quota",
        "limit",
        "fairShare",
        "allocated",
        "pending",
        "running",
        "pools",
        "conditions",
        "observedGeneration",
    }
    pool = status["properties"]["pools"]["items"]
    assert set(pool["properties"]) == {"pool", "quota", "limit", "fairShare", "allocated", "demand"}
    condition = status["properties"]["conditions"]["items"]
    assert condition["required"] == ["type", "status", "lastTransitionTime", "reason", "message"]


def test_cel_rules_say_what_is_wrong() -> None:
    root = _schema()["x-kubernetes-validations"]
    pool = _at(".spec")["properties"]["pools"]["items"]["x-kubernetes-validations"]

    assert [(r["message"], r.get("fieldPath")) for r in root] == [
        ("a queue cannot be its own parent", ".spec.parent")
    ]
    assert "self.metadata.name" in root[0]["rule"]
    assert [r["message"] for r in pool] == ["limit must be >= quota"]
    assert "self.limit >= self.quota" in pool[0]["rule"]


def test_printer_columns_read_existing_fields() -> None:
    columns = _version()["additionalPrinterColumns"]

    assert [c["name"] for c in columns] == [
        "Parent",
        "Quota",
        "Fair Share",
        "Allocated",
        "Pending",
        "Running",
        "Age",
    ]
    for column in columns:
        if column["name"] == "Age":
            assert (column["jsonPath"], column["type"]) == (".metadata.creationTimestamp", "date")
            continue
        field = _at(column["jsonPath"])
        expected = {"number": "number", "integer": "integer", "string": "string"}[field["type"]]
        assert column["type"] == expected, column["name"]
        if column["name"] != "Parent":
            assert column["jsonPath"].startswith(".status."), column["name"]


def _unknown_fields(value: Any, node: Schema, path: str) -> Iterator[str]:
    if isinstance(value, dict) and "properties" in node:
        for key, child in value.items():
            if key not in node["properties"]:
                yield f"{path}.{key}"
            else:
                yield from _unknown_fields(child, node["properties"][key], f"{path}.{key}")
    elif isinstance(value, list) and "items" in node:
        for index, item in enumerate(value):
            yield from _unknown_fields(item, node["items"], f"{path}[{index}]")


@pytest.mark.parametrize("path", QUEUES, ids=lambda p: p.stem)
def test_samples_use_only_schema_fields(path: Path) -> None:
    """A misspelt field would be pruned silently; the samples must test what they claim."""
    queue = yaml.safe_load(path.read_text(encoding="utf-8"))

    assert (queue["apiVersion"], queue["kind"]) == ("aistack.io/v1alpha1", "Queue")
    assert list(_unknown_fields(queue.get("spec", {}), _at(".spec"), ".spec")) == []


def test_samples_cover_valid_and_invalid_queues() -> None:
    stems = [p.stem for p in QUEUES]

    assert sum(s.startswith("valid-") for s in stems) >= 2
    assert sum(s.startswith("invalid-") for s in stems) >= 5
    assert all(s.startswith(("valid-", "invalid-")) for s in stems)


def test_invalid_samples_and_only_they_say_what_to_expect() -> None:
    for path in QUEUES:
        assert bool(expected_errors(path)) == path.stem.startswith("invalid-"), path.name
