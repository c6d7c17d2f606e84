"""`create_app`: the HTTPS app of the service (REST API and admission webhooks)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.types import ASGIApp

from scheduler_service.accounting import AccountingStore
from scheduler_service.api import _routes, _usage, _webhooks
from scheduler_service.api._contract import (
    Actions,
    AdmissionDecision,
    Authorizer,
    ClusterStatus,
    Permission,
    User,
    Webhooks,
)
from scheduler_service.api._deps import Services
from scheduler_service.api._errors import install_error_handlers
from scheduler_service.api._limits import BodyLimit
from scheduler_service.api._metrics import Metrics
from scheduler_service.api._settings import ApiSettings
from scheduler_service.core import Plan, Snapshot

__all__ = ["create_app", "create_webhook_app", "unauthenticated_services"]

_DESCRIPTION = """\
The AI-Stack scheduler's view of the GPU pool: queues with their quota, fair share and usage;
workloads with their state, allocation and the reason they wait; nodes and their GPUs; and why
a given pod waits.

Every /api/v1 request carries a Kubernetes bearer token (`Authorization: Bearer <token>`); the
service asks the API server who it belongs to (TokenReview) and whether RBAC allows the request
(SubjectAccessReview), so a user sees and acts on what `kubectl` would let them.

GPU amounts are in GPUs (fractional for slices and shares), times in Unix seconds.
"""


def create_app(
    settings: ApiSettings,
    *,
    status: Callable[[], ClusterStatus],
    authorizer: Authorizer,
    webhooks: Webhooks,
    actions: Actions,
    metrics: Metrics | None = None,
    dashboard: Callable[[Services], ASGIApp] | None = None,
    accounting: AccountingStore | None = None,
    serve_webhooks: bool = True,
) -> FastAPI:
    """The HTTPS app: the REST API under /api/v1 and the admission webhooks under /webhooks.

    `status` returns the driver's latest `ClusterStatus` (each request reads it once);
    `authorizer` checks bearer tokens and RBAC unless `settings.auth` is off; `webhooks` and
    `actions` carry out what the routes are asked. When `metrics` is given, the webhook routes
    count their decisions in it. When `dashboard` is given, the app it builds on the same
    services is mounted under /ui (scheduler_service.dashboard), and / leads there.
    `accounting` serves usage reports and workload histories (None: those routes answer 503).
    Without `serve_webhooks` the webhooks are left to `create_webhook_app` on a port of their
    own (one that only the API server's client certificate may call).
    """
    app = FastAPI(
        title="AI-Stack scheduler",
        version="v1",
        description=_DESCRIPTION,
        # operationIds are what generated clients name their methods: the route's function
        # name (`list_workloads`), not FastAPI's default path-and-method mangle.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.services = Services(
        settings=settings,
        status=status,
        authorizer=authorizer,
        webhooks=webhooks,
        actions=actions,
        metrics=metrics,
        accounting=accounting,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit)
    app.include_router(_routes.router)
    app.include_router(_usage.router)
    if serve_webhooks:
        app.include_router(_webhooks.router)
    if dashboard is not None:
        app.mount("/ui", dashboard(app.state.services))
        app.add_api_route(
            "/", lambda: RedirectResponse("/ui/", status_code=307), include_in_schema=False
        )
    return app


def create_webhook_app(webhooks: Webhooks, *, metrics: Metrics | None = None) -> FastAPI:
    """The admission webhooks alone, under /webhooks, for a port that requires client certs.

    The API server calls them; `aistack serve --webhook-client-ca` serves this app on
    `--webhook-port` with TLS that refuses any client without a certificate of that CA.
    """
    app = FastAPI(
        title="AI-Stack scheduler webhooks",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.services = Services(
        settings=ApiSettings(auth=False),
        status=lambda: ClusterStatus(snapshot=Snapshot(), plan=Plan()),
        authorizer=_NoAuthorizer(),
        webhooks=webhooks,
        actions=_NoActions(),
        metrics=metrics,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit)
    app.include_router(_webhooks.router)
    return app


def unauthenticated_services(
    status: Callable[[], ClusterStatus], *, accounting: AccountingStore | None = None
) -> Services:
    """Read-only services without authentication, for pages served on this machine only.

    The local runner's dashboard (`aistack run --dashboard`, bound to 127.0.0.1) reads its
    runner's status through them: every viewer sees everything, as the machine's user does;
    no webhook is answered and no action carried out.
    """
    return Services(
        settings=ApiSettings(auth=False),
        status=status,
        authorizer=_NoAuthorizer(),
        webhooks=_NoWebhooks(),
        actions=_NoActions(),
        accounting=accounting,
    )


class _NoAuthorizer:
    """Authorises nothing.

    The webhook app's callers are proven by their TLS certificate; unauthenticated services
    ask no one.
    """

    def authenticate(self, token: str) -> User | None:
        del token
        return None

    def allowed(self, user: User, permission: Permission) -> bool:
        del user, permission
        return False


class _NoWebhooks:
    """Services that serve no webhook admit nothing."""

    def mutate_pod(self, request: Mapping[str, Any]) -> AdmissionDecision:
        del request
        return AdmissionDecision(allowed=False, message="this server admits no pods")

    def validate_queue(self, request: Mapping[str, Any]) -> AdmissionDecision:
        del request
        return AdmissionDecision(allowed=False, message="this server admits no queues")


class _NoActions:
    """The webhook app and unauthenticated services carry out no user action."""

    def delete_workload(self, name: str) -> None:
        raise KeyError(name)
