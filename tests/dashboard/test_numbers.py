"""The numbers on the pages are the API's and the metrics' numbers, for the same viewer."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from scheduler_service.api import ClusterStatus, Metrics
from scheduler_service.core import ordinal
from tests.api.support import ADMIN_AUTH, ALICE_AUTH, TestClient
from tests.dashboard.html import Element, parse
from tests.dashboard.test_pages import rows


def api(client: TestClient, path: str, headers: dict[str, str] = ADMIN_AUTH) -> Any:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def page(client: TestClient, path: str, headers: dict[str, str] = ADMIN_AUTH) -> Element:
    return parse(client.get(path, headers=headers).text)


def number(text: str) -> float:
    return float(text.split(maxsplit=1)[0])


def test_queue_numbers_are_the_apis(client: TestClient) -> None:
    document = page(client, "/ui/queues")

    for queue in api(client, "/api/v1/queues"):
        for entry in queue["pools"]:
            row = document.one("tr", data_queue=queue["name"], data_pool=entry["pool"])
            for field in ("quota", "fair_share", "allocated"):
                shown = number(row.one(data_field=field).text)
                assert shown == round(entry[f"{field}_gpus"], 3), (queue["name"], field)
        counts = queue["workloads"]
        (cell,) = [
            c
            for c in document.find_all(data_field="workloads")
            if c in _row_cells(document, queue["name"])
        ]
        assert cell.text.startswith(f"{counts['pending']} pending, {counts['running']} running")


def _row_cells(document: Element, queue: str) -> list[Element]:
    return [cell for row in document.find_all("tr", data_queue=queue) for cell in row.iter()]


def test_pool_allocation_is_the_metrics(client: TestClient, cluster_status: ClusterStatus) -> None:
    exposition = Metrics(lambda: cluster_status).exposition().decode()
    allocated = {
        sample.labels["pool"]: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "aistack_pool_allocated_gpus"
    }
    document = page(client, "/ui/")

    for pool, value in allocated.items():
        assert number(document.one("tr", data_pool=pool).one(data_field="allocated").text) == value


def test_free_gpus_of_every_node_are_the_apis(client: TestClient) -> None:
    document = page(client, "/ui/nodes")

    for node in api(client, "/api/v1/nodes"):
        section = document.one("section", data_node=node["name"])
        assert int(section.one(data_field="free_gpus").text) == node["free_gpus"]
        for gpu in node["gpus"]:
            pods = [
                h.attrs["data-pod"]
                for h in section.one(data_gpu=gpu["uuid"]).find_all("li", class_="holder")
            ]
            expected = ([gpu["whole"]["pod"]] if gpu["whole"] else []) + [
                s["pod"] for s in gpu["slices"]
            ]
            assert pods == expected


def test_the_workload_list_is_the_apis_for_each_viewer(client: TestClient) -> None:
    for headers in (ADMIN_AUTH, ALICE_AUTH):
        listed = api(client, "/api/v1/workloads", headers)
        document = page(client, "/ui/workloads", headers)
        assert rows(document) == [w["name"] for w in listed]
        states = [r.attrs["data-state"] for r in document.find_all("tr") if "data-state" in r.attrs]
        assert states == [w["state"] for w in listed]


def test_a_waiting_workloads_place_and_reason_are_the_apis(client: TestClient) -> None:
    explained = api(client, "/api/v1/explain/team-b/later")
    document = page(client, "/ui/pods/team-b/later")

    assert document.one(data_field="summary").text == explained["summary"]
    assert document.one(data_field="reason-code").text == explained["workload"]["reason"]["code"]
    facts = {
        dd.attrs["data-fact"]: dd.text for dd in document.find_all("dd") if "data-fact" in dd.attrs
    }
    position, waiting = explained["queue_position"], explained["queue_pending"]
    assert facts["Place in line"].startswith(f"{ordinal(position)} of {waiting} waiting")
