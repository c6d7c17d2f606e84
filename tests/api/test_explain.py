from __future__ import annotations

from tests.api.support import ADMIN_AUTH, ALICE_AUTH, TestClient, error_of


def test_a_pending_pod_is_explained_with_its_reason_share_and_place(client: TestClient) -> None:
    response = client.get("/api/v1/explain/team-b/later", headers=ADMIN_AUTH)

    assert response.status_code == 200
    body = response.json()
    assert body["pod"] == "later"
    assert body["workload"]["name"] == "team-b/later"
    # big (priority 0) is ahead of later (priority -1) in team-b's pending order.
    assert (body["queue_position"], body["queue_pending"]) == (2, 2)
    reason = body["workload"]["reason"]
    assert reason["code"] == "InsufficientCapacity"
    assert reason["details"]["free_gpus"] == 1.5
    # The words of the pod's message: queue and place, the queue's standing in the pool the
    # reason is about (team-b holds 0.3 GPUs of its quota of 1 in h100), then the reason,
    # which need not name the pool again.
    assert reason["message"].startswith("needs 1 x 2 GPUs in pool h100: ")
    assert body["summary"] == (
        "pending in queue team-b, 2nd of 2 waiting; pool h100: quota 1, used 0.3 (0 borrowed) "
        "GPUs; needs 1 x 2 GPUs: 1.5 GPUs free, best node has 1.5 GPUs free (n1); queue team-b "
        "holds 0.3 of its 1.5-GPU fair share: this step's 2 more may only use idle GPUs, not "
        "reclaim"
    )
    # later may only use pool h100: team-b's standing there, not in a100.
    assert body["queue_pools"] == [
        {
            "pool": "h100",
            "quota_gpus": 1.0,
            "limit_gpus": 3.0,
            "over_quota_weight": 1.0,
            "fair_share_gpus": 1.5,
            "allocated_gpus": 0.3,
            "demand_gpus": 6.5,
        }
    ]


def test_a_running_pod_is_explained_with_where_and_since_when(client: TestClient) -> None:
    body = client.get("/api/v1/explain/team-a/train-1", headers=ALICE_AUTH).json()

    assert body["workload"]["state"] == "running"
    assert body["summary"] == (
        "running on node n1 since 2023-11-14T22:15:00+00:00, in queue team-a"
    )
    assert [p["node"] for p in body["workload"]["allocation"]] == ["n1", "n1"]
    assert body["queue_position"] is None
    assert [p["pool"] for p in body["queue_pools"]] == ["h100"]


def test_an_evicting_pod_says_it_holds_its_gpus(client: TestClient) -> None:
    body = client.get("/api/v1/explain/team-b/notebook", headers=ADMIN_AUTH).json()

    assert body["summary"] == (
        "being evicted from node n1; it holds its GPUs until its pods are gone, then waits in "
        "queue team-b again"
    )


def test_a_pod_the_plan_admitted_but_not_yet_placed(client: TestClient) -> None:
    body = client.get("/api/v1/explain/team-a/next", headers=ALICE_AUTH).json()

    assert body["workload"]["state"] == "pending"
    assert body["workload"]["reason"] is None
    assert body["summary"] == (
        "admitted by the last cycle onto node n2; its pods are being bound to their GPUs and "
        "released"
    )


def test_unknown_pod_is_404_saying_how_to_check_it(client: TestClient) -> None:
    response = client.get("/api/v1/explain/team-a/nothing", headers=ALICE_AUTH)

    assert response.status_code == 404
    code, message = error_of(response)
    assert code == "not_found"
    assert "kubectl get pod nothing -n team-a --show-labels" in message


def test_explain_needs_get_pods_in_the_namespace(client: TestClient) -> None:
    response = client.get("/api/v1/explain/team-b/later", headers=ALICE_AUTH)

    assert response.status_code == 403
    assert error_of(response)[1].startswith(
        "user alice may not get pods later in namespace team-b;"
    )
