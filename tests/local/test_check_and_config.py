"""What a local run refuses before it starts, and the runner's settings file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aistack_flows.local import ConfigError, UnsupportedError, check, load_config
from aistack_flows.local._config import default_queues
from scheduler_service.core import PoolQuota

Json = dict[str, Any]


def workflow(*templates: Json, **spec: Any) -> Json:
    return {
        "kind": "Workflow",
        "metadata": {"generateName": "w-"},
        "spec": {"entrypoint": "main", "templates": list(templates), **spec},
    }


def main(*tasks: Json) -> Json:
    return {"name": "main", "dag": {"tasks": list(tasks)}}


def task(name: str, **fields: Any) -> Json:
    return {"name": name, "template": name, **fields}


def step(name: str, **container: Any) -> Json:
    return {"name": name, "container": {"image": "img", "command": ["run"], **container}}


def problems(manifest: Json) -> list[str]:
    with pytest.raises(UnsupportedError) as refused:
        check(manifest)
    return refused.value.problems


def test_a_plain_dag_of_containers_passes_with_a_warning_about_the_image() -> None:
    support = check(workflow(main(task("a")), step("a")))
    assert support.warnings == (
        "template a: image img is not used; the step runs as run on this machine",
    )


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ({"name": "a", "resource": {"action": "create"}}, "a resource template creates"),
        ({"name": "a", "suspend": {}}, "a suspend template waits"),
        ({**step("a"), "sidecars": []}, "template a: sidecars is not supported locally"),
        ({**step("a"), "initContainers": []}, "template a: initContainers is not supported"),
        (
            step("a", env=[{"name": "K", "valueFrom": {"secretKeyRef": {}}}]),
            "env K reads valueFrom",
        ),
        (step("a", envFrom=[{}]), "container field envFrom is not supported locally"),
        ({**step("a"), "outputs": {"artifacts": [{"name": "m", "s3": {}}]}}, "uses s3"),
        ({**step("a"), "podSpecPatch": '{"nodeName": "x"}'}, "podSpecPatch sets nodeName"),
        ({**step("a"), "volumes": [{"name": "v", "secret": {}}]}, "secret volumes exist only"),
        ({"name": "a", "container": {"image": "img"}}, "the container has no command"),
    ],
)
def test_what_one_machine_cannot_do_is_refused_by_name(template: Json, expected: str) -> None:
    found = problems(workflow(main(task("a")), template))
    assert any(expected in p for p in found), found


def test_every_problem_is_listed_at_once_and_only_reachable_templates_count() -> None:
    manifest = workflow(
        main(task("a"), {"name": "b", "templateRef": {"name": "lib", "template": "x"}}),
        {"name": "a", "resource": {}},
        {"name": "unused", "suspend": {}},
        synchronization={},
    )
    found = problems(manifest)
    assert len(found) == 3, found
    assert any("templateRef lib/x lives on the cluster" in p for p in found)
    assert any("spec.synchronization" in p for p in found)
    assert not any("unused" in p for p in found)


def test_cluster_only_fields_are_accepted() -> None:
    check(
        workflow(
            main(task("a")),
            {**step("a"), "nodeSelector": {"x": "y"}, "tolerations": []},
            serviceAccountName="runner",
            podGC={"strategy": "OnPodSuccess"},
        )
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return path


def test_settings_in_short_form_and_as_queue_objects(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "pool: h100\nstopGraceSeconds: 5\nqueues:\n"
            "- {name: a, quota: 2, limit: 3}\n"
            "- apiVersion: aistack.io/v1alpha1\n  kind: Queue\n  metadata: {name: b}\n"
            "  spec: {pools: [{pool: h100, quota: 1}], priority: 4}\n",
        )
    )
    assert config.stop_grace_seconds == 5
    queues = config.resolve_queues("h100")
    assert queues is not None
    a, b = queues
    assert a.quotas == (PoolQuota(pool="h100", quota=2, limit=3),)
    assert (b.name, b.priority, b.quotas[0].quota) == ("b", 4, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpus: 4\n", "unknown setting 'gpus'"),
        ("stopGraceSeconds: -1\n", "stopGraceSeconds must be 0 to 3600"),
        ("queues: [{name: a, quota: lots}]\n", "quota must be a number"),
        ("queues: [{name: a, quotas: 2}]\n", "unknown field 'quotas'"),
        ("queues: [{name: a}, {name: a}]\n", "queue a is defined twice"),
        ("queues: {a: 1}\n", "queues must be a list"),
        ("- 1\n", "must be a mapping of settings"),
        (": :\n", "not YAML"),
    ],
)
def test_bad_settings_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, text))


def test_without_settings_the_queues_of_the_runs_share_the_machine_equally() -> None:
    queues = default_queues(["b", "a", "b"], "h100", 4)
    assert [(q.name, q.quotas[0].quota) for q in queues] == [("a", 2.0), ("b", 2.0)]
