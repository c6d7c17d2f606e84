"""The routes' dependencies, named once; tests replace any of them with `dependency_overrides`.

`create_app` keeps what the driver hands it in `app.state.services`; everything a route needs
is derived from there per request: the status (read once per request, so one response never
mixes two cycles), the user's access, the webhooks and actions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scheduler_service.accounting import AccountingStore
from scheduler_service.api._access import ANONYMOUS, Access, unavailable
from scheduler_service.api._contract import (
    Actions,
    Authorizer,
    AuthUnavailable,
    ClusterStatus,
    Webhooks,
)
from scheduler_service.api._errors import ApiError
from scheduler_service.api._metrics import Metrics
from scheduler_service.api._settings import ApiSettings
from scheduler_service.api._views import ClusterView

__all__ = [
    "AccessDep",
    "ActionsDep",
    "MetricsDep",
    "Services",
    "ServicesDep",
    "ViewDep",
    "WebhooksDep",
    "get_access",
    "get_actions",
    "get_metrics",
    "get_services",
    "get_view",
    "get_webhooks",
]


@dataclass(eq=False)
class Services:
    """What the driver handed `create_app`, and the view of the last status it served."""

    settings: ApiSettings
    status: Callable[[], ClusterStatus]
    authorizer: Authorizer
    webhooks: Webhooks
    actions: Actions
    metrics: Metrics | None = None
    accounting: AccountingStore | None = None
    """Workload records and usage reports (scheduler_service.accounting); None when off."""
    _last: tuple[ClusterStatus, ClusterView] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def view(self) -> ClusterView:
        """The indexed view of the current status, built once per status the driver publishes."""
        status = self.status()
        with self._lock:
            if self._last is None or self._last[0] is not status:
                self._last = (status, ClusterView(status))
            return self._last[1]


def get_services(request: Request) -> Services:
    """The services `create_app` was given."""
    return cast(Services, request.app.state.services)


ServicesDep = Annotated[Services, Depends(get_services)]


def get_view(services: ServicesDep) -> ClusterView:
    """The cluster as of the driver's last cycle, fixed for the whole request."""
    return services.view()


_bearer = HTTPBearer(
    auto_error=False,
    description="A Kubernetes bearer token, e.g. from `kubectl create token <service-account>`.",
)

_NO_TOKEN = (
    "no bearer token: send the header `Authorization: Bearer <token>` with a Kubernetes token, "
    "e.g. from `kubectl create token <service-account> -n <namespace>`"
)
_BAD_TOKEN = (
    "the Kubernetes API server does not accept this bearer token (expired, revoked, or for "
    "another cluster); get a fresh one, e.g. with `kubectl create token <service-account> "
    "-n <namespace>`"
)


def get_access(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Access:
    """The request's user and what RBAC lets them do: 401 without a valid bearer token."""
    if not services.settings.auth:
        return Access(ANONYMOUS, None)
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or not credentials.credentials:
        raise ApiError(401, _NO_TOKEN, headers=challenge)
    try:
        user = services.authorizer.authenticate(credentials.credentials)
    except AuthUnavailable as exc:
        raise unavailable(exc) from exc
    if user is None:
        raise ApiError(401, _BAD_TOKEN, headers=challenge)
    return Access(user, services.authorizer)


def get_webhooks(services: ServicesDep) -> Webhooks:
    """The admission logic."""
    return services.webhooks


def get_actions(services: ServicesDep) -> Actions:
    """What users may ask the service to do."""
    return services.actions


def get_metrics(services: ServicesDep) -> Metrics | None:
    """The metrics to count webhook decisions in, if `create_app` was given them."""
    return services.metrics


ViewDep = Annotated[ClusterView, Depends(get_view)]
AccessDep = Annotated[Access, Depends(get_access)]
WebhooksDep = Annotated[Webhooks, Depends(get_webhooks)]
ActionsDep = Annotated[Actions, Depends(get_actions)]
MetricsDep = Annotated[Metrics | None, Depends(get_metrics)]
