"""The cluster driver: the scheduler service on Kubernetes.

Pods that carry the queue label are gated by the admission webhook at creation, watched, grouped
into workloads, scheduled by the core, and released onto their node and GPUs; see
`scheduler_service.pod_contract` for the labels and annotations that form the contract with
whoever creates the pods.
"""

from scheduler_service.kube._accountant import Accountant
from scheduler_service.kube._admission import KubeWebhooks, injected_env
from scheduler_service.kube._auth import KubeAuthorizer
from scheduler_service.kube._driver import ClusterDriver, DriverMetrics
from scheduler_service.kube._leader import LeaseElector
from scheduler_service.kube._ledger import Intents, PodLedger
from scheduler_service.kube._serve import ServeOptions, api_client, serve
from scheduler_service.kube._settings import (
    AccountingSettings,
    ServiceSettings,
    SettingsError,
    load_settings,
    with_accounting_url,
)
from scheduler_service.translate import (
    NodeError,
    PodRequest,
    PodRequestError,
    QueueError,
    node_from_k8s,
    parse_pod_request,
    queue_from_k8s,
)

__all__ = [
    "Accountant",
    "AccountingSettings",
    "ClusterDriver",
    "DriverMetrics",
    "Intents",
    "KubeAuthorizer",
    "KubeWebhooks",
    "LeaseElector",
    "NodeError",
    "PodLedger",
    "PodRequest",
    "PodRequestError",
    "QueueError",
    "ServeOptions",
    "ServiceSettings",
    "SettingsError",
    "api_client",
    "injected_env",
    "load_settings",
    "node_from_k8s",
    "parse_pod_request",
    "queue_from_k8s",
    "serve",
    "with_accounting_url",
]
