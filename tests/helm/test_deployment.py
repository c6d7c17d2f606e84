"""The Deployment runs the service as its interface says, and safely; the objects around it."""

from __future__ import annotations

import base64
import posixpath
from pathlib import Path

import pytest
import yaml

from tests.helm._chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    TESTDATA,
    Manifest,
    config_of,
    container,
    find,
    kinds,
    render,
    sha256,
)

COMMAND = [
    "aistack",
    "serve",
    "--config",
    "/etc/aistack/config.yaml",
    "--tls-cert",
    "/etc/aistack/tls/tls.crt",
    "--tls-key",
    "/etc/aistack/tls/tls.key",
    "--port",
    "8443",
    "--metrics-port",
    "9090",
]

DEFAULT_CONFIG = {
    "pool_label": "aistack.io/pool",
    "allocation_key_file": "/etc/aistack/allocation.key",
    "cycle_interval_seconds": 1,
    "eviction_grace_seconds": 30,
    "gang_assembly_timeout_seconds": 600,
    "policy": {
        "reclaim_min_runtime_seconds": 0,
        "preempt_min_runtime_seconds": 0,
        "reserve_for_gangs": True,
    },
    "gpu_sharing": {"default": "none", "pools": {}, "mps_root": "/run/aistack/mps"},
    "gpu_reservations": {
        "enabled": True,
        "linger_seconds": 30,
        # The chart's own: the service's image, and an account that may patch its own pods.
        "image": "ghcr.io/aistack/aistack-flows:0.1.0",
        "service_account": f"{RELEASE}-gpu-reservation",
    },
    "leader_election": {
        "enabled": True,
        "lease_name": RELEASE,
        "lease_duration_seconds": 15,
        "renew_deadline_seconds": 10,
        "retry_period_seconds": 2,
    },
    "api": {"auth": True},
}


def _pod(manifests: list[Manifest]) -> Manifest:
    spec = find(manifests, "Deployment")["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def _checksum(manifests: list[Manifest]) -> str:
    annotations = find(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    return str(annotations["checksum/config"])


def _mounted_files(manifests: list[Manifest]) -> dict[str, tuple[str, str, str]]:
    """Path in the container -> (source kind, source name, key), for the projected volume."""
    pod = _pod(manifests)
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = {}
    for mount in container(manifests)["volumeMounts"]:
        volume = volumes[mount["name"]]
        for source in volume.get("projected", {}).get("sources", []):
            ((kind, ref),) = source.items()
            for item in ref["items"]:
                path = posixpath.join(mount["mountPath"], item["path"])
                files[path] = (kind, ref["name"], item["key"])
    return files


def test_the_container_runs_the_service_command() -> None:
    main = container(render())

    assert main["command"] + main.get("args", []) == COMMAND


def test_every_file_the_command_names_is_mounted_from_its_source() -> None:
    manifests = render()
    files = _mounted_files(manifests)

    assert files["/etc/aistack/config.yaml"] == ("configMap", RELEASE, "config.yaml")
    assert files["/etc/aistack/tls/tls.crt"] == ("secret", f"{RELEASE}-tls", "tls.crt")
    assert files["/etc/aistack/tls/tls.key"] == ("secret", f"{RELEASE}-tls", "tls.key")
    find(manifests, "ConfigMap", RELEASE)
    assert "config.yaml" in find(manifests, "ConfigMap", RELEASE)["data"]


def test_the_pod_knows_its_name_and_namespace() -> None:
    env = {e["name"]: e for e in container(render())["env"]}

    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_probes_and_ports() -> None:
    main = container(render())
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}

    assert ports == {"https": 8443, "metrics": 9090}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_image_defaults_to_the_chart_app_version() -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))["appVersion"]

    main = container(render())

    assert main["image"] == f"ghcr.io/aistack/aistack-flows:{app_version}"
    assert main["imagePullPolicy"] == "IfNotPresent"


def test_image_by_digest() -> None:
    main = container(render(TESTDATA / "existing-secret.values.yaml"))

    assert main["image"].endswith(":0.1.0@sha256:" + "0123456789abcdef" * 4)


def test_pod_runs_restricted() -> None:
    manifests = render()
    pod = _pod(manifests)
    security = container(manifests)["securityContext"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "hostNetwork" not in pod
    assert "privileged" not in security


def test_replicas_spread_over_nodes_with_a_disruption_budget() -> None:
    manifests = render()
    deployment = find(manifests, "Deployment")
    (spread,) = _pod(manifests)["topologySpreadConstraints"]
    pdb = find(manifests, "PodDisruptionBudget")

    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
    }
    assert _pod(manifests)["priorityClassName"] == "system-cluster-critical"


