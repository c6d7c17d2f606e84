"""A real Kubernetes control plane for integration tests, run as local processes.

`TestCluster` starts etcd, kube-apiserver, kube-scheduler and kwok from `bin/` (built by
`scripts/build-test-binaries`), and Argo's workflow-controller on request (`start_argo`). Nodes
are fake: a node annotated `kwok.x-k8s.io/node: fake` (see `gpu_node`) is kept Ready by kwok,
which also plays the kubelet for the pods bound to it (`testdata/kwok-stages.yaml`): they become
Running, and Succeeded after their `aistack.io/test-run-for` annotation's duration.

Who may do what: `admin` (group system:masters) may do anything; `alice`, `bob` and `carol`
(group `researchers`) authenticate with their own tokens and have no RBAC rights until a test
grants some. No controller manager runs: nothing garbage-collects, namespaces never finish
deleting and ServiceAccounts get no tokens, so tests use fresh names and clean up after
themselves.

Also reusable on their own: `make_ca`/`issue_cert` (e.g. a webhook's serving certificate),
`wait_for`, and the manifest builders `gpu_node` and `gpu_pod`.

Processes log to `<workdir>/logs/<name>.log`; a process that fails to start raises
`ProcessStartError` naming it, its command line and the tail of its log.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import functools
import ipaddress
import os
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes.client import (
    ApiClient,
    ApiextensionsV1Api,
    Configuration,
    CoreV1Api,
    CustomObjectsApi,
    V1ConfigMap,
    V1CustomResourceDefinition,
    V1Namespace,
    V1Node,
    V1ObjectMeta,
    V1Pod,
)
from kubernetes.client.exceptions import ApiException

__all__ = [
    "ADMIN",
    "ARGO_CRD_DIR",
    "BIN_DIR",
    "GPU_RESOURCE",
    "KWOK_NODE_ANNOTATION",
    "RESEARCHERS",
    "RESEARCHERS_GROUP",
    "RUN_FOR_ANNOTATION",
    "SERVICE_NAMESPACE",
    "SERVICE_USER",
    "TESTDATA_DIR",
    "ArgoController",
    "CertificateAuthority",
    "CertificateFiles",
    "GpuNodes",
    "KeyPair",
    "ManagedProcess",
    "MissingBinaryError",
    "ProcessStartError",
    "TestCluster",
    "WaitTimeoutError",
    "free_port",
    "gpu_node",
    "gpu_pod",
    "issue_cert",
    "make_ca",
    "node_is_ready",
    "wait_for",
    "wait_for_workflow_phase",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = REPO_ROOT / "bin"
ARGO_CRD_DIR = BIN_DIR / "argo-crds"
TESTDATA_DIR = Path(__file__).resolve().parent / "testdata"

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
"""kwok manages the nodes that carry this annotation with the value `fake`, and their pods."""
RUN_FOR_ANNOTATION = "aistack.io/test-run-for"
"""A Go duration ("2s", "1m30s"): how long a faked pod runs before it Succeeds."""
GPU_RESOURCE = "nvidia.com/gpu"

ADMIN = "admin"
RESEARCHERS = ("alice", "bob", "carol")
RESEARCHERS_GROUP = "researchers"
SERVICE_NAMESPACE = "aistack-system"
SERVICE_USER = f"system:serviceaccount:{SERVICE_NAMESPACE}:aistack"
"""The identity the Helm chart gives the scheduler service (its ServiceAccount), as a static
token: with no controller manager, ServiceAccounts get no tokens of their own. Its rights are
exactly what the chart's RBAC grants, once a test applies it."""

_T = TypeVar("_T")
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Model = TypeVar("_Model", V1Node, V1Pod, V1CustomResourceDefinition)

_START_TIMEOUT_SECONDS = 90.0
"""How long one process may take to become ready; kube-apiserver needs 5-20 s on 2 cores."""
_STOP_TIMEOUT_SECONDS = 10.0
_LOG_TAIL_LINES = 40
_SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
_KUBERNETES_SERVICE_IP = "10.0.0.1"


class MissingBinaryError(RuntimeError):
    """A program the cluster runs is not in bin/: run scripts/build-test-binaries."""


class ProcessStartError(RuntimeError):
    """A cluster process exited or did not become ready; the message carries its log's tail."""


class WaitTimeoutError(AssertionError):
    """`wait_for` gave up; an AssertionError, so pytest reports it as a test failure."""


