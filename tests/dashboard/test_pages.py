"""Each view through its route: what it shows, to whom, and the headers every page carries.

The cluster is tests/api/support.py's: n1 (4 x H100) holds team-a's gang on GPUs 0-1 and two
team-b slices on GPU 2 (one evicting); n2 (2 x A100) is empty; n3 is not ready. Pending:
team-b/big (at its queue's limit), team-b/later (no room), team-a/next, team-a/lost.
"""

from __future__ import annotations

import pytest

from tests.api.support import ADMIN_AUTH, ALICE_AUTH, FakeAuthorizer, TestClient
from tests.dashboard.html import Element, parse


def page(client: TestClient, path: str, headers: dict[str, str] = ADMIN_AUTH) -> Element:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return parse(response.text)


def rows(document: Element) -> list[str]:
    return [
        row.attrs["data-workload"]
        for row in document.find_all("tr")
        if "data-workload" in row.attrs
    ]


def test_every_page_forbids_framing_scripts_from_elsewhere_and_caching(client: TestClient) -> None:
    response = client.get("/ui/queues", headers=ADMIN_AUTH)

    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "'unsafe-inline'" not in policy
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_pages_load_only_the_services_own_scripts_and_styles(client: TestClient) -> None:
    document = page(client, "/ui/")

    sources = [e.attrs["src"] for e in document.find_all("script")]
    assert sources == ["/ui/static/htmx.min.js", "/ui/static/sse.min.js", "/ui/static/dashboard.js"]
    assert [e.attrs["href"] for e in document.find_all("link", rel="stylesheet")] == [
        "/ui/static/dashboard.css"
    ]
    assert not [e for e in document.iter() if "style" in e.attrs]


def test_the_root_of_the_service_leads_to_the_dashboard(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)

    assert response.status_code == 307
    assert response.headers["location"] == "/ui/"


def test_the_overview_counts_gpus_per_pool_with_slices_as_parts(client: TestClient) -> None:
    document = page(client, "/ui/")

    h100 = document.one("tr", data_pool="h100")
    fields = {
        cell.attrs["data-field"]: cell.text
        for cell in h100.find_all("td")
        if "data-field" in cell.attrs
    }
    # The gang holds 2 whole GPUs; the two slices (30 % and 20 % compute, 19.5 and 9.8 GiB of
    # 80) are charged 0.3 and 0.2 of GPU 2; n3's two GPUs count, though it is not ready.
    assert fields == {
        "gpus": "6",
        "quota": "4",
        "allocated": "2.5",
        "borrowed": "0",
        "idle": "3.5",
        "free": "3",
        "shared": "1 (2 slices)",
        "waiting": "7.2",
    }
    assert document.one(data_count="pending").text == "4"
    assert document.one(data_count="evicting").text == "1"


def test_the_overview_lists_only_the_waits_a_viewer_may_see(client: TestClient) -> None:
    admin = rows(page(client, "/ui/"))
    alice = page(client, "/ui/", ALICE_AUTH)

    assert admin == ["team-b/big", "team-b/later", "team-a/next", "team-a/lost"]
    assert rows(alice) == ["team-a/next", "team-a/lost"]
    namespaces = {row.find_all("td")[1].text for row in alice.find_all("tr", data_state="pending")}
    assert namespaces == {"team-a"}
    assert "it is not shown" in alice.text


def test_the_queue_tree_shows_quota_share_use_and_who_borrows(client: TestClient) -> None:
    document = page(client, "/ui/queues")

    names = [
        row.attrs["data-queue"] for row in document.find_all("tr") if "data-queue" in row.attrs
    ]
    assert list(dict.fromkeys(names)) == ["org", "team-a", "team-b"]
    team_b = document.one("tr", data_queue="team-b", data_pool="h100")
    assert team_b.one(data_field="quota").text == "1"
    assert team_b.one(data_field="limit").text == "3"
    assert team_b.one(data_field="allocated").text == "0.3"
    assert team_b.one("svg").attrs["aria-label"] == "team-b in h100"


def test_the_queue_tree_can_be_narrowed_to_one_pool(client: TestClient) -> None:
    document = page(client, "/ui/queues?pool=a100")

    pools = {row.attrs.get("data-pool") for row in document.find_all("tr", data_queue="team-b")}
    assert pools == {"a100"}
    assert document.one("option", value="a100").attrs.get("selected") == ""


def test_the_gpu_map_draws_slices_as_parts_of_the_gpu(client: TestClient) -> None:
    document = page(client, "/ui/nodes")

    gpu = document.one(data_gpu="n1-gpu2")
    holders = [h.text for h in gpu.find_all("li", class_="holder")]
    assert holders == [
        "team-b/infer-0 19.5 GiB, 30 %",
        "team-b/notebook 9.8 GiB, 20 % (evicting)",
    ]
    assert "free: 50.7 GiB, 50 %" in gpu.text
    _, compute_bar = gpu.find_all("svg", class_="bar")
    assert [r.attrs["width"] for r in compute_bar.find_all("rect")][1:] == ["60", "40"]
    whole = document.one(data_gpu="n1-gpu0")
    assert whole.find_all("li", class_="holder")[0].text == "team-a/train-0 whole GPU"


