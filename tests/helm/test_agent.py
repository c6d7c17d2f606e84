"""The node agent's DaemonSet, its identity and its rights, as the chart renders them."""

from __future__ import annotations

import argparse

import pytest

from scheduler_service import cli
from scheduler_service.cli import _agent as agent_cli
from tests.helm._chart import NAMESPACE, RELEASE, Manifest, find, kinds, render, render_error

AGENT = f"{RELEASE}-agent"

# (apiGroup, resource) -> verbs the agent uses; the contract in docs/helm.md.
AGENT_RULES = {
    ("", "nodes"): {"get", "patch"},
    ("", "nodes/status"): {"patch"},
    ("", "pods"): {"list"},
}


def _daemonset(manifests: list[Manifest]) -> Manifest:
    return find(manifests, "DaemonSet", AGENT)


def _pod(manifests: list[Manifest]) -> Manifest:
    spec = _daemonset(manifests)["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def _container(manifests: list[Manifest]) -> Manifest:
    (only,) = _pod(manifests)["containers"]
    assert isinstance(only, dict)
    return only


def _grants(role: Manifest) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def test_the_daemonset_runs_on_gpu_nodes_with_the_host_pids_and_the_driver() -> None:
    manifests = render()

    pod = _pod(manifests)
    container = _container(manifests)

    assert pod["hostPID"] is True
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["serviceAccountName"] == AGENT
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
    # It sees every GPU through the runtime, and takes none from the pool.
    assert "nvidia.com/gpu" not in str(container["resources"])
    assert container["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}]
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True


def test_the_command_is_one_the_cli_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    command = _container(render())["command"]
    seen: list[argparse.Namespace] = []

    def record(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(agent_cli, "run_agent_command", record)
    monkeypatch.setenv("NODE_NAME", "gpu-node-1")  # what the downward API gives it

    assert command[0] == "aistack"
    assert cli.main(command[1:]) == 0
    (args,) = seen
    assert (args.node, args.interval_seconds, args.metrics_port) == ("gpu-node-1", 30.0, 9400)
    assert args.kubeconfig is None  # in a pod: the service account


def test_the_agents_pods_and_the_services_never_select_each_other() -> None:
    manifests = render()

    agent_labels = _daemonset(manifests)["spec"]["template"]["metadata"]["labels"]
    agent_selector = _daemonset(manifests)["spec"]["selector"]["matchLabels"]
    deployment = find(manifests, "Deployment")
    service_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service_selector = deployment["spec"]["selector"]["matchLabels"]

    assert agent_selector.items() <= agent_labels.items()
    assert not service_selector.items() <= agent_labels.items()
    assert not agent_selector.items() <= service_labels.items()
    for service in kinds(manifests, "Service"):
        assert not service["spec"]["selector"].items() <= agent_labels.items()


def test_values_reach_the_daemonset() -> None:
    manifests = render(
        set_json=[
            "agent.intervalSeconds=2.5",
            "agent.metricsPort=9500",
            # Helm merges maps with the defaults; null removes a default key.
            'agent.nodeSelector={"gpu": "yes", "nvidia.com/gpu.present": null}',
            "agent.tolerations=[]",
            'agent.runtimeClassName=""',
            'agent.priorityClassName="system-node-critical"',
            'agent.resources={"requests": {"cpu": "10m"}}',
            'agent.securityContext={"privileged": true}',
            'agent.extraEnv=[{"name": "EXTRA", "value": "1"}]',
            'agent.podLabels={"team": "gpu"}',
            'agent.podAnnotations={"note": "x"}',
        ]
    )

    pod = _pod(manifests)
    container = _container(manifests)
    assert container["command"][:6] == [
        "aistack",
        "agent",
        "--interval-seconds",
        "2.5",
        "--metrics-port",
        "9500",
    ]
    assert container["ports"][0]["containerPort"] == 9500
    assert pod["nodeSelector"] == {"gpu": "yes"}
    assert "tolerations" not in pod
    assert "runtimeClassName" not in pod
    assert pod["priorityClassName"] == "system-node-critical"
    assert container["resources"] == {
        "requests": {"cpu": "10m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }
    assert container["securityContext"]["privileged"] is True
    assert {"name": "EXTRA", "value": "1"} in container["env"]
    template = _daemonset(manifests)["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "gpu"
    assert template["annotations"] == {"note": "x"}


def test_the_agent_gets_exactly_the_verbs_it_uses_and_nothing_of_the_services() -> None:
    manifests = render()

    role = find(manifests, "ClusterRole", AGENT)
    binding = find(manifests, "ClusterRoleBinding", AGENT)

    assert _grants(role) == AGENT_RULES
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": AGENT,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": AGENT, "namespace": NAMESPACE}
    ]
    assert find(manifests, "ServiceAccount", AGENT)["metadata"]["namespace"] == NAMESPACE
    # Only this binding names the agent's account; the service's roles go to the service's.
    bindings = kinds(manifests, "ClusterRoleBinding") + kinds(manifests, "RoleBinding")
    naming_agent = [
        b["metadata"]["name"] for b in bindings if any(s["name"] == AGENT for s in b["subjects"])
    ]
    assert naming_agent == [AGENT]


def test_disabled_the_agent_renders_nothing() -> None:
    manifests = render(set_json=["agent.enabled=false"])

    assert kinds(manifests, "DaemonSet") == []
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
        assert kinds(manifests, kind, AGENT) == []


def test_an_existing_agent_service_account_is_bound_and_not_created() -> None:
    manifests = render(set_json=['agent.serviceAccount={"create": false, "name": "gpu-agent"}'])

    assert kinds(manifests, "ServiceAccount", AGENT) == []
    assert _pod(manifests)["serviceAccountName"] == "gpu-agent"
    binding = find(manifests, "ClusterRoleBinding", AGENT)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "gpu-agent", "namespace": NAMESPACE}
    ]


def test_without_rbac_the_agent_gets_no_roles() -> None:
    manifests = render(set_json=["rbac.create=false"])

    assert kinds(manifests, "ClusterRole", AGENT) == []
    assert kinds(manifests, "DaemonSet", AGENT) != []


def test_a_long_full_name_still_gives_a_valid_agent_name() -> None:
    long_name = "a" * 63
    manifests = render(set_json=[f'fullnameOverride="{long_name}"'])

    (daemonset,) = kinds(manifests, "DaemonSet")

    assert daemonset["metadata"]["name"] == "a" * 57 + "-agent"


def test_with_the_service_monitor_the_agents_are_scraped_by_a_pod_monitor() -> None:
    manifests = render(
        set_json=['metrics={"serviceMonitor": {"enabled": true, "labels": {"release": "prom"}}}']
    )

    monitor = find(manifests, "PodMonitor", AGENT)
    pod_labels = _daemonset(manifests)["spec"]["template"]["metadata"]["labels"]

    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    assert kinds(render(), "PodMonitor") == []


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ('agent.enabled="yes"', "at '/agent/enabled': got string, want boolean"),
        ("agent.intervalSeconds=0", "at '/agent/intervalSeconds'"),
        ("agent.intervalSeconds=7200", "at '/agent/intervalSeconds': maximum"),
        ("agent.metricsPort=70000", "at '/agent/metricsPort': maximum"),
        ("agent.metricsPort=9400.5", "at '/agent/metricsPort': got number, want integer"),
        ('agent.runtimeClassName="NVIDIA_runtime"', "at '/agent/runtimeClassName'"),
        ("agent.hostNetwork=true", "additional properties 'hostNetwork' not allowed"),
        ('agent.nodeSelector={"gpu": true}', "at '/agent/nodeSelector/gpu'"),
        ('agent.securityContext={"runAsUser": -1}', "at '/agent/securityContext/runAsUser'"),
    ],
)
def test_schema_refuses_bad_agent_values(assignment: str, message: str) -> None:
    assert message in render_error(set_json=[assignment])