# --- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateFiles:
    """Where `KeyPair.write` put the PEM files."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, with the CA certificate that signed it (all PEM)."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    def write(self, directory: Path, name: str) -> CertificateFiles:
        """Write `<name>.crt`, `<name>.key` and `<name>-ca.crt` into `directory` (created)."""
        directory.mkdir(parents=True, exist_ok=True)
        files = CertificateFiles(
            cert=directory / f"{name}.crt",
            key=directory / f"{name}.key",
            ca=directory / f"{name}-ca.crt",
        )
        files.cert.write_bytes(self.cert_pem)
        files.key.write_bytes(self.key_pem)
        files.key.chmod(0o600)
        files.ca.write_bytes(self.ca_pem)
        return files

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context serving this certificate (e.g. for a test's webhook server)."""
        with tempfile.TemporaryDirectory(prefix="aistack-cert-") as directory:
            files = self.write(Path(directory), "server")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(files.cert, files.key)
        return context


@dataclass(frozen=True)
class CertificateAuthority:
    """A throwaway CA (ECDSA P-256) that signs test certificates with `issue_cert`."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate as PEM, e.g. for a webhook's `caBundle` (base64 of this)."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def _private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    # Backdated a little: a peer whose clock is slightly behind still accepts the certificate.
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=7)


def make_ca(common_name: str = "aistack-test-ca") -> CertificateAuthority:
    """A new self-signed CA, valid for a week."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(certificate=certificate, private_key=key)


