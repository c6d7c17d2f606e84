"""The Queue CRD on a real kube-apiserver: accepted, and the sample queues accepted or refused.

What test_crd.py cannot check from the file alone: the CEL rules compile within the API
server's cost budget, defaults are applied, list-map keys are unique, and each sample under
`testdata/queues/` is accepted or refused with the message its `# expect:` lines name.

Marked `integration`: it starts the control plane of tests/integration (`TestCluster`, from the
binaries `scripts/build-test-binaries` puts in bin/; a missing one is an error, not a skip), or
uses the one `AISTACK_TEST_KUBECONFIG` names. Queues are created with dry-run, so nothing is left
behind but the CRD.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from tests.helm._chart import CRD, TESTDATA, expected_errors
from tests.integration.cluster import TestCluster

QUEUES = sorted((TESTDATA / "queues").glob("*.yaml"))

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def api() -> Iterator[client.ApiClient]:
    """An admin client of a test API server: the given one, or a control plane started here."""
    kubeconfig = os.environ.get("AISTACK_TEST_KUBECONFIG")
    if kubeconfig:
        with config.new_client_from_config(config_file=kubeconfig) as given:  # type: ignore[no-untyped-call]
            yield given
        return
    with TestCluster() as cluster, cluster.api_client() as admin:
        yield admin


@pytest.fixture(scope="module")
def queues(api: client.ApiClient) -> client.CustomObjectsApi:
    """The custom-objects API, once the Queue CRD from the chart is established."""
    extensions = client.ApiextensionsV1Api(api)
    body = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    name = body["metadata"]["name"]
    try:
        extensions.create_custom_resource_definition(body)
    except client.ApiException as error:
        if error.status != 409:
            raise
        current = extensions.read_custom_resource_definition(name)
        assert current.metadata is not None
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        extensions.replace_custom_resource_definition(name, body)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = extensions.read_custom_resource_definition(name).status
        conditions = (status.conditions if status else None) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return client.CustomObjectsApi(api)
        time.sleep(0.2)
    pytest.fail(f"CRD {name} was not established within 30 s")


@pytest.mark.parametrize("path", QUEUES, ids=lambda p: p.stem)
def test_sample_queue(queues: client.CustomObjectsApi, path: Path) -> None:
    queue = yaml.safe_load(path.read_text(encoding="utf-8"))
    expected = expected_errors(path)

    try:
        created: Any = queues.create_cluster_custom_object(
            "aistack.io", "v1alpha1", "queues", queue, dry_run="All"
        )
    except client.ApiException as error:
        message = json.loads(error.body or "{}").get("message", str(error))
        assert expected, f"{path.name} was refused: {message}"
        for fragment in expected:
            assert fragment in message, f"{fragment!r} not in {message!r}"
        return
    assert not expected, f"{path.name} was accepted; expected a refusal naming {expected}"
    spec = created["spec"]
    written = queue.get("spec", {})
    assert spec["priority"] == written.get("priority", 0)
    assert len(spec["pools"]) == len(written.get("pools", []))
    for pool, sent in zip(spec["pools"], written.get("pools", []), strict=True):
        assert pool["overQuotaWeight"] == sent.get("overQuotaWeight", 1)
