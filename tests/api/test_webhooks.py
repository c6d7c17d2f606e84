from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import pytest

from scheduler_service.api import AdmissionDecision, Metrics
from tests.api.support import FakeWebhooks, TestClient, error_of

PATCH = (
    {"op": "add", "path": "/spec/schedulingGates", "value": [{"name": "aistack.io/admission"}]},
)


def _review(uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "team-a",
            "object": {"metadata": {"name": "train-0"}},
        },
    }


def test_an_allowed_mutation_carries_a_base64_json_patch(
    client: TestClient, webhooks: FakeWebhooks
) -> None:
    webhooks.pod = lambda _: AdmissionDecision(allowed=True, patch=PATCH, warnings=("w1",))

    response = client.post("/webhooks/mutate-pod", json=_review("uid-1"))

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": "uid-1",
            "allowed": True,
            "warnings": ["w1"],
            "patchType": "JSONPatch",
            "patch": body["response"]["patch"],
        },
    }
    assert json.loads(base64.b64decode(body["response"]["patch"])) == list(PATCH)
    assert webhooks.requests == [_review("uid-1")["request"]]


def test_an_allowed_request_without_patch_has_no_patch_fields(client: TestClient) -> None:
    body = client.post("/webhooks/mutate-pod", json=_review("uid-2")).json()

    assert body["response"] == {"uid": "uid-2", "allowed": True}


def test_a_refusal_carries_its_message_and_code(client: TestClient, webhooks: FakeWebhooks) -> None:
    webhooks.queue = lambda _: AdmissionDecision(
        allowed=False, code=400, message="queue x: spec.pools[0].quota must be >= 0, got -1"
    )

    body = client.post("/webhooks/validate-queue", json=_review("uid-3")).json()

    assert body["response"] == {
        "uid": "uid-3",
        "allowed": False,
        "status": {"code": 400, "message": "queue x: spec.pools[0].quota must be >= 0, got -1"},
    }


def test_a_refusal_defaults_to_403_and_never_carries_a_patch(
    client: TestClient, webhooks: FakeWebhooks
) -> None:
    webhooks.pod = lambda _: AdmissionDecision(allowed=False, message="no", patch=PATCH)

    response = client.post("/webhooks/mutate-pod", json=_review("uid-4")).json()["response"]

    assert response["status"] == {"code": 403, "message": "no"}
    assert "patch" not in response
    assert "patchType" not in response


def _explode(request: Mapping[str, Any]) -> AdmissionDecision:
    raise KeyError("spec")


def test_a_webhook_that_raises_refuses_with_the_internal_error_named(
    client: TestClient, webhooks: FakeWebhooks, caplog: pytest.LogCaptureFixture
) -> None:
    webhooks.pod = _explode

    response = client.post("/webhooks/mutate-pod", json=_review("uid-5"))

    assert response.status_code == 200
    answer = response.json()["response"]
    assert answer["uid"] == "uid-5"
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 500
    assert answer["status"]["message"].startswith(
        "internal error in the AI-Stack scheduler's mutate-pod webhook: KeyError: 'spec'; retry"
    )
    assert "the mutate-pod webhook failed on request uid-5" in caplog.text


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"{not json", "the body is not JSON"),
        (b"[1, 2]", "the body is not a JSON object"),
        (
            json.dumps({**_review(), "apiVersion": "admission.k8s.io/v1beta1"}).encode(),
            "expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got "
            "'admission.k8s.io/v1beta1' and 'AdmissionReview'",
        ),
        (
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
            "the AdmissionReview has no request object",
        ),
        (
            json.dumps({**_review(), "request": {"uid": ""}}).encode(),
            "the AdmissionReview's request has no uid",
        ),
    ],
)
def test_a_malformed_review_is_400_saying_what_to_send(
    client: TestClient, webhooks: FakeWebhooks, body: bytes, complaint: str
) -> None:
    response = client.post(
        "/webhooks/validate-queue", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    code, message = error_of(response)
    assert code == "bad_request"
    assert message.startswith(complaint)
    assert message.endswith("admissionReviewVersions: [v1])")
    assert webhooks.requests == []


def test_webhook_decisions_are_counted(
    client: TestClient, webhooks: FakeWebhooks, metrics: Metrics
) -> None:
    webhooks.queue = lambda _: AdmissionDecision(allowed=False, message="no")

    client.post("/webhooks/mutate-pod", json=_review())
    client.post("/webhooks/validate-queue", json=_review())
    client.post("/webhooks/validate-queue", json=_review())

    text = metrics.exposition().decode()
    assert 'aistack_webhook_decisions_total{allowed="true",hook="mutate-pod"} 1.0' in text
    assert 'aistack_webhook_decisions_total{allowed="false",hook="validate-queue"} 2.0' in text