def issue_cert(
    ca: CertificateAuthority,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    *,
    common_name: str | None = None,
    organizations: Sequence[str] = (),
) -> KeyPair:
    """A certificate signed by `ca` for serving TLS on `hosts` (IP addresses or DNS names).

    It is also valid as a client certificate, with `common_name` (default: the first host) as
    the user name and `organizations` as groups, as Kubernetes reads them.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name or hosts[0])]
    subject += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    not_before, not_after = _validity()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    certificate = builder.sign(ca.private_key, hashes.SHA256())
    return KeyPair(
        cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
        key_pem=_private_key_pem(key),
        ca_pem=ca.cert_pem,
    )


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _binary(relative: str) -> Path:
    path = BIN_DIR / relative
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(
            f"{path} is missing: run scripts/build-test-binaries (it builds every program the "
            "integration tests run into bin/)"
        )
    return path


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask Linux to SIGKILL it when pytest dies, so a
    # killed test run (timeout, Ctrl-C twice) never leaves an apiserver or etcd behind.
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


class ManagedProcess:
    """One program of the cluster, its output going to `log_path`.

    Linux kills it when the thread that started it ends (`PR_SET_PDEATHSIG`), so start it from
    the main thread (fixtures do) or from a thread that outlives it.
    """

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        """Start `argv` now; `env` entries are added to this process's environment."""
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self._popen = subprocess.Popen(  # our own binaries, no shell
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                # Its own session: a Ctrl-C reaches pytest, whose teardown stops the process.
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (only calls prctl)
            )

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self._popen.pid}, log={str(self.log_path)!r})"

    @property
    def running(self) -> bool:
        """Whether the process has not exited."""
        return self._popen.poll() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the process's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def start_error(self, problem: str) -> ProcessStartError:
        """An error saying that this process failed to start, with its command and log tail."""
        return ProcessStartError(
            f"{self.name} failed to start: {problem}\n"
            f"command: {shlex.join(self.argv)}\n"
            f"log: {self.log_path} (last {_LOG_TAIL_LINES} lines):\n{self.log_tail()}"
        )

    def wait_ready(
        self, ready: Callable[[], bool], timeout: float = _START_TIMEOUT_SECONDS
    ) -> None:
        """Poll `ready` until it returns True.

        Raises `ProcessStartError` if the process exits or `timeout` seconds pass first.
        """
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise self.start_error(f"exited with status {self._popen.returncode}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise self.start_error(f"not ready after {timeout:.0f}s")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it; waits until it has exited."""
        if self.running:
            self._popen.kill()
            self._popen.wait()

    def stop(self, grace_seconds: float = _STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `grace_seconds`. Idempotent."""
        if not self.running:
            return
        self._popen.terminate()
        try:
            self._popen.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()


def _http_ok(url: str, *, context: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# --- waiting -----------------------------------------------------------------------------------


def _compact(value: object) -> object:
    # What a reader needs from an API object: no unset fields, no managedFields bookkeeping.
    if isinstance(value, Mapping):
        return {
            key: _compact(item)
            for key, item in value.items()
            if item not in (None, [], {}) and key not in ("managedFields", "managed_fields")
        }
    if isinstance(value, list):
        return [_compact(item) for item in value]
    return value


def _describe(value: object, limit: int = 3000) -> str:
    to_dict = getattr(value, "to_dict", None)
    text = repr(_compact(to_dict() if callable(to_dict) else value))
    return text if len(text) <= limit else text[:limit] + " ..."


def wait_for(
    what: str,
    probe: Callable[[], _T],
    until: Callable[[_T], bool] = bool,
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
) -> _T:
    """Call `probe` until `until(result)` holds and return that result.

    `what` completes the sentence "timed out waiting for ...". An `ApiException` from `probe`
    (e.g. a 404 for an object not created yet) counts as "not yet". On timeout it raises
    `WaitTimeoutError` with the last result (or exception) seen, so the failure explains itself.
    """
    deadline = time.monotonic() + timeout
    last: str = "nothing (probe never returned)"
    while True:
        try:
            result = probe()
        except ApiException as error:
            last = f"ApiException {error.status} {error.reason}: {error.body!s:.500}"
        else:
            if until(result):
                return result
            last = _describe(result)
        if time.monotonic() > deadline:
            raise WaitTimeoutError(
                f"timed out after {timeout:g}s waiting for {what}; last seen: {last}"
            )
        time.sleep(interval)


# --- manifests ---------------------------------------------------------------------------------


def _from_dict(model: type[_Model], manifest: Mapping[str, Any]) -> _Model:
    # The client's models validate a manifest with camelCase keys, as the API writes them.
    built = model.from_dict(dict(manifest))
    if built is None:
        raise ValueError(f"not a {model.__name__}: {manifest!r:.200}")
    return built


def gpu_node(
    name: str,
    gpus: int = 8,
    product: str = "NVIDIA-H100-80GB-HBM3",
    memory_mib: int = 81559,
    *,
    cpu: str = "128",
    memory: str = "1Ti",
    pods: int = 110,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    taints: Iterable[Mapping[str, str]] = (),
) -> V1Node:
    """A kwok-managed node with `gpus` GPUs, labelled as NVIDIA GPU feature discovery would.

    Its status carries capacity and allocatable (cpu, memory, pods, `nvidia.com/gpu`), which
    the API server keeps on create and kwok keeps while it marks the node Ready.
    `memory_mib` is per GPU (`nvidia.com/gpu.memory`); `labels`/`annotations` are added last.
    """
    resources = {"cpu": cpu, "memory": memory, "pods": str(pods), GPU_RESOURCE: str(gpus)}
    node_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.memory": str(memory_mib),
        "nvidia.com/gpu.count": str(gpus),
        **(labels or {}),
    }
    return _from_dict(
        V1Node,
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": node_labels,
                "annotations": {KWOK_NODE_ANNOTATION: "fake", **(annotations or {})},
            },
            "spec": {"taints": [dict(taint) for taint in taints]},
            "status": {"capacity": resources, "allocatable": resources},
        },
    )


def gpu_pod(
    name: str,
    gpus: int = 1,
    *,
    run_for: str | None = None,
    scheduling_gates: Iterable[str] = (),
    node_selector: Mapping[str, str] | None = None,
    scheduler_name: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> V1Pod:
    """A one-container pod asking for `gpus` GPUs (requests = limits), as a training step would.

    `run_for` (a Go duration, "2s") makes kwok finish it that long after it starts running;
    without it the pod runs until deleted. The container has a `command`, as faked pods need.
    """
    pod_annotations = dict(annotations or {})
    if run_for is not None:
        pod_annotations[RUN_FOR_ANNOTATION] = run_for
    gpu_amount = {GPU_RESOURCE: str(gpus)} if gpus else {}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {
                "name": "main",
                "image": "registry.invalid/aistack/train:test",
                "command": ["python", "train.py"],
                "resources": {
                    "requests": {"cpu": "1", "memory": "1Gi", **gpu_amount},
                    "limits": gpu_amount,
                },
            }
        ],
    }
    if gates := [{"name": gate} for gate in scheduling_gates]:
        spec["schedulingGates"] = gates
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if scheduler_name:
        spec["schedulerName"] = scheduler_name
    return _from_dict(
        V1Pod,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": dict(labels or {}),
                "annotations": pod_annotations,
            },
            "spec": spec,
        },
    )


class GpuNodes:
    """Creates kwok GPU nodes named `<prefix>-<name>` for one test; `delete_all` removes them.

    Nodes are cluster-scoped and the cluster is shared by the session, so every test's nodes
    get their own prefix and the label `aistack.io/test-nodes: <prefix>` (select them with
    `selector`).
    """

    def __init__(self, core: CoreV1Api) -> None:
        """Create nodes through `core` (an admin client's CoreV1Api)."""
        self.core = core
        self.prefix = f"n{secrets.token_hex(3)}"
        self.names: list[str] = []

    @property
    def selector(self) -> dict[str, str]:
        """A node selector matching exactly this test's nodes."""
        return {"aistack.io/test-nodes": self.prefix}

    def __call__(
        self,
        name: str,
        gpus: int = 8,
        product: str = "NVIDIA-H100-80GB-HBM3",
        memory_mib: int = 81559,
        *,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        cpu: str = "128",
        memory: str = "1Ti",
        pods: int = 110,
        wait_ready: bool = True,
    ) -> V1Node:
        """Create node `<prefix>-<name>` (see `cluster.gpu_node`); by default wait until Ready."""
        full_name = f"{self.prefix}-{name}"
        manifest = gpu_node(
            full_name,
            gpus,
            product,
            memory_mib,
            cpu=cpu,
            memory=memory,
            pods=pods,
            labels={**self.selector, **(labels or {})},
            annotations=annotations,
        )
        node = self.core.create_node(manifest)
        self.names.append(full_name)
        if wait_ready:
            node = wait_for(
                f"node {full_name} to become Ready (kwok's node-initialize stage)",
                lambda: self.core.read_node(full_name),
                node_is_ready,
                timeout=30,
            )
        return node

    def delete_all(self) -> None:
        """Delete every node this factory created (already deleted ones are fine)."""
        for name in self.names:
            with contextlib.suppress(ApiException):
                self.core.delete_node(name)
        self.names.clear()


def node_is_ready(node: V1Node) -> bool:
    """Whether `node` has condition Ready=True."""
    conditions = node.status.conditions if node.status else None
    return any(c.type == "Ready" and c.status == "True" for c in conditions or [])


# --- the cluster -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArgoController:
    """The running Argo workflow-controller: it watches Workflows in every namespace."""

    namespace: str
    configmap: str
    process: ManagedProcess


class TestCluster:
    """etcd, kube-apiserver, kube-scheduler and kwok on loopback ports, files in `workdir`.

    `start()` brings everything up and waits until each part is ready; `stop()` (also on a
    failed start) kills the processes and deletes `workdir` unless `keep_workdir`. Not
    thread-safe; one per test session.
    """

    __test__ = False  # a harness, not a pytest test class

    def __init__(self, workdir: Path | None = None, *, keep_workdir: bool = False) -> None:
        """Prepare (but do not start) a cluster whose files live in `workdir` (default: new)."""
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="aistack-cluster-"))
        self.keep_workdir = keep_workdir
        self.log_dir = self.workdir / "logs"
        self.ca = make_ca("aistack-test-cluster-ca")
        self.ca_path = self.workdir / "pki" / "ca.crt"
        self.webhook_client_ca = make_ca("aistack-test-webhook-client-ca")
        self.webhook_client_ca_path = self.workdir / "pki" / "webhook-client-ca.crt"
        """The CA of the client certificate the API server presents to every webhook (through
        its admission configuration), as a cluster admin sets it up for the service."""
        self.tokens: dict[str, str] = {
            user: secrets.token_urlsafe(24) for user in (ADMIN, *RESEARCHERS, SERVICE_USER)
        }
        self.server = ""
        self._etcd_url = ""
        self.kubeconfig_path = self.workdir / "kubeconfig"
        self.processes: dict[str, ManagedProcess] = {}
        self.argo: ArgoController | None = None

    def __repr__(self) -> str:
        return f"TestCluster(server={self.server!r}, workdir={str(self.workdir)!r})"

    def __enter__(self) -> TestCluster:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- lifecycle --

    def start(self) -> None:
        """Start etcd, kube-apiserver, kube-scheduler and kwok, each ready before the next."""
        binaries = {
            name: _binary(relative)
            for name, relative in [
                ("etcd", "k8s/etcd"),
                ("kube-apiserver", "k8s/kube-apiserver"),
                ("kube-scheduler", "k8s/kube-scheduler"),
                ("kwok", "kwok"),
            ]
        }
        try:
            self._start_etcd(binaries["etcd"])
            self._start_apiserver(binaries["kube-apiserver"])
            self._start_scheduler(binaries["kube-scheduler"])
            self._start_kwok(binaries["kwok"])
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process (last started first) and remove `workdir` unless kept."""
        for process in reversed(list(self.processes.values())):
            # Its data is thrown away, so a clean shutdown buys nothing; the workflow-controller
            # would otherwise take 10 s to exit.
            process.stop(grace_seconds=2.0)
        self.processes.clear()
        self.argo = None
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def crash_apiserver(self, down_seconds: float = 0.0) -> None:
        """SIGKILL kube-apiserver, keep it down `down_seconds`, start it again on its port.

        etcd keeps the data; every client (the service, kube-scheduler, kwok) must reconnect.
        """
        old = self.processes["kube-apiserver"]
        old.kill()
        time.sleep(down_seconds)
        process = self._spawn("kube-apiserver", old.argv)
        context = ssl.create_default_context(cafile=str(self.ca_path))
        admin_token = self.tokens[ADMIN]
        process.wait_ready(
            lambda: _http_ok(f"{self.server}/readyz", context=context, token=admin_token)
        )

    def log_paths(self) -> dict[str, Path]:
        """Each started process's log file, by process name."""
        return {name: process.log_path for name, process in self.processes.items()}

    def _spawn(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.log_dir / f"{name}.log", env)
        self.processes[name] = process
        return process

    def _start_etcd(self, binary: Path) -> None:
        client_url = f"http://127.0.0.1:{free_port()}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        argv = [
            str(binary),
            "--name=test",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=test={peer_url}",
            "--log-level=warn",
        ]
        # A test cluster's data is thrown away: skipping fsync makes writes far cheaper.
        help_text = subprocess.run(
            [str(binary), "--help"], capture_output=True, text=True, check=False
        )
        if "--unsafe-no-fsync" in help_text.stdout + help_text.stderr:
            argv.append("--unsafe-no-fsync")
        process = self._spawn("etcd", argv)
        process.wait_ready(lambda: _http_ok(f"{client_url}/health"))
        self._etcd_url = client_url

    def _start_apiserver(self, binary: Path) -> None:
        pki = self.workdir / "pki"
        self.ca_path.parent.mkdir(parents=True, exist_ok=True)
        self.ca_path.write_bytes(self.ca.cert_pem)
        serving = issue_cert(
            self.ca,
            [
                "127.0.0.1",
                "localhost",
                _KUBERNETES_SERVICE_IP,
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            common_name="kube-apiserver",
        ).write(pki, "apiserver")
        service_account_key = ec.generate_private_key(ec.SECP256R1())
        (pki / "sa.key").write_bytes(_private_key_pem(service_account_key))
        (pki / "sa.pub").write_bytes(
            service_account_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        # token,user,uid,"group1,group2" (static token file format).
        groups = {
            ADMIN: "system:masters",
            **dict.fromkeys(RESEARCHERS, RESEARCHERS_GROUP),
            SERVICE_USER: f"system:serviceaccounts,system:serviceaccounts:{SERVICE_NAMESPACE}",
        }
        (pki / "tokens.csv").write_text(
            "".join(
                f'{token},{user},{user},"{groups[user]}"\n' for user, token in self.tokens.items()
            )
        )
        admission = self._webhook_client_admission(pki)
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        argv = [
            str(binary),
            f"--admission-control-config-file={admission}",
            f"--etcd-servers={self._etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={self.ca_path}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={_SERVICE_CLUSTER_IP_RANGE}",
            # Nothing would remove the not-ready taint TaintNodesByCondition puts on new nodes
            # (no node lifecycle controller), and no controller creates the `default`
            # ServiceAccount that the ServiceAccount plugin requires of every pod. Webhook
            # admission (Mutating/ValidatingAdmissionWebhook) stays on, as by default.
            "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
            # Scale tests create ~10,000 pods; the defaults (400/200) would throttle them.
            "--max-requests-inflight=3000",
            "--max-mutating-requests-inflight=1500",
            # The `kubernetes` Service's endpoints would point at this host: nothing in the
            # tests calls the API through the Service.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
        ]
        process = self._spawn("kube-apiserver", argv)
        context = ssl.create_default_context(cafile=str(self.ca_path))
        admin_token = self.tokens[ADMIN]
        process.wait_ready(
            lambda: _http_ok(f"{self.server}/readyz", context=context, token=admin_token)
        )
        self.write_kubeconfig(self.kubeconfig_path)

    def _start_scheduler(self, binary: Path) -> None:
        config = self.workdir / "kube-scheduler.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    # Client-side rate limits off in practice: scale tests bind 10,000 pods.
                    "clientConnection": {
                        "kubeconfig": str(self.kubeconfig_path),
                        "qps": 5000,
                        "burst": 10000,
                    },
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        port = free_port()
        argv = [
            str(binary),
            f"--config={config}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'kube-scheduler-certs'}",
        ]
        process = self._spawn("kube-scheduler", argv)
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        process.wait_ready(lambda: _http_ok(f"https://127.0.0.1:{port}/healthz", context=insecure))

    def _start_kwok(self, binary: Path) -> None:
        port = free_port()
        argv = [
            str(binary),
            f"--kubeconfig={self.kubeconfig_path}",
            f"--config={TESTDATA_DIR / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            # Pod IPs come from one pool shared by all nodes: large enough for scale tests.
            "--cidr=10.128.0.0/9",
            "--node-ip=10.0.0.2",
            # No node lifecycle controller reads leases; heartbeats are the slow stage's job.
            "--node-lease-duration-seconds=0",
            # Only for its /healthz, which answers once kwok's controllers run.
            f"--server-address=127.0.0.1:{port}",
        ]
        process = self._spawn("kwok", argv)
        process.wait_ready(lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"))

    # -- clients --

    def configuration(self, user: str = ADMIN) -> Configuration:
        """A client configuration for `user` (admin, alice, bob or carol), with their token."""
        if user not in self.tokens:
            raise KeyError(f"no user {user!r} in the test cluster; known: {sorted(self.tokens)}")
        configuration = Configuration(
            host=self.server,
            api_key={"BearerToken": self.tokens[user]},
            api_key_prefix={"BearerToken": "Bearer"},
            ssl_ca_cert=str(self.ca_path),
            # Scale tests issue requests from many threads.
            connection_pool_maxsize=64,
        )
        return configuration

    def api_client(self, user: str = ADMIN) -> ApiClient:
        """A new `ApiClient` authenticated as `user`; the caller closes it."""
        return ApiClient(self.configuration(user))

    def _webhook_client_admission(self, pki: Path) -> Path:
        """The API server's admission configuration: a client certificate for every webhook.

        A kubeconfig whose user "*" holds a certificate of `webhook_client_ca` (its own CA,
        not the cluster's, so that it is good for nothing but webhook calls), as the
        Kubernetes documentation describes for authenticating the API server to webhooks.
        """
        self.webhook_client_ca_path.write_bytes(self.webhook_client_ca.cert_pem)
        client = issue_cert(
            self.webhook_client_ca, hosts=["kube-apiserver"], common_name="kube-apiserver"
        ).write(pki, "webhook-client")
        kubeconfig = pki / "webhook-client.kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "users": [
                        {
                            "name": "*",
                            "user": {
                                "client-certificate": str(client.cert),
                                "client-key": str(client.key),
                            },
                        }
                    ],
                }
            )
        )
        webhook = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "WebhookAdmissionConfiguration",
            "kubeConfigFile": str(kubeconfig),
        }
        admission = pki / "admission.yaml"
        admission.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "apiserver.config.k8s.io/v1",
                    "kind": "AdmissionConfiguration",
                    "plugins": [
                        {"name": "ValidatingAdmissionWebhook", "configuration": webhook},
                        {"name": "MutatingAdmissionWebhook", "configuration": webhook},
                    ],
                }
            )
        )
        return admission

    def write_kubeconfig(self, path: Path, user: str = ADMIN, namespace: str = "default") -> Path:
        """Write a kubeconfig for `user` (token auth) to `path`, e.g. for a Go subprocess."""
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_path)},
                }
            ],
            "users": [{"name": user, "user": {"token": self.tokens[user]}}],
            "contexts": [
                {
                    "name": "test",
                    "context": {"cluster": "test", "user": user, "namespace": namespace},
                }
            ],
            "current-context": "test",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(kubeconfig))
        path.chmod(0o600)
        return path

    # -- Argo --

    def start_argo(self, namespace: str = "argo") -> ArgoController:
        """Install Argo's CRDs and start its workflow-controller (once; later calls return it).

        The controller runs in `namespace` with a `workflow-controller-configmap` that only
        moves its metrics server to a free port (the default, 9090, may be taken).
        """
        if self.argo is not None:
            return self.argo
        binary = _binary("workflow-controller")
        crd_files = sorted(ARGO_CRD_DIR.glob("*.yaml"))
        if not crd_files:
            raise MissingBinaryError(
                f"no Argo CRDs in {ARGO_CRD_DIR}: run scripts/build-test-binaries"
            )
        configmap = "workflow-controller-configmap"
        metrics_port = free_port()
        with self.api_client() as api:
            _install_crds(ApiextensionsV1Api(api), crd_files)
            core = CoreV1Api(api)
            _create_if_missing(
                lambda: core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=namespace)))
            )
            _create_if_missing(
                lambda: core.create_namespaced_config_map(
                    namespace,
                    V1ConfigMap(
                        metadata=V1ObjectMeta(name=configmap),
                        data={"metricsConfig": f"port: {metrics_port}\nsecure: false\n"},
                    ),
                )
            )
        argv = [
            str(binary),
            f"--kubeconfig={self.kubeconfig_path}",
            f"--namespace={namespace}",
            f"--configmap={configmap}",
            # Never pulled: kwok fakes every pod.
            "--executor-image=quay.io/argoproj/argoexec:v4.0.5",
            "--loglevel=info",
        ]
        env = {"LEADER_ELECTION_DISABLE": "true", "DEFAULT_REQUEUE_TIME": "1s"}
        process = self._spawn("workflow-controller", argv, env)
        # The metrics server starts once the controller has read its configmap and built its
        # informers; workflows created from then on are picked up.
        process.wait_ready(lambda: _http_ok(f"http://127.0.0.1:{metrics_port}/metrics"))
        self.argo = ArgoController(namespace=namespace, configmap=configmap, process=process)
        return self.argo


