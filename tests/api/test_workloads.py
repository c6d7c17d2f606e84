from __future__ import annotations

import pytest

from scheduler_service.api import Permission
from tests.api.support import (
    ADMIN_AUTH,
    ALICE_AUTH,
    BOB_AUTH,
    NOW,
    FakeActions,
    FakeAuthorizer,
    TestClient,
    error_of,
)


def _names(client: TestClient, query: str = "", headers: dict[str, str] = ADMIN_AUTH) -> list[str]:
    response = client.get(f"/api/v1/workloads{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [w["name"] for w in response.json()]


def test_a_running_gang_shows_its_pods_and_allocation(client: TestClient) -> None:
    workloads = client.get("/api/v1/workloads", headers=ADMIN_AUTH).json()
    train = next(w for w in workloads if w["name"] == "team-a/train")

    assert train == {
        "name": "team-a/train",
        "namespace": "team-a",
        "pods": ["train-0", "train-1"],
        "pod_count": 2,
        "queue": "team-a",
        "kind": "train",
        "preemptible": True,
        "state": "running",
        "request": {
            "gpus": 1,
            "gpu_memory_mib": 0,
            "gpu_compute_percent": 0,
            "cpu_milli": 0,
            "memory_mib": 0,
        },
        "priority": 0,
        "submitted_at": NOW - 190,
        "started_at": NOW - 100,
        "allocation": [
            {
                "pod": "train-0",
                "node": "n1",
                "gpus": ["n1-gpu0"],
                "gpu_indexes": [0],
                "slice": None,
            },
            {
                "pod": "train-1",
                "node": "n1",
                "gpus": ["n1-gpu1"],
                "gpu_indexes": [1],
                "slice": None,
            },
        ],
        "reason": None,
        "workflow": "ddp-x7k2p",
    }


def test_a_slice_shows_its_request_and_share(client: TestClient) -> None:
    infer = client.get("/api/v1/workloads/team-b/team-b%2Finfer", headers=ADMIN_AUTH)
    # A workload is also found by the name without its namespace prefix, and by a pod's name.
    by_short_name = client.get("/api/v1/workloads/team-b/infer", headers=ADMIN_AUTH)
    by_pod = client.get("/api/v1/workloads/team-b/infer-0", headers=ADMIN_AUTH)

    assert infer.status_code == 404  # %2F is a path separator to the router: use the short name
    assert by_short_name.json() == by_pod.json()
    body = by_pod.json()
    assert body["kind"] == "infer"
    assert body["preemptible"] is False
    assert body["request"]["gpu_memory_mib"] == 20000
    assert body["request"]["gpu_compute_percent"] == 30
    assert body["allocation"][0]["slice"] == {"memory_mib": 20000, "compute_percent": 30}


def test_a_pending_workload_carries_its_reason_in_words_and_numbers(client: TestClient) -> None:
    big = client.get("/api/v1/workloads/team-b/big", headers=ADMIN_AUTH).json()

    assert big["state"] == "pending"
    assert big["allocation"] is None
    assert big["started_at"] is None
    assert big["reason"] == {
        "code": "QueueAtLimit",
        "type": "QueueAtLimit",
        "message": "queue team-b at limit 0.3/3 GPUs in pool h100; this step needs 4 more",
        "details": {
            "queue": "team-b",
            "pool": "h100",
            "allocated_gpus": 0.3,
            "requested_gpus": 4.0,
            "limit_gpus": 3.0,
        },
    }


def test_an_invalid_target_reason_keeps_its_detail(client: TestClient) -> None:
    lost = client.get("/api/v1/workloads/team-a/lost", headers=ADMIN_AUTH).json()

    assert lost["reason"]["code"] == "InvalidRequest"
    assert lost["reason"]["type"] == "InvalidTarget"
    assert lost["reason"]["details"] == {"detail": lost["reason"]["message"]}
    assert "queue 'nowhere' does not exist" in lost["reason"]["message"]


def test_filters_by_namespace_queue_and_state(client: TestClient) -> None:
    assert _names(client) == [
        "team-a/lost",
        "team-a/next",
        "team-a/train",
        "team-b/big",
        "team-b/infer",
        "team-b/later",
        "team-b/notebook",
    ]
    assert _names(client, "?namespace=team-b&state=pending") == ["team-b/big", "team-b/later"]
    assert _names(client, "?queue=team-a") == ["team-a/next", "team-a/train"]
    assert _names(client, "?state=evicting") == ["team-b/notebook"]
    assert _names(client, "?workflow=ddp-x7k2p") == ["team-a/next", "team-a/train"]


def test_a_workflows_gpu_steps_are_where_its_argo_ui_link_leads(client: TestClient) -> None:
    found = client.get("/api/v1/workflows/team-a/ddp-x7k2p", headers=ADMIN_AUTH)
    assert found.status_code == 200
    assert [(w["name"], w["state"]) for w in found.json()] == [
        ("team-a/next", "pending"),
        ("team-a/train", "running"),
    ]
    elsewhere = client.get("/api/v1/workflows/team-b/ddp-x7k2p", headers=ADMIN_AUTH)
    assert elsewhere.status_code == 404
    assert "aistack status ddp-x7k2p -n team-b" in elsewhere.json()["error"]["message"]


def test_a_workflows_steps_need_list_pods_there(client: TestClient) -> None:
    answer = client.get("/api/v1/workflows/team-a/ddp-x7k2p", headers=BOB_AUTH)
    assert answer.status_code == 403


def test_an_unknown_state_is_422_listing_the_accepted_values(client: TestClient) -> None:
    response = client.get("/api/v1/workloads?state=sleeping", headers=ADMIN_AUTH)

    assert response.status_code == 422
    code, message = error_of(response)
    assert code == "invalid_parameter"
    assert message.startswith("query parameter state (got 'sleeping'): ")
    for accepted in ("'pending'", "'running'", "'evicting'"):
        assert accepted in message


def test_alice_sees_only_namespaces_where_she_may_list_pods(
    client: TestClient, authorizer: FakeAuthorizer
) -> None:
    assert _names(client, headers=ALICE_AUTH) == ["team-a/lost", "team-a/next", "team-a/train"]
    # One question per namespace for the whole page, not one per workload.
    pod_questions = [(u, p) for u, p in authorizer.questions if p.resource == "pods"]
    assert sorted(pod_questions, key=lambda q: q[1].namespace) == [
        ("alice", Permission("list", "pods", namespace="team-a")),
        ("alice", Permission("list", "pods", namespace="team-b")),
    ]


def test_naming_a_forbidden_namespace_is_403_not_an_empty_list(client: TestClient) -> None:
    response = client.get("/api/v1/workloads?namespace=team-b", headers=ALICE_AUTH)

    assert response.status_code == 403
    code, message = error_of(response)
    assert code == "forbidden"
    assert message.startswith("user alice may not list pods in namespace team-b;")
    assert "RoleBinding" in message


def test_bob_sees_nothing(client: TestClient) -> None:
    assert _names(client, headers=BOB_AUTH) == []


def test_get_needs_get_pods_in_the_namespace(client: TestClient) -> None:
    assert client.get("/api/v1/workloads/team-a/train-0", headers=ALICE_AUTH).status_code == 200
    response = client.get("/api/v1/workloads/team-b/big", headers=ALICE_AUTH)

    assert response.status_code == 403
    assert error_of(response)[1].startswith("user alice may not get pods in namespace team-b;")


def test_a_workload_in_another_namespace_is_not_found_under_the_wrong_one(
    client: TestClient,
) -> None:
    response = client.get("/api/v1/workloads/team-a/big", headers=ADMIN_AUTH)

    assert response.status_code == 404
    code, message = error_of(response)
    assert code == "not_found"
    assert message.startswith("no workload or pod named 'big' in namespace 'team-a'")


def test_delete_calls_the_action_with_the_workload_name(
    client: TestClient, actions: FakeActions
) -> None:
    response = client.delete("/api/v1/workloads/team-a/train-1", headers=ALICE_AUTH)

    assert response.status_code == 204
    assert response.content == b""
    assert actions.deleted == ["team-a/train"]


@pytest.mark.parametrize(
    ("path", "status"),
    [("/api/v1/workloads/team-b/big", 403), ("/api/v1/workloads/team-a/nothing", 404)],
)
def test_delete_refuses_without_rights_or_target(
    client: TestClient, actions: FakeActions, path: str, status: int
) -> None:
    response = client.delete(path, headers=ALICE_AUTH)

    assert response.status_code == status
    assert actions.deleted == []


def test_delete_of_a_workload_gone_meanwhile_is_404(
    client: TestClient, actions: FakeActions
) -> None:
    actions.gone.add("team-a/next")

    response = client.delete("/api/v1/workloads/team-a/next", headers=ALICE_AUTH)

    assert response.status_code == 404
    assert "already gone" in error_of(response)[1]
