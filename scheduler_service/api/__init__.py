"""The service's HTTP face: REST API, admission webhooks, metrics and probes (FastAPI)."""

from scheduler_service.api._contract import (
    Actions,
    AdmissionDecision,
    Authorizer,
    ClusterStatus,
    User,
    Webhooks,
    WorkloadPods,
)

__all__ = [
    "Actions",
    "AdmissionDecision",
    "Authorizer",
    "ClusterStatus",
    "User",
    "Webhooks",
    "WorkloadPods",
]
