"""`create_dashboard`: the web dashboard, a FastAPI app the service mounts under /ui.

Every view is a URL whose filters are in its query, built by a pure function of the cluster
view, the viewer's scope and the time (`build_*`), and rendered by a template. A page is live:
its region opens an event stream (the same URL with `live=1`, server-sent events), and gets
the region again, rendered for the same viewer, after each scheduling cycle that published a
new status. Nothing is loaded from outside the service: htmx and its SSE extension are vendored
in `static/` (versions and hashes in `static/VENDORED.md`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from scheduler_service.api import ClusterView, Services
from scheduler_service.core import WorkloadState
from scheduler_service.dashboard._access import (
    TOKEN_COOKIE,
    NotSignedIn,
    Scope,
    sign_in,
    token_of,
)
from scheduler_service.dashboard._accounting import (
    UsageQuery,
    read_history,
    usage_chart,
    usage_page,
    usage_report,
)
from scheduler_service.dashboard._errors import PageError
from scheduler_service.dashboard._nodes import build_nodes
from scheduler_service.dashboard._overview import build_overview
from scheduler_service.dashboard._queues import build_queues
from scheduler_service.dashboard._render import Links, render
from scheduler_service.dashboard._settings import DashboardSettings
from scheduler_service.dashboard._workload import (
    WorkloadPage,
    build_finished,
    build_workload,
    find_pod_workload,
    history_lines,
)
from scheduler_service.dashboard._workloads import WorkloadFilters, build_workloads, short_name

__all__ = ["create_dashboard"]

_SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    # Other sites learn nothing of a page's URL (its filters name namespaces and workloads).
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)
_NO_STORE = (b"cache-control", b"no-store")
_KEEP_ALIVE_SECONDS = 15.0
_RETRY_MILLISECONDS = 3000


class _Headers:
    """ASGI middleware: the security headers on every response, `no-store` on every page.

    Pages show what one viewer may see, so no cache may keep them; the vendored static files
    may be cached. A pure ASGI middleware (not `BaseHTTPMiddleware`) so that event streams
    pass through unbuffered.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith(f"{scope.get('root_path', '')}/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(_SECURITY_HEADERS)
                if not static:
                    headers.append(_NO_STORE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass(frozen=True, slots=True)
class _Page:
    """A view: its template, its title, its place in the navigation, and how its model is built.

    `build` gets the cluster view, the viewer's scope and the time; it is called again for
    every live update, so it must read nothing but those (and what the route fixed).
    """

    template: str
    title: str
    nav: str
    build: Callable[[ClusterView, Scope, float], object]
    live: bool = True
    """False for a report that is not about the current cycle (the usage page)."""


def _event(name: str, text: str) -> str:
    """One server-sent event: its name and its data, a line of `data:` per line of text."""
    data = "".join(f"data: {line}\n" for line in text.splitlines() or [""])
    return f"event: {name}\n{data}\n"


class _Dashboard:
    """The routes' shared machinery: signing in, rendering pages whole or live."""

    def __init__(self, settings: DashboardSettings, services: Services) -> None:
        self.settings = settings
        self.services = services

    def context(self, request: Request, scope: Scope | None, **extra: Any) -> dict[str, Any]:
        """What every template gets: links, the viewer's name, whether auth is on, settings."""
        links = Links(str(request.scope.get("root_path", "")))
        return {
            "links": links,
            "user": scope.user.name if scope is not None else "",
            "auth": self.services.settings.auth,
            "settings": self.settings,
            **extra,
        }

    def _region(
        self, page: _Page, request: Request, scope: Scope, *, live: bool
    ) -> tuple[str, float]:
        """The live region of `page` for `scope`, and the cycle time it shows.

        A `PageError` of a whole page is raised (the page answers with its status); in a live
        update it is shown in the region instead (rights can change while a page is open).
        """
        view = self.services.view()
        status = view.status
        now = time.time()
        try:
            model = page.build(view, scope, now)
            template = page.template
        except PageError as error:
            if not live:
                raise
            model, template = error, "error_region.html"
        context = self.context(
            request,
            scope,
            page=page,
            model=model,
            template=template,
            now=now,
            cycle_at=status.cycle_at,
            age_seconds=max(0.0, now - status.cycle_at) if status.cycle_at else None,
            leader=status.leader,
        )
        return render("region.html", context), status.cycle_at

    def respond(self, request: Request, page: _Page) -> Response:
        """`page` for the request's viewer: whole, or (with `live=1`) as an event stream.

        A viewer who is not signed in is sent to the sign-in form (a live stream gets a 401).
        """
        token = token_of(request.headers, request.cookies)
        live = request.query_params.get("live") == "1"
        try:
            scope = sign_in(self.services, token)
        except NotSignedIn as exc:
            if live:
                return PlainTextResponse(str(exc), status_code=401)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            links = Links(str(request.scope.get("root_path", "")))
            return RedirectResponse(links.to("/login", {"next": target}), status_code=303)
        if live:
            return self._stream(request, page, token)
        region, cycle_at = self._region(page, request, scope, live=False)
        query = dict(request.query_params)
        query.update(live="1", at=repr(cycle_at))
        live_url = (
            Links(str(request.scope.get("root_path", ""))).to(
                request.url.path.removeprefix(str(request.scope.get("root_path", ""))), query
            )
            if page.live
            else ""
        )
        html = render(
            "page.html",
            self.context(request, scope, page=page, region=region, live_url=live_url),
        )
        return HTMLResponse(html)

    def _live_region(self, request: Request, page: _Page, token: str | None) -> tuple[str, bool]:
        """The region again, for the viewer behind `token` now; True when they are signed out."""
        try:
            scope = sign_in(self.services, token)
        except NotSignedIn as exc:
            context = self.context(request, None, message=str(exc))
            return render("signed_out_region.html", context), True
        except PageError as error:
            context = self.context(request, None, model=error)
            return render("error_region.html", context), False
        return self._region(page, request, scope, live=True)[0], False

    def _stream(self, request: Request, page: _Page, token: str | None) -> StreamingResponse:
        """Server-sent events: `update` with the region after each new status, until the end.

        The page was rendered from the cycle named by `at`; a status from another cycle is sent
        at once. The stream ends after `live_stream_seconds` (the browser reconnects, which
        signs the viewer in again) or when the viewer is signed out.
        """
        shown = request.query_params.get("at")
        settings = self.settings

        async def events() -> AsyncIterator[str]:
            loop = asyncio.get_running_loop()
            started = last_sent = loop.time()
            yield f"retry: {_RETRY_MILLISECONDS}\n\n"
            last = None
            while loop.time() - started < settings.live_stream_seconds:
                if await request.is_disconnected():
                    return
                status = self.services.status()
                if status is not last:
                    first = last is None
                    last = status
                    if not first or shown != repr(status.cycle_at):
                        region, signed_out = await run_in_threadpool(
                            self._live_region, request, page, token
                        )
                        yield _event("update", region)
                        last_sent = loop.time()
                        if signed_out:
                            return
                if loop.time() - last_sent >= _KEEP_ALIVE_SECONDS:
                    yield ": keep-alive\n\n"
                    last_sent = loop.time()
                await asyncio.sleep(settings.live_poll_seconds)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            # Proxies such as nginx buffer responses unless told not to: an event must pass now.
            headers={"X-Accel-Buffering": "no"},
        )

    def error_page(self, request: Request, error: PageError) -> HTMLResponse:
        """A whole page that says what went wrong and what to do, with its status."""
        context = self.context(request, None, model=error, page=None)
        return HTMLResponse(render("error.html", context), status_code=error.status_code)


def _same_origin(request: Request) -> bool:
    """Whether a form POST comes from a page of this service.

    Browsers say where a request comes from in `Sec-Fetch-Site`; older ones only in `Origin`.
    A request with neither is not a browser's cross-site form (curl, a test client).
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in {"same-origin", "none"}
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _safe_next(target: str | None, base: str) -> str:
    """A page of the dashboard to return to after signing in; anything else: the overview."""
    if target and target.startswith(f"{base}/") and not target.startswith("//"):
        return target
    return f"{base}/"


def create_dashboard(settings: DashboardSettings, services: Services) -> FastAPI:
    """The dashboard app on the API's `services` (mount it under /ui; `create_app` does).

    Pages: the overview (/), queues, nodes, workloads, a workload's page, a pod's and a
    workflow's (where the Argo UI's links land), the usage report, and the sign-in form.
    Rights are the API's: see docs/dashboard.md.
    """
    app = FastAPI(title="AI-Stack dashboard", openapi_url=None, docs_url=None, redoc_url=None)
    app.add_middleware(_Headers)
    # Pages of long tables and many SVG bars compress about tenfold; event streams are left as
    # they are (Starlette's GZip skips text/event-stream), so each update passes at once.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.mount(
        "/static",
        StaticFiles(packages=[("scheduler_service.dashboard", "static")]),
        name="static",
    )
    ui = _Dashboard(settings, services)
    _add_error_pages(app, ui)
    _add_views(app, ui)
    _add_usage(app, ui)
    _add_sign_in(app, ui)
    return app


def _add_error_pages(app: FastAPI, ui: _Dashboard) -> None:
    """Failures as pages that say what went wrong and what to do (never the API's JSON)."""

    async def on_page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return ui.error_page(request, exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            error = PageError(
                404,
                "No such page",
                f"The dashboard has no page {request.url.path}; start from the overview.",
            )
        else:
            error = PageError(exc.status_code, "This request cannot be answered", str(exc.detail))
        return ui.error_page(request, error)

    async def on_bad_parameter(request: Request, exc: Exception) -> Response:
        error = PageError(
            422,
            "A filter has a value this page does not take",
            f"{exc}. Change the filter and try again.",
        )
        return ui.error_page(request, error)

    app.add_exception_handler(PageError, on_page_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_bad_parameter)


def _add_views(app: FastAPI, ui: _Dashboard) -> None:
    """The live views of the cluster: overview, queues, nodes, workloads and their pages."""
    settings, services = ui.settings, ui.services

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> Response:
        return ui.respond(request, _Page("overview.html", "Overview", "overview", build_overview))

    @app.get("/queues", response_class=HTMLResponse)
    def queues(request: Request, pool: str | None = None) -> Response:
        chosen = pool or None
        return ui.respond(
            request,
            _Page(
                "queues.html",
                "Queues",
                "queues",
                lambda view, scope, _now: build_queues(view, scope, chosen),
            ),
        )

    @app.get("/nodes", response_class=HTMLResponse)
    def nodes(
        request: Request,
        pool: str | None = None,
        q: Annotated[str, Query(max_length=253)] = "",
        page: Annotated[int, Query(ge=1)] = 1,
    ) -> Response:
        chosen = pool or None
        return ui.respond(
            request,
            _Page(
                "nodes.html",
                "Nodes and GPUs",
                "nodes",
                lambda view, scope, _now: build_nodes(
                    view, scope, pool=chosen, query=q, page=page, size=settings.nodes_per_page
                ),
            ),
        )

    @app.get("/workloads", response_class=HTMLResponse)
    def workloads(  # noqa: PLR0917 - the filters, each a query parameter
        request: Request,
        namespace: str | None = None,
        queue: str | None = None,
        state: str | None = None,
        workflow: Annotated[str | None, Query(max_length=253)] = None,
        page: Annotated[int, Query(ge=1)] = 1,
    ) -> Response:
        filters = WorkloadFilters(
            namespace=namespace or None,
            queue=queue or None,
            state=_state(state),
            workflow=workflow or None,
        )
        return ui.respond(
            request,
            _Page(
                "workloads.html",
                "Workloads",
                "workloads",
                lambda view, scope, now: build_workloads(
                    view, scope, now, filters, page, settings.page_size
                ),
            ),
        )

    @app.get("/workflows/{namespace}/{name}", response_class=HTMLResponse)
    def workflow(
        request: Request, namespace: str, name: str, page: Annotated[int, Query(ge=1)] = 1
    ) -> Response:
        filters = WorkloadFilters(namespace=namespace, workflow=name)
        return ui.respond(
            request,
            _Page(
                "workloads.html",
                f"Workflow {name}",
                "workloads",
                lambda view, scope, now: build_workloads(
                    view, scope, now, filters, page, settings.page_size
                ),
            ),
        )

    def workload_page(
        view: ClusterView, scope: Scope, now: float, namespace: str, name: str
    ) -> WorkloadPage:
        """The workload's page with its recorded history; only the history once it is gone."""
        try:
            page = build_workload(view, scope, now, namespace, name, settings.argo_ui_url)
        except PageError as error:
            if error.status_code != 404:
                raise
            history, _ = read_history(services, namespace, name)
            if history is None:
                raise
            return build_finished(scope, namespace, name, history, settings.argo_ui_url)
        assert page.row is not None
        history, note = read_history(services, namespace, page.row.short_name)
        return replace(page, history=history_lines(history), history_note=note)

    @app.get("/workloads/{namespace}/{name}", response_class=HTMLResponse)
    def workload(request: Request, namespace: str, name: str) -> Response:
        return ui.respond(
            request,
            _Page(
                "workload.html",
                f"Workload {name}",
                "workloads",
                lambda view, scope, now: workload_page(view, scope, now, namespace, name),
            ),
        )

    @app.get("/pods/{namespace}/{pod}", response_class=HTMLResponse)
    def pod(request: Request, namespace: str, pod: str) -> Response:
        """Where the Argo UI's pod link lands: the page of the pod's workload.

        A pod the scheduler no longer has shows the history recorded under its name (a
        single-pod step's workload is named after its pod).
        """

        def build(view: ClusterView, scope: Scope, now: float) -> object:
            try:
                owner = find_pod_workload(view, scope, namespace, pod)
            except PageError as error:
                if error.status_code != 404:
                    raise
                try:
                    return workload_page(view, scope, now, namespace, pod)
                except PageError as missing:
                    if missing.status_code == 404:
                        raise error from None  # what to check about the pod
                    raise
            return workload_page(view, scope, now, namespace, short_name(owner.name, namespace))

        return ui.respond(request, _Page("workload.html", f"Pod {pod}", "workloads", build))


def _usage_query(
    since: Annotated[str, Query(max_length=64)] = "30d",
    until: Annotated[str, Query(max_length=64)] = "",
    by: str = "queue",
    namespace: Annotated[str, Query(max_length=63)] = "",
) -> UsageQuery:
    """The usage query of a URL (empty `until` and `namespace`: none)."""
    return UsageQuery(since=since, until=until or None, by=by, namespace=namespace or None)


_AskedUsage = Annotated[UsageQuery, Depends(_usage_query)]


def _add_usage(app: FastAPI, ui: _Dashboard) -> None:
    """The usage report (not live: it is about a period, not a cycle), its chart and its CSV."""
    services = ui.services

    @app.get("/usage", response_class=HTMLResponse)
    def usage(request: Request, query: _AskedUsage) -> Response:
        return ui.respond(
            request,
            _Page(
                "usage.html",
                "GPU usage",
                "usage",
                lambda _view, scope, now: usage_page(services, scope, now, query),
                live=False,
            ),
        )

    @app.get("/usage/chart", response_class=HTMLResponse)
    def usage_chart_fragment(request: Request, query: _AskedUsage) -> Response:
        """The usage page's chart, as a fragment the page fetches once it is shown."""
        scope = _viewer(services, request)
        if isinstance(scope, Response):
            return scope
        context = ui.context(request, scope)
        try:
            chart = usage_chart(services, scope, time.time(), query)
        except PageError as error:
            context["model"] = error
            return HTMLResponse(render("error_region.html", context), error.status_code)
        context["model"] = chart
        return HTMLResponse(render("usage_chart.html", context))

    @app.get("/usage.csv")
    def usage_csv(request: Request, query: _AskedUsage) -> Response:
        """The report of the usage page as CSV (the accounting store's columns)."""
        scope = _viewer(services, request)
        if isinstance(scope, Response):
            return scope
        report, _ = usage_report(services, scope, time.time(), query)
        name = f"gpu-hours-by-{report.by.value}-{int(report.since)}-{int(report.until)}.csv"
        return Response(
            report.to_csv(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )


def _add_sign_in(app: FastAPI, ui: _Dashboard) -> None:
    """The sign-in form, which keeps a pasted token in a strict cookie, and signing out."""
    settings, services = ui.settings, ui.services

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str | None = None) -> Response:
        base = str(request.scope.get("root_path", ""))
        context = ui.context(request, None, page=None, next=_safe_next(next, base), error="")
        return HTMLResponse(render("login.html", context))

    @app.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        base = str(request.scope.get("root_path", ""))
        if not _same_origin(request):
            raise PageError(
                403,
                "Sign-in refused",
                "The sign-in form was sent from another site. Open the dashboard and sign in "
                "from its own page.",
            )
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        target = _safe_next((form.get("next") or [""])[0], base)
        try:
            await run_in_threadpool(sign_in, services, token)
        except NotSignedIn as exc:
            context = ui.context(request, None, page=None, next=target, error=str(exc))
            return HTMLResponse(render("login.html", context), status_code=401)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            TOKEN_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=settings.secure_cookie,
            path=f"{base}/",
        )
        return response

    @app.post("/logout")
    def logout(request: Request) -> Response:
        base = str(request.scope.get("root_path", ""))
        response = RedirectResponse(f"{base}/login", status_code=303)
        response.delete_cookie(
            TOKEN_COOKIE,
            path=f"{base}/",
            httponly=True,
            samesite="strict",
            secure=settings.secure_cookie,
        )
        return response


def _state(text: str | None) -> WorkloadState | None:
    if not text:
        return None
    try:
        return WorkloadState(text)
    except ValueError:
        raise PageError(
            422,
            "A filter has a value this page does not take",
            f"state {text!r} is not one of {', '.join(s.value for s in WorkloadState)}.",
        ) from None


def _viewer(services: Services, request: Request) -> Scope | Response:
    """The viewer of a fragment or a download, or the 401 to answer instead (no sign-in form)."""
    try:
        return sign_in(services, token_of(request.headers, request.cookies))
    except NotSignedIn as exc:
        return PlainTextResponse(str(exc), status_code=401)