def _create_if_missing(create: Callable[[], object]) -> None:
    try:
        create()
    except ApiException as error:
        if error.status != 409:
            raise


def _install_crds(api: ApiextensionsV1Api, files: Iterable[Path]) -> None:
    # Created, not applied: the task-sets CRD (~640 KB) is larger than the 256 KiB annotation
    # in which a client-side apply would keep the last-applied copy. All are created before
    # any is waited for, so the API server establishes them side by side.
    names = []
    for path in files:
        with path.open("rb") as stream:
            # libyaml's loader: the pure-Python one takes seconds on the task-sets CRD.
            manifest = yaml.load(stream, Loader=_YamlLoader)  # a safe loader
        crd = _from_dict(V1CustomResourceDefinition, manifest)
        names.append(crd.metadata.name if crd.metadata and crd.metadata.name else path.stem)
        _create_if_missing(functools.partial(api.create_custom_resource_definition, crd))

    def established(name: str) -> bool:
        status = api.read_custom_resource_definition_status(name).status
        conditions = status.conditions if status else None
        return any(c.type == "Established" and c.status == "True" for c in conditions or [])

    for name in names:
        wait_for(f"CRD {name} to be established", functools.partial(established, name))


def wait_for_workflow_phase(
    api: ApiClient,
    namespace: str,
    name: str,
    phases: Iterable[str] = ("Succeeded",),
    *,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Wait until Workflow `name` reaches one of `phases`; return it (as a dict)."""
    custom = CustomObjectsApi(api)
    wanted = set(phases)

    def workflow() -> dict[str, Any]:
        found: dict[str, Any] = custom.get_namespaced_custom_object(  # type: ignore[assignment]
            "argoproj.io", "v1alpha1", namespace, "workflows", name
        )
        return found

    return wait_for(
        f"Workflow {namespace}/{name} to reach phase {sorted(wanted)}",
        workflow,
        lambda found: found.get("status", {}).get("phase") in wanted,
        timeout=timeout,
        interval=0.25,
    )
