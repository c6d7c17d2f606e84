"""Request bodies are capped per route: too large is 413 with a reason, and nothing is decided."""

from __future__ import annotations

import json
from collections.abc import Iterator

from tests.api.support import FakeWebhooks, TestClient


def _review(padding: int) -> bytes:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u", "object": {"metadata": {"annotations": {"pad": "x" * padding}}}},
    }
    return json.dumps(review).encode()


def test_a_review_of_an_ordinary_size_passes(client: TestClient, webhooks: FakeWebhooks) -> None:
    response = client.post(
        "/webhooks/mutate-pod",
        content=_review(1024 * 1024),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200
    assert len(webhooks.requests) == 1


def test_a_review_over_four_mebibytes_is_refused_unread(
    client: TestClient, webhooks: FakeWebhooks
) -> None:
    response = client.post(
        "/webhooks/mutate-pod",
        content=_review(5 * 1024 * 1024),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert (
        "larger than 4194304 bytes, the most /webhooks/mutate-pod takes"
        in (response.json()["detail"])
    )
    assert webhooks.requests == []


def test_a_body_without_a_length_is_counted_as_it_streams(
    client: TestClient, webhooks: FakeWebhooks
) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(80):
            yield b" " * 65536  # 5 MiB in all, no Content-Length

    response = client.post("/webhooks/validate-queue", content=chunks())
    assert response.status_code == 413
    assert webhooks.requests == []


def test_the_api_takes_no_large_bodies(client: TestClient) -> None:
    response = client.post("/api/v1/queues", content=b"x" * (65 * 1024))
    assert response.status_code == 413
    assert "the most /api/v1/queues takes" in response.json()["detail"]