def test_pods_of_namespaces_a_viewer_may_not_see_are_drawn_without_a_name(
    client: TestClient, authorizer: FakeAuthorizer
) -> None:
    authorizer.grants.add(("alice", "list", "nodes", "*"))  # nodes, not team-b's pods

    document = page(client, "/ui/nodes", ALICE_AUTH)

    shared = document.one(data_gpu="n1-gpu2")
    assert [h.text for h in shared.find_all("li", class_="holder")] == [
        "a pod of another namespace 19.5 GiB, 30 %",
        "a pod of another namespace 9.8 GiB, 20 % (evicting)",
    ]
    assert "team-b" not in document.text
    assert "team-a/train-0" in document.one(data_gpu="n1-gpu0").text


def test_the_gpu_map_pages_and_finds_nodes_by_name(client: TestClient) -> None:
    document = page(client, "/ui/nodes?q=n2")

    assert [n.attrs["data-node"] for n in document.find_all("section", class_="node")] == ["n2"]


def test_the_workload_list_filters_by_namespace_queue_state_and_workflow(
    client: TestClient,
) -> None:
    assert rows(page(client, "/ui/workloads?namespace=team-b&state=pending")) == [
        "team-b/big",
        "team-b/later",
    ]
    assert rows(page(client, "/ui/workloads?queue=team-a")) == ["team-a/next", "team-a/train"]
    assert rows(page(client, "/ui/workloads?workflow=ddp-x7k2p")) == [
        "team-a/next",
        "team-a/train",
    ]


def test_a_viewer_sees_only_the_workloads_of_namespaces_they_may_list_pods_in(
    client: TestClient,
) -> None:
    document = page(client, "/ui/workloads", ALICE_AUTH)

    assert rows(document) == ["team-a/lost", "team-a/next", "team-a/train"]
    assert "not shown: you may not list pods in them" in document.text
    assert [
        o.attrs["value"] for o in document.one("select", name="namespace").find_all("option")
    ] == [
        "",
        "team-a",
    ]


def test_naming_a_forbidden_namespace_is_refused(client: TestClient) -> None:
    response = client.get("/ui/workloads?namespace=team-b", headers=ALICE_AUTH)

    assert response.status_code == 403
    assert "alice may not list pods in namespace team-b" in response.text


def test_a_bad_filter_value_says_which_values_are_taken(client: TestClient) -> None:
    response = client.get("/ui/workloads?state=sleeping", headers=ADMIN_AUTH)

    assert response.status_code == 422
    assert "pending, running, evicting" in response.text


def test_a_waiting_workloads_page_gives_the_conclusion_first_with_numbers(
    client: TestClient,
) -> None:
    document = page(client, "/ui/workloads/team-b/big")

    summary = document.one(data_field="summary").text
    assert summary.startswith("pending in queue team-b, 1st of 2 waiting; pool h100: quota 1")
    facts = {
        dd.attrs["data-fact"]: dd.text for dd in document.find_all("dd") if "data-fact" in dd.attrs
    }
    assert facts["Place in line"] == "1st of 2 waiting in queue team-b"
    assert facts["Waits for"].startswith("queue team-b at limit 0.3/3 GPUs in pool h100")
    assert facts["Waited"].startswith("1")
    assert document.one(data_field="reason-code").text == "QueueAtLimit"
    standing = document.one("tr", data_pool="h100")
    assert (standing.one(data_field="quota").text, standing.one(data_field="allocated").text) == (
        "1",
        "0.3",
    )


def test_a_running_workloads_page_shows_its_pods_gpus_and_the_way_back_to_argo(
    client: TestClient,
) -> None:
    document = page(client, "/ui/workloads/team-a/train")

    assert document.one(data_field="summary").text.startswith("running on node n1 since")
    pods = {
        row.attrs["data-pod"]: row.find_all("td")[2].text
        for row in document.find_all("tr")
        if "data-pod" in row.attrs
    }
    assert pods == {"train-0": "0", "train-1": "1"}
    argo = document.one("a", class_="argo")
    assert argo.attrs["href"] == "https://argo.example.com/workflows/team-a/ddp-x7k2p"


@pytest.mark.parametrize(
    ("path", "summary"),
    [
        ("/ui/pods/team-a/train-1", "running on node n1"),
        ("/ui/pods/team-b/later", "pending in queue team-b, 2nd of 2 waiting"),
    ],
)
def test_the_argo_uis_pod_link_lands_on_its_workloads_page(
    client: TestClient, path: str, summary: str
) -> None:
    assert page(client, path).one(data_field="summary").text.startswith(summary)


def test_the_argo_uis_workflow_link_lands_on_its_gpu_steps(client: TestClient) -> None:
    document = page(client, "/ui/workflows/team-a/ddp-x7k2p")

    assert rows(document) == ["team-a/next", "team-a/train"]
    assert document.one("h1").text == "Workflow ddp-x7k2p"


def test_a_workload_page_needs_get_pods_in_its_namespace(client: TestClient) -> None:
    response = client.get("/ui/workloads/team-b/big", headers=ALICE_AUTH)

    assert response.status_code == 403
    assert "alice may not get pods in namespace team-b" in response.text


def test_an_unknown_workload_or_pod_is_a_404_that_says_what_to_check(client: TestClient) -> None:
    workload = client.get("/ui/workloads/team-a/ghost", headers=ADMIN_AUTH)
    pod = client.get("/ui/pods/team-a/ghost-0", headers=ADMIN_AUTH)
    route = client.get("/ui/no-such-view", headers=ADMIN_AUTH)

    assert workload.status_code == pod.status_code == route.status_code == 404
    assert "may have finished" in workload.text
    assert "aistack.io/queue" in pod.text
    assert "start from the overview" in route.text
