"""The webhooks answer the API server only: its client certificate, on a port of their own.

Every other integration test proves the API server gets through (it presents the certificate
its admission configuration names). Here, anyone else is refused: in the TLS handshake on the
webhook port, and not served at all on the API's port.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest

from tests.integration.cluster import TestCluster, issue_cert, make_ca
from tests.integration.service import RunningService

REVIEW = json.dumps(
    {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u", "operation": "CREATE", "object": {"metadata": {}, "spec": {}}},
    }
).encode()


def post(url: str, context: ssl.SSLContext) -> int:
    request = urllib.request.Request(
        url, data=REVIEW, headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def client_context(cluster: TestCluster, *, certificate_of: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cluster.ca_path))
    if certificate_of is not None:
        ca = cluster.webhook_client_ca if certificate_of == "webhook" else make_ca("intruder")
        files = issue_cert(ca, hosts=["client"]).write(
            cluster.workdir / "webhook-auth", certificate_of
        )
        context.load_cert_chain(files.cert, files.key)
    return context


def test_only_a_certificate_of_the_webhook_client_ca_gets_an_answer(
    cluster: TestCluster, service: RunningService
) -> None:
    hook = f"{service.webhook_url}/webhooks/mutate-pod"

    assert post(hook, client_context(cluster, certificate_of="webhook")) == 200
    for stranger in (None, "intruder"):
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            post(hook, client_context(cluster, certificate_of=stranger))
    # Nor is there a way in through the API's port, which takes any client.
    assert (
        post(f"{service.url}/webhooks/mutate-pod", client_context(cluster, certificate_of=None))
        == 404
    )
