"""The scheduler service as the cluster sees it: `aistack serve` in a process.

Its webhooks (the chart's own configurations, pointed at the process) are registered with the
real API server and its Queue CRD is installed from the Helm chart.
`RunningService` can be stopped and started again (restart tests) and is shared by the session;
tests isolate themselves with their own namespace, nodes (a pool of their own) and queues.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import secrets
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import (
    AdmissionregistrationV1Api,
    ApiClient,
    ApiextensionsV1Api,
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
)
from kubernetes.client.exceptions import ApiException

from scheduler_service import pod_contract as keys
from tests.integration.cluster import (
    BIN_DIR,
    SERVICE_NAMESPACE,
    SERVICE_USER,
    ManagedProcess,
    TestCluster,
    free_port,
    issue_cert,
    wait_for,
)

__all__ = [
    "CHART_CRDS",
    "RunningService",
    "make_queue",
    "managed_pod",
    "pod_env",
]

CHART = Path(__file__).resolve().parents[2] / "helm" / "aistack"
CHART_CRDS = CHART / "crds"
_WEBHOOK_NAME = "aistack-test"


RESERVING: Mapping[str, Any] = {
    "gpu_reservations": {
        "enabled": True,
        "image": "registry.invalid/aistack:test",
        # kwok runs no container: the tests play the reservation pods' containers themselves.
        "service_account": "default",
        "linger_seconds": 0,
    }
}
"""Settings of a service with GPU reservations, as the chart sets it up."""


class RunningService:
    """`aistack serve` against the test cluster, with webhooks pointing at it."""

    def __init__(
        self,
        cluster: TestCluster,
        admin: ApiClient,
        *,
        name: str = "aistack",
        leader_election: bool = False,
        webhooks: bool = True,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """Install the CRD (and unless told not to, the webhooks); `start()` runs the process.

        With `leader_election`, replicas of the same lease take turns; `name` is the replica's
        identity (POD_NAME) and the name of its files. `config` adds top-level settings to the
        service's config file.
        """
        self.cluster = cluster
        self.admin = admin
        self.name = name
        self.workdir = cluster.workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.metrics_port = free_port()
        self.webhook_port = free_port()
        self.cert = issue_cert(self.cluster.ca, hosts=["127.0.0.1", "localhost"]).write(
            self.workdir, "serving"
        )
        # Every test service signs its allocations, as the chart's does; replicas share the key
        # (the chart's Secret), so one per cluster.
        key_path = cluster.workdir / "allocation.key"
        if not key_path.exists():
            key_path.write_text(secrets.token_hex(32))
        self.config_path = self.workdir / "config.yaml"
        self.config_path.write_text(
            yaml.safe_dump(
                {
                    "cycle_interval_seconds": 0.2,
                    "eviction_grace_seconds": 0,
                    "leader_election": {
                        "enabled": leader_election,
                        # As the chart sets it: the release's full name, the only lease its
                        # Role lets the service write.
                        "lease_name": "aistack",
                        "lease_duration_seconds": 4,
                        "renew_deadline_seconds": 3,
                        "retry_period_seconds": 1,
                    },
                    "allocation_key_file": str(key_path),
                    **(config or {}),
                }
            )
        )
        # The service runs as the chart's ServiceAccount with exactly the chart's RBAC, so these
        # tests also prove that the chart grants enough (and a missing verb fails them).
        _apply_chart_rbac(admin)
        self.kubeconfig = cluster.write_kubeconfig(self.workdir / "kubeconfig", SERVICE_USER)
        self.process: ManagedProcess | None = None
        _install_crds(ApiextensionsV1Api(admin))
        if webhooks:
            self._register_webhooks()

    @property
    def url(self) -> str:
        """The HTTPS base URL of the API."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        """The HTTPS base URL of the webhooks (client certificates of the API server only)."""
        return f"https://127.0.0.1:{self.webhook_port}"

    def start(self) -> None:
        """Start the process and wait until it has listed the cluster."""
        if self.process is not None and self.process.running:
            return
        argv = [
            str(Path(sys.executable).parent / "aistack"),
            "serve",
            f"--kubeconfig={self.kubeconfig}",
            f"--config={self.config_path}",
            f"--tls-cert={self.cert.cert}",
            f"--tls-key={self.cert.key}",
            f"--port={self.port}",
            f"--metrics-port={self.metrics_port}",
            # The webhooks take only the API server's client certificate, as a cluster with
            # the chart's webhook.clientCA set up has it (docs/security.md).
            f"--webhook-port={self.webhook_port}",
            f"--webhook-client-ca={self.cluster.webhook_client_ca_path}",
            "--host=127.0.0.1",
        ]
        env = {"POD_NAMESPACE": SERVICE_NAMESPACE, "POD_NAME": self.name}
        log = self.cluster.log_dir / f"{self.name}.log"
        self.process = ManagedProcess(self.name, argv, log, env)
        self.process.wait_ready(lambda: self._ok(f"http://127.0.0.1:{self.metrics_port}/readyz"))
        self.process.wait_ready(lambda: self._ok(f"{self.url}/docs", tls=True))

    def log_tail(self) -> str:
        """The last lines of the service's log (its latest process)."""
        return self.process.log_tail() if self.process is not None else "(never started)"

    def kill(self) -> None:
        """SIGKILL the process, as a crash would; the webhooks stay registered."""
        if self.process is not None:
            self.process.kill()

    def stop(self) -> None:
        """Stop the process (SIGTERM); the webhooks stay registered, as in a real outage."""
        if self.process is not None:
            self.process.stop()

    def remove(self) -> None:
        """Stop the process and remove its webhook configurations: the cluster is as before.

        Other test modules share the cluster; with the webhooks left behind (failurePolicy
        Fail), their GPU pods would be refused by a service that no longer runs.
        """
        self.stop()
        api = AdmissionregistrationV1Api(self.admin)
        for delete in (
            api.delete_mutating_webhook_configuration,
            api.delete_validating_webhook_configuration,
        ):
            with contextlib.suppress(ApiException):  # 404: never registered (webhooks=False)
                delete(_WEBHOOK_NAME)

    def get(self, path: str, token: str | None) -> tuple[int, Any]:
        """GET an API path with a bearer token; (status, parsed JSON body)."""
        request = urllib.request.Request(self.url + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        context = ssl.create_default_context(cafile=str(self.cluster.ca_path))
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                return response.status, yaml.safe_load(response.read())
        except urllib.error.HTTPError as error:
            return error.code, yaml.safe_load(error.read())

    def is_leader(self) -> bool:
        """Whether the replica says it leads (its `aistack_leader` metric)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return b"aistack_leader 1.0" in response.read()

    def _ok(self, url: str, *, tls: bool = False) -> bool:
        context = ssl.create_default_context(cafile=str(self.cluster.ca_path)) if tls else None
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _register_webhooks(self) -> None:
        """Register the chart's webhook configurations, pointed at this process.

        Taken from `helm template`, not written again here, so that these tests run the
        chart's own selection (object and namespace selectors, the CEL match conditions) on a
        real API server; only the address, the CA and the timeout differ.
        """
        api = AdmissionregistrationV1Api(self.admin)
        ca_bundle = base64.b64encode(self.cluster.ca.cert_pem).decode()
        registrations: dict[str, tuple[Callable[[Any], object], Callable[[str], object]]] = {
            "MutatingWebhookConfiguration": (
                api.create_mutating_webhook_configuration,
                api.delete_mutating_webhook_configuration,
            ),
            "ValidatingWebhookConfiguration": (
                api.create_validating_webhook_configuration,
                api.delete_validating_webhook_configuration,
            ),
        }
        for kind, (create, delete) in registrations.items():
            configuration = _chart_webhooks(kind)
            configuration["metadata"] = {"name": _WEBHOOK_NAME}
            for hook in configuration["webhooks"]:
                path = hook["clientConfig"]["service"]["path"]
                hook["clientConfig"] = {"url": f"{self.webhook_url}{path}", "caBundle": ca_bundle}
                hook["timeoutSeconds"] = 5
            with contextlib.suppress(ApiException):
                delete(_WEBHOOK_NAME)
            create(configuration)
        _apply_chart_pod_policy(api)


@functools.cache
def _chart_manifests() -> tuple[dict[str, Any], ...]:
    """The chart's objects as `helm template` renders them with its default values."""
    rendered = subprocess.run(
        [
            str(BIN_DIR / "helm"),
            "template",
            "aistack",
            str(CHART),
            f"--namespace={SERVICE_NAMESPACE}",
            "--kube-version=1.33.0",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return tuple(document for document in yaml.safe_load_all(rendered) if document)


def _apply_chart_pod_policy(api: AdmissionregistrationV1Api) -> None:
    """The chart's ValidatingAdmissionPolicy on managed pods, and its binding, as rendered.

    It needs no running service, so it stays for the whole session once applied.
    """
    creators: dict[str, Callable[[Any], object]] = {
        "ValidatingAdmissionPolicy": api.create_validating_admission_policy,
        "ValidatingAdmissionPolicyBinding": api.create_validating_admission_policy_binding,
    }
    for kind, create in creators.items():
        (found,) = [m for m in _chart_manifests() if m["kind"] == kind]
        with contextlib.suppress(ApiException):  # 409: applied by an earlier module
            create(copy.deepcopy(found))


def _chart_webhooks(kind: str) -> dict[str, Any]:
    """A fresh copy of the chart's (Mutating|Validating)WebhookConfiguration."""
    (found,) = [m for m in _chart_manifests() if m["kind"] == kind]
    return copy.deepcopy(found)


def _apply_chart_rbac(admin: ApiClient) -> None:
    """Create the service's ClusterRoles and bindings exactly as `helm template` renders them."""
    rbac = RbacAuthorizationV1Api(admin)
    with contextlib.suppress(ApiException):  # 409: a previous module created it
        CoreV1Api(admin).create_namespace({"metadata": {"name": SERVICE_NAMESPACE}})  # type: ignore[arg-type]
    create: dict[str, Callable[[Any], object]] = {
        "ClusterRole": rbac.create_cluster_role,
        "ClusterRoleBinding": rbac.create_cluster_role_binding,
        # The leader-election Role lives in the release namespace.
        "Role": lambda body: rbac.create_namespaced_role(SERVICE_NAMESPACE, body),
        "RoleBinding": lambda body: rbac.create_namespaced_role_binding(SERVICE_NAMESPACE, body),
    }
    for document in _chart_manifests():
        if document["kind"] in create:
            with contextlib.suppress(ApiException):  # 409: a previous module applied it
                create[document["kind"]](document)


def _install_crds(api: ApiextensionsV1Api) -> None:
    for path in sorted(CHART_CRDS.glob("*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        with contextlib.suppress(ApiException):
            api.create_custom_resource_definition(manifest)
        name: str = manifest["metadata"]["name"]

        def established(name: str = name) -> bool:
            crd = api.read_custom_resource_definition_status(name)
            conditions = crd.status.conditions if crd.status else None
            return any(c.type == "Established" and c.status == "True" for c in conditions or [])

        wait_for(f"CRD {name} to be established", established)


def make_queue(
    admin: ApiClient,
    pools: Mapping[str, float | tuple[float, float]],
    *,
    name: str | None = None,
    parent: str | None = None,
    priority: int = 0,
    default_for: Sequence[str] = (),
) -> str:
    """Create a Queue with quota (or (quota, limit)) per pool; returns its (unique) name.

    `default_for` names the namespaces whose GPU pods without a queue label it takes.
    """
    name = name or f"q-{secrets.token_hex(3)}"
    entries = []
    for pool, amount in pools.items():
        quota, limit = amount if isinstance(amount, tuple) else (amount, None)
        entry: dict[str, Any] = {"pool": pool, "quota": quota}
        if limit is not None:
            entry["limit"] = limit
        entries.append(entry)
    spec: dict[str, Any] = {"pools": entries, "priority": priority}
    if parent is not None:
        spec["parent"] = parent
    if default_for:
        spec["defaultFor"] = {"namespaces": list(default_for)}
    body = {
        "apiVersion": f"{keys.GROUP}/{keys.QUEUE_VERSION}",
        "kind": "Queue",
        "metadata": {"name": name},
        "spec": spec,
    }
    CustomObjectsApi(admin).create_cluster_custom_object(
        keys.GROUP, keys.QUEUE_VERSION, keys.QUEUE_PLURAL, body
    )
    return name


def managed_pod(
    name: str,
    queue: str,
    *,
    gpus: int = 0,
    slice_: tuple[int, int] | None = None,
    gang: tuple[str, int] | None = None,
    run_for: str | None = None,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A pod that asks the scheduler for GPUs (whole, or a (memory MiB, compute %) slice)."""
    notes = dict(annotations or {})
    pod_labels = {keys.QUEUE_LABEL: queue, **(labels or {})}
    if slice_ is not None:
        notes[keys.GPU_MEMORY_ANNOTATION] = str(slice_[0])
        notes[keys.GPU_COMPUTE_ANNOTATION] = str(slice_[1])
    if gang is not None:
        pod_labels[keys.GANG_LABEL] = gang[0]
        notes[keys.GANG_SIZE_ANNOTATION] = str(gang[1])
    if run_for is not None:
        notes["aistack.io/test-run-for"] = run_for
    limits = {keys.GPU_RESOURCE: str(gpus)} if gpus else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": pod_labels, "annotations": notes},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/aistack/train:test",
                    "command": ["python", "train.py"],
                    "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}],
                    "resources": {
                        "requests": {"cpu": "1", "memory": "1Gi", **limits},
                        "limits": limits,
                    },
                }
            ],
        },
    }


def pod_env(pod: Mapping[str, Any], container: str = "main") -> dict[str, str]:
    """The env a container of `pod` gets when it starts.

    Resolves the downward API's annotation references as the kubelet does (kwok runs no
    containers, so the test does it).
    """
    annotations = pod["metadata"].get("annotations") or {}
    (spec,) = [c for c in pod["spec"]["containers"] if c["name"] == container]
    env: dict[str, str] = {}
    for variable in spec.get("env") or []:
        field_path = ((variable.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field_path is not None:
            key = field_path.removeprefix("metadata.annotations['").removesuffix("']")
            env[variable["name"]] = annotations.get(key, "")
        else:
            env[variable["name"]] = variable.get("value", "")
    return env
