"""The service's HTTP face: REST API, admission webhooks, metrics and probes (FastAPI).

`create_app` builds the HTTPS app (the API under /api/v1, webhooks under /webhooks) from what
the driver provides through the contract (`ClusterStatus`, `Authorizer`, `Webhooks`,
`Actions`); `create_probe_app` the plain-HTTP one (/metrics, /healthz, /readyz).
"""

from scheduler_service.api._access import Access
from scheduler_service.api._app import create_app, create_webhook_app, unauthenticated_services
from scheduler_service.api._contract import (
    Actions,
    AdmissionDecision,
    Authorizer,
    AuthUnavailable,
    ClusterStatus,
    Permission,
    User,
    Webhooks,
    WorkloadPods,
)
from scheduler_service.api._deps import Services
from scheduler_service.api._errors import ErrorBody, ErrorDetail
from scheduler_service.api._metrics import Metrics
from scheduler_service.api._models import (
    Explanation,
    GpuSliceView,
    GpuUse,
    GpuView,
    NodeView,
    PodPlacement,
    QueuePoolView,
    QueueView,
    ReasonView,
    RequestView,
    WorkloadCounts,
    WorkloadView,
)
from scheduler_service.api._probes import create_probe_app
from scheduler_service.api._settings import ApiSettings
from scheduler_service.api._views import ClusterView

__all__ = [
    "Access",
    "Actions",
    "AdmissionDecision",
    "ApiSettings",
    "AuthUnavailable",
    "Authorizer",
    "ClusterStatus",
    "ClusterView",
    "ErrorBody",
    "ErrorDetail",
    "Explanation",
    "GpuSliceView",
    "GpuUse",
    "GpuView",
    "Metrics",
    "NodeView",
    "Permission",
    "PodPlacement",
    "QueuePoolView",
    "QueueView",
    "ReasonView",
    "RequestView",
    "Services",
    "User",
    "Webhooks",
    "WorkloadCounts",
    "WorkloadPods",
    "WorkloadView",
    "create_app",
    "create_probe_app",
    "create_webhook_app",
    "unauthenticated_services",
]
