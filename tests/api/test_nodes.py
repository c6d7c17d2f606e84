from __future__ import annotations

from tests.api.support import ADMIN_AUTH, ALICE_AUTH, TestClient, error_of


def test_nodes_show_pools_readiness_and_what_is_on_each_gpu(client: TestClient) -> None:
    response = client.get("/api/v1/nodes", headers=ADMIN_AUTH)

    assert response.status_code == 200
    nodes = {n["name"]: n for n in response.json()}
    assert list(nodes) == ["n1", "n2", "n3"]
    assert [(n["pool"], n["ready"], n["gpu_model"]) for n in nodes.values()] == [
        ("h100", True, "H100"),
        ("a100", True, "A100"),
        ("h100", False, "H100"),
    ]
    assert nodes["n3"]["topology"] == {"block": "b1", "rack": "r2"}
    n1 = nodes["n1"]
    assert n1["free_gpus"] == 1
    whole, _, shared, free = n1["gpus"]
    assert whole["whole"] == {
        "workload": "team-a/train",
        "namespace": "team-a",
        "pod": "train-0",
        "state": "running",
        "memory_mib": 81920,
        "compute_percent": 100,
    }
    assert whole["slices"] == []
    assert (whole["free_memory_mib"], whole["free_compute_percent"]) == (0, 0)
    assert shared["whole"] is None
    assert [
        (s["pod"], s["state"], s["memory_mib"], s["compute_percent"]) for s in shared["slices"]
    ] == [
        ("infer-0", "running", 20000, 30),
        ("notebook", "evicting", 10000, 20),
    ]
    assert (shared["free_memory_mib"], shared["free_compute_percent"]) == (81920 - 30000, 50)
    assert free == {
        "index": 3,
        "uuid": "n1-gpu3",
        "model": "H100",
        "memory_mib": 81920,
        "numa_node": 0,
        "whole": None,
        "slices": [],
        "free_memory_mib": 81920,
        "free_compute_percent": 100,
    }


def test_one_node(client: TestClient) -> None:
    response = client.get("/api/v1/nodes/n2", headers=ADMIN_AUTH)

    assert response.status_code == 200
    assert response.json()["free_gpus"] == 2


def test_unknown_node_is_404(client: TestClient) -> None:
    response = client.get("/api/v1/nodes/n9", headers=ADMIN_AUTH)

    assert response.status_code == 404
    assert error_of(response)[1].startswith("no node named 'n9' is known to the scheduler")


def test_nodes_need_list_nodes(client: TestClient) -> None:
    response = client.get("/api/v1/nodes", headers=ALICE_AUTH)

    assert response.status_code == 403
    assert error_of(response) == (
        "forbidden",
        "user alice may not list nodes cluster-wide; ask a cluster administrator for a "
        "ClusterRoleBinding that grants list on nodes",
    )
