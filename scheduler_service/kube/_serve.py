"""`aistack serve`: the scheduler service as one process (driver, API, webhooks, metrics).

Wiring only: every part is built and tested on its own. The HTTPS server carries the API and the
admission webhooks (the API server calls them, so they need TLS); a plain-HTTP server carries
metrics and probes for the kubelet and Prometheus.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from kubernetes import config
from kubernetes.client import ApiClient, Configuration
from starlette.types import ASGIApp

from scheduler_service.accounting import AccountingStore
from scheduler_service.api import (
    Metrics,
    Services,
    create_app,
    create_probe_app,
    create_webhook_app,
)
from scheduler_service.dashboard import create_dashboard
from scheduler_service.kube._accountant import Accountant
from scheduler_service.kube._auth import KubeAuthorizer
from scheduler_service.kube._driver import ClusterDriver
from scheduler_service.kube._leader import LeaseElector
from scheduler_service.kube._settings import ServiceSettings

__all__ = ["ServeOptions", "api_client", "serve"]

_log = logging.getLogger(__name__)

_GRACEFUL_SHUTDOWN_SECONDS = 5


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """Where the service listens and how it reaches the cluster (the command line's part)."""

    tls_cert: Path
    tls_key: Path
    port: int = 8443
    metrics_port: int = 9090
    host: str = "0.0.0.0"  # a pod serves on all its interfaces
    kubeconfig: Path | None = None
    webhook_port: int | None = None
    """Serve the webhooks on this port instead, to callers with a certificate of
    `webhook_client_ca` only (the API server, set up to present one)."""
    webhook_client_ca: Path | None = None


def api_client(kubeconfig: Path | None, *, pool_size: int) -> ApiClient:
    """A client for the cluster: the kubeconfig if given, else the pod's service account."""
    configuration = Configuration()
    if kubeconfig is not None:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            str(kubeconfig), client_configuration=configuration
        )
    else:
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    configuration.connection_pool_maxsize = pool_size
    return ApiClient(configuration)


def serve(settings: ServiceSettings, options: ServeOptions) -> None:
    """Run the service until interrupted (SIGINT/SIGTERM); gives the lease up on the way out."""
    client = api_client(options.kubeconfig, pool_size=settings.parallel_requests + 8)
    namespace = os.environ.get("POD_NAMESPACE", "default")
    elector = None
    if settings.leader_election.enabled:
        election = settings.leader_election
        elector = LeaseElector(
            client,
            namespace=namespace,
            name=election.lease_name,
            identity=os.environ.get("POD_NAME") or socket.gethostname(),
            lease_duration_seconds=election.lease_duration_seconds,
            renew_deadline_seconds=election.renew_deadline_seconds,
            retry_period_seconds=election.retry_period_seconds,
        )
    holder: list[ClusterDriver] = []
    metrics = Metrics(lambda: holder[0].status() if holder else None)
    store = accountant = None
    if settings.accounting.enabled:
        # Connected lazily by its first user: a database that is down stops nothing here.
        store = AccountingStore(settings.accounting.store_url())
        accountant = Accountant(store, registry=metrics.registry)
        _log.info("accounting records go to %s", store.where)
    driver = ClusterDriver(
        client,
        settings,
        is_leader=(lambda: elector.is_leader) if elector is not None else (lambda: True),
        metrics=metrics,
        namespace=namespace,
        accountant=accountant,
    )
    holder.append(driver)
    app = create_app(
        settings.api,
        status=driver.status,
        authorizer=KubeAuthorizer(client),
        webhooks=driver.webhooks,
        actions=driver,
        metrics=metrics,
        dashboard=_dashboard(settings),
        serve_webhooks=options.webhook_client_ca is None,
        accounting=store,
    )
    probes = create_probe_app(unready=driver.unready_reason, metrics=metrics)
    if elector is not None:
        elector.start()
    if accountant is not None:
        accountant.start()
    driver.start()
    try:
        hooks = None
        if options.webhook_client_ca is not None:
            hooks = create_webhook_app(driver.webhooks, metrics=metrics)
        asyncio.run(_serve_all(app, probes, hooks, options))
    finally:
        driver.stop()
        if accountant is not None:
            accountant.stop()  # after the driver: its last cycle's changes are written too
        if store is not None:
            store.close()
        if elector is not None:
            elector.stop()


def _dashboard(settings: ServiceSettings) -> Callable[[Services], ASGIApp] | None:
    """The web dashboard under /ui, on the API's services, unless the settings turn it off."""
    if not settings.dashboard.enabled:
        return None
    return functools.partial(create_dashboard, settings.dashboard)


async def _serve_all(
    app: FastAPI, probes: FastAPI, hooks: FastAPI | None, options: ServeOptions
) -> None:
    https = uvicorn.Server(
        uvicorn.Config(
            app,
            host=options.host,
            port=options.port,
            ssl_certfile=str(options.tls_cert),
            ssl_keyfile=str(options.tls_key),
            log_level="warning",
            # The dashboard's live pages hold event streams open for minutes: on shutdown, stop
            # waiting for them after a few seconds (browsers reconnect to another replica).
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
        )
    )
    plain = uvicorn.Server(
        uvicorn.Config(probes, host=options.host, port=options.metrics_port, log_level="warning")
    )
    servers = [https.serve(), plain.serve()]
    if hooks is not None:
        assert options.webhook_port is not None
        assert options.webhook_client_ca is not None
        # The TLS handshake itself refuses a client without a certificate of the CA.
        webhooks = uvicorn.Server(
            uvicorn.Config(
                hooks,
                host=options.host,
                port=options.webhook_port,
                ssl_certfile=str(options.tls_cert),
                ssl_keyfile=str(options.tls_key),
                ssl_ca_certs=str(options.webhook_client_ca),
                ssl_cert_reqs=ssl.CERT_REQUIRED,
                log_level="warning",
            )
        )
        servers.append(webhooks.serve())
    _log.info(
        "serving HTTPS on %s:%d, metrics on :%d%s",
        options.host,
        options.port,
        options.metrics_port,
        f", webhooks on :{options.webhook_port} to {options.webhook_client_ca}'s clients only"
        if hooks is not None
        else "",
    )
    await asyncio.gather(*servers)
