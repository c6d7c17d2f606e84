"""The accounting store's volume and secret in the chart (docs/usage-report.md)."""

from __future__ import annotations

from typing import Any

from tests.helm._chart import find, kinds, render, render_error


def pod_spec(*set_json: str) -> dict[str, Any]:
    deployment = find(render(set_json=set_json), "Deployment")
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def scheduler(spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in spec["containers"] if c["name"] == "scheduler"]
    found: dict[str, Any] = container
    return found


def test_by_default_the_sqlite_file_lives_in_an_emptydir_at_the_data_dir() -> None:
    spec = pod_spec()
    mounts = {m["name"]: m["mountPath"] for m in scheduler(spec)["volumeMounts"]}
    assert mounts["accounting"] == "/var/lib/aistack"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["accounting"]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert kinds(render(), "PersistentVolumeClaim") == []
    env = {e["name"] for e in scheduler(spec)["env"]}
    assert "AISTACK_ACCOUNTING_URL" not in env


def test_a_persistent_volume_claim_keeps_the_records_across_pods() -> None:
    values = (
        'accounting={"volume": "persistentVolumeClaim", "existingSecret": "", '
        '"existingSecretKey": "url", "persistentVolumeClaim": {"size": "5Gi", '
        '"storageClassName": "fast"}, "emptyDirSizeLimit": "1Gi"}',
        "replicas=1",
    )
    manifests = render(set_json=values)
    claim = find(manifests, "PersistentVolumeClaim", "aistack-accounting")
    assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "fast",
        "resources": {"requests": {"storage": "5Gi"}},
    }
    volumes = {v["name"]: v for v in pod_spec(*values)["volumes"]}
    assert volumes["accounting"] == {
        "name": "accounting",
        "persistentVolumeClaim": {"claimName": "aistack-accounting"},
    }


def test_one_sqlite_file_cannot_serve_two_replicas() -> None:
    error = render_error(set_json=['accounting.volume="persistentVolumeClaim"'])
    assert "keeps one SQLite file, which one pod on one node can write, but replicas is 2" in error
    assert "PostgreSQL (accounting.existingSecret)" in error


def test_a_postgres_url_comes_from_a_secret() -> None:
    spec = pod_spec('accounting.existingSecret="aistack-db"', 'accounting.existingSecretKey="dsn"')
    (variable,) = [e for e in scheduler(spec)["env"] if e["name"] == "AISTACK_ACCOUNTING_URL"]
    assert variable["valueFrom"] == {"secretKeyRef": {"name": "aistack-db", "key": "dsn"}}


def test_the_services_accounting_settings_are_checked_by_the_schema() -> None:
    error = render_error(set_json=['config.accounting={"url": "mysql://db/x"}'])
    assert "accounting" in error
