"""The Argo UI links: off by default; when on, an entry Argo reads and the patch installing it.

The links land on the dashboard's pages (tests/dashboard checks that those routes exist).
"""

from __future__ import annotations

import json

import yaml

from tests.helm._chart import TESTDATA, find, kinds, render, render_error

LINKS = TESTDATA / "argo-ui-links.values.yaml"


def test_no_links_unless_asked() -> None:
    assert kinds(render(), "ConfigMap", "aistack-argo-ui-links") == []


BASE = "https://aistack.example.com/ui"


def test_the_links_lead_to_the_dashboards_pages_of_a_workflow_a_pod_and_the_queues() -> None:
    configmap = find(render(LINKS), "ConfigMap", "aistack-argo-ui-links")
    links = yaml.safe_load(configmap["data"]["links"])
    assert links == [
        {
            "name": "AI-Stack scheduler",
            "scope": "workflow",
            "url": BASE + "/workflows/${metadata.namespace}/${metadata.name}",
        },
        {
            "name": "AI-Stack scheduler",
            "scope": "pod",
            "url": BASE + "/pods/${metadata.namespace}/${metadata.name}",
        },
        {"name": "GPU queues", "scope": "workflow-list", "url": BASE + "/queues"},
    ]


def test_the_workflow_list_gets_a_queue_column() -> None:
    configmap = find(render(LINKS), "ConfigMap", "aistack-argo-ui-links")
    assert yaml.safe_load(configmap["data"]["columns"]) == [
        {"name": "Queue", "type": "label", "key": "aistack.io/queue"}
    ]


def test_the_patch_sets_exactly_those_entries_in_argos_configmap() -> None:
    data = find(render(LINKS), "ConfigMap", "aistack-argo-ui-links")["data"]
    patch = json.loads(data["patch"])
    assert patch == {"data": {"links": data["links"], "columns": data["columns"]}}


def test_links_without_an_address_are_refused_saying_what_to_set() -> None:
    error = render_error(set_json=["argoUILinks.enabled=true"])
    assert "argoUILinks.baseUrl must be set" in error


def test_an_address_that_is_not_http_is_refused() -> None:
    error = render_error(set_json=['argoUILinks.baseUrl="ftp://aistack"'])
    assert "/argoUILinks/baseUrl" in error
