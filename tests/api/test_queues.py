from __future__ import annotations

from scheduler_service.api import Permission
from tests.api.support import ALICE_AUTH, BOB_AUTH, FakeAuthorizer, TestClient, error_of


def test_queues_list_the_tree_with_shares_in_gpus(client: TestClient) -> None:
    response = client.get("/api/v1/queues", headers=ALICE_AUTH)

    assert response.status_code == 200
    queues = {q["name"]: q for q in response.json()}
    assert list(queues) == ["org", "team-a", "team-b"]
    assert queues["org"]["parent"] is None
    assert queues["org"]["children"] == ["team-a", "team-b"]
    assert queues["team-b"]["parent"] == "org"
    assert queues["team-b"]["pools"] == [
        {
            "pool": "a100",
            "quota_gpus": 2.0,
            "limit_gpus": None,
            "over_quota_weight": 1.0,
            "fair_share_gpus": 0.0,
            "allocated_gpus": 0.0,
            "demand_gpus": 0.0,
        },
        {
            "pool": "h100",
            "quota_gpus": 1.0,
            "limit_gpus": 3.0,
            "over_quota_weight": 1.0,
            "fair_share_gpus": 1.5,
            # The infer slice (30% compute, 0.3 GPU); the evicting notebook's 0.2 is on its way
            # out. Milli-GPUs are shown as GPUs.
            "allocated_gpus": 0.3,
            # Both slices (0.5) + big (2 pods x 2 GPUs) + later (2 GPUs).
            "demand_gpus": 6.5,
        },
    ]


def test_queue_counts_its_workloads_and_a_parent_its_subtree(client: TestClient) -> None:
    team_b = client.get("/api/v1/queues/team-b", headers=ALICE_AUTH).json()
    org = client.get("/api/v1/queues/org", headers=ALICE_AUTH).json()

    assert team_b["workloads"] == {"pending": 2, "running": 1, "evicting": 1}
    # team-a: train running, next pending; team-a/lost names a queue that does not exist.
    assert org["workloads"] == {"pending": 3, "running": 2, "evicting": 1}
    assert org["priority"] == 0
    assert org["reclaim_min_runtime_seconds"] is None


def test_unknown_queue_is_404_with_a_hint(client: TestClient) -> None:
    response = client.get("/api/v1/queues/team-z", headers=ALICE_AUTH)

    assert response.status_code == 404
    assert error_of(response) == (
        "not_found",
        "no queue named 'team-z'; list the queues with GET /api/v1/queues",
    )


def test_queues_need_list_on_queues_in_the_aistack_group(
    client: TestClient, authorizer: FakeAuthorizer
) -> None:
    response = client.get("/api/v1/queues", headers=BOB_AUTH)

    assert response.status_code == 403
    code, message = error_of(response)
    assert code == "forbidden"
    assert message.startswith("user bob may not list queues.aistack.io cluster-wide;")
    assert authorizer.questions == [("bob", Permission("list", "queues", group="aistack.io"))]


def test_one_queue_needs_get_on_that_queue(client: TestClient, authorizer: FakeAuthorizer) -> None:
    response = client.get("/api/v1/queues/team-a", headers=BOB_AUTH)

    assert response.status_code == 403
    assert error_of(response)[1].startswith(
        "user bob may not get queues.aistack.io team-a cluster-wide;"
    )
    assert authorizer.questions == [
        ("bob", Permission("get", "queues", group="aistack.io", name="team-a"))
    ]
