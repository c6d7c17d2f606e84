"""The plain-HTTP side of the service: Prometheus metrics and the kubelet's probes.

It listens on its own port without TLS or authentication, as Prometheus and the kubelet
expect; it serves nothing a user could act on.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST

from scheduler_service.api._errors import ErrorBody, ErrorDetail
from scheduler_service.api._metrics import Metrics

__all__ = ["create_probe_app"]

_NOT_READY = (
    "not ready: {why}; wait, and if it stays unready read the service's log (it names what failed)"
)


def create_probe_app(*, unready: Callable[[], str], metrics: Metrics) -> FastAPI:
    """The probe app: `/metrics`, `/healthz` (alive) and `/readyz`.

    `/readyz` answers 503 with `unready()`'s reason while it gives one, else 200.
    """
    app = FastAPI(
        title="AI-Stack scheduler probes", openapi_url=None, docs_url=None, redoc_url=None
    )

    @app.get("/metrics")
    def serve_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(response: Response) -> dict[str, str] | ErrorBody:
        why = unready()
        if not why:
            return {"status": "ready"}
        response.status_code = 503
        return ErrorBody(error=ErrorDetail(code="unavailable", message=_NOT_READY.format(why=why)))

    return app