def test_one_replica_has_no_disruption_budget() -> None:
    manifests = render(TESTDATA / "single-replica.values.yaml")

    assert find(manifests, "Deployment")["spec"]["replicas"] == 1
    assert kinds(manifests, "PodDisruptionBudget") == []
    assert "priorityClassName" not in _pod(manifests)


def test_config_has_the_service_defaults_and_the_release_lease() -> None:
    assert config_of(render()) == DEFAULT_CONFIG


def test_config_values_reach_config_yaml() -> None:
    config = config_of(render(TESTDATA / "single-replica.values.yaml"))

    assert config["cycle_interval_seconds"] == 0.5
    assert config["leader_election"]["enabled"] is False
    assert config["api"] == {"auth": False}
    assert config["leader_election"]["lease_duration_seconds"] == 15


def test_lease_name_follows_the_full_name() -> None:
    config = config_of(render(set_json=['fullnameOverride="gpu-scheduler"']))

    assert config["leader_election"]["lease_name"] == "gpu-scheduler"


def test_checksum_is_the_config_text_hash() -> None:
    manifests = render()

    assert _checksum(manifests) == sha256(find(manifests, "ConfigMap")["data"]["config.yaml"])


@pytest.mark.parametrize(
    "change",
    [
        "config.cycle_interval_seconds=2.5",
        "config.policy.reserve_for_gangs=false",
        'config.pool_label="example.com/pool"',
    ],
)
def test_a_config_change_changes_the_checksum(change: str) -> None:
    assert _checksum(render(set_json=[change])) != _checksum(render())


def test_other_changes_keep_the_checksum() -> None:
    # The image is in the config (the GPU reservation pods run it); a new image restarts the
    # pods anyway.
    assert _checksum(render(set_json=["replicas=3"])) == _checksum(render())


def test_service_exposes_https_and_metrics() -> None:
    service = find(render(), "Service", RELEASE)

    ports = {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]}

    assert ports == {("https", 443, "https"), ("metrics", 9090, "metrics")}
    assert service["metadata"]["namespace"] == NAMESPACE


def test_service_monitor_only_when_enabled_and_scraping_metrics() -> None:
    manifests = render(TESTDATA / "cert-manager-servicemonitor.values.yaml")
    monitor = find(manifests, "ServiceMonitor")
    service = find(manifests, "Service", RELEASE)
    (endpoint,) = monitor["spec"]["endpoints"]

    assert kinds(render(), "ServiceMonitor") == []
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    service_ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert service_ports[endpoint["port"]] == 9090
    assert endpoint["path"] == "/metrics"


def test_every_namespaced_object_is_in_the_release_namespace() -> None:
    cluster_scoped = {
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
    }
    for values in sorted(Path(TESTDATA).glob("*.values.yaml")):
        for manifest in render(values):
            namespace = manifest["metadata"].get("namespace")
            if manifest["kind"] in cluster_scoped:
                assert namespace is None, manifest["metadata"]["name"]
            else:
                assert namespace == NAMESPACE, (manifest["kind"], manifest["metadata"]["name"])


def test_optional_service_settings_reach_config_yaml_only_when_set() -> None:
    config = config_of(render(set_json=["config.parallel_requests=64"]))

    assert config["parallel_requests"] == 64
    assert "messages_per_cycle" not in config
    assert "parallel_requests" not in config_of(render())


def test_the_allocation_key_is_the_chart_s_kept_secret_or_the_one_given() -> None:
    manifests = render()
    secret = find(manifests, "Secret", f"{RELEASE}-allocation-key")
    assert secret["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert len(base64.b64decode(secret["data"]["allocation.key"])) == 64
    sources = _pod(manifests)["volumes"][0]["projected"]["sources"]
    assert {
        "secret": {
            "name": f"{RELEASE}-allocation-key",
            "items": [{"key": "allocation.key", "path": "allocation.key"}],
        }
    } in sources

    given = render(set_json=['allocationKey={"existingSecret": "my-key"}'])
    assert kinds(given, "Secret", f"{RELEASE}-allocation-key") == []
    sources = _pod(given)["volumes"][0]["projected"]["sources"]
    assert any(s.get("secret", {}).get("name") == "my-key" for s in sources)
