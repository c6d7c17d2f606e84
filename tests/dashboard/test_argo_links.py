"""The chart's Argo UI links land on dashboard pages (tests/helm checks the chart renders them)."""

from __future__ import annotations

import yaml

from tests.api.support import ADMIN_AUTH, TestClient
from tests.helm._chart import TESTDATA, find, render

BASE = "https://aistack.example.com"
# What Argo puts for ${metadata.namespace} and ${metadata.name}: the workflow's, or the pod's.
SUBSTITUTED = {"workflow": ("team-a", "ddp-x7k2p"), "pod": ("team-a", "train-1")}


def test_every_link_of_the_chart_opens_a_page_of_the_dashboard(client: TestClient) -> None:
    configmap = find(
        render(TESTDATA / "argo-ui-links.values.yaml"), "ConfigMap", "aistack-argo-ui-links"
    )
    links = yaml.safe_load(configmap["data"]["links"])

    assert {link["scope"] for link in links} == {"workflow", "pod", "workflow-list"}
    for link in links:
        namespace, name = SUBSTITUTED.get(link["scope"], ("", ""))
        url = (
            link["url"]
            .replace("${metadata.namespace}", namespace)
            .replace("${metadata.name}", name)
        )
        assert url.startswith(BASE + "/ui/")
        response = client.get(url.removeprefix(BASE), headers=ADMIN_AUTH)
        assert response.status_code == 200, (link, response.text[:300])
        assert 'id="live"' in response.text