def test_an_agent_service_account_that_is_not_created_needs_a_name() -> None:
    error = render_error(set_json=['agent.serviceAccount={"create": false, "name": ""}'])

    assert "agent.serviceAccount.name is required" in error


def test_where_a_pool_uses_mps_the_agent_keeps_daemons_with_the_services_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifests = render(
        set_json=[
            'config.gpu_sharing={"default": "hami-core", "pools": {"H100": "mps"}, '
            '"mps_root": "/run/mps"}',
        ]
    )
    container = _container(manifests)
    seen: list[argparse.Namespace] = []

    def record(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(agent_cli, "run_agent_command", record)
    monkeypatch.setenv("NODE_NAME", "gpu-node-1")

    assert cli.main(container["command"][1:]) == 0
    (args,) = seen
    assert (args.gpu_sharing, args.gpu_sharing_pool) == ("hami-core", [("H100", "mps")])
    assert (str(args.mps_root), args.pool_label) == ("/run/mps", "aistack.io/pool")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert container["securityContext"]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["SETUID", "SETGID"],
    }
    assert container["volumeMounts"][1:] == [
        {"name": "mps", "mountPath": "/run/mps"},
        {"name": "mps-shm", "mountPath": "/dev/shm"},
    ]
    assert _pod(manifests)["volumes"][1:] == [
        {"name": "mps", "hostPath": {"path": "/run/mps", "type": "DirectoryOrCreate"}},
        {"name": "mps-shm", "hostPath": {"path": "/run/mps/shm", "type": "DirectoryOrCreate"}},
    ]
    # The service reads the same values from its config.
    config = find(manifests, "ConfigMap", RELEASE)["data"]["config.yaml"]
    assert "gpu_sharing:" in config
    assert "H100: mps" in config


def test_a_bad_mechanism_or_a_long_mps_root_is_refused_by_the_chart() -> None:
    assert "gpu_sharing" in render_error(set_json=['config.gpu_sharing.default="mig"'])
    long_root = "/" + "r" * 60
    assert "mps_root" in render_error(set_json=[f'config.gpu_sharing.mps_root="{long_root}"'])
