"""Templates and links: turning a page's model into HTML (Jinja2, autoescaped, strict).

A page is rendered two ways from one template: whole (the header, the navigation and the live
region around it) and as the live region alone, which is what a live update sends. Links are
built from the mount point the dashboard is served under (`/ui` in the service).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from scheduler_service.dashboard._format import clock, duration, gpus, hours, memory
from scheduler_service.dashboard._svg import bar, columns

__all__ = ["Links", "render", "templates"]


@dataclass(frozen=True, slots=True)
class Links:
    """URLs of the dashboard's pages under `base` (its mount point, e.g. `/ui`)."""

    base: str

    def to(self, path: str, query: Mapping[str, object] | None = None) -> str:
        """`base` + `path`, with the query's non-empty values."""
        kept = {k: str(v) for k, v in (query or {}).items() if v is not None and v != ""}
        return f"{self.base}{path}" + (f"?{urlencode(kept)}" if kept else "")

    def workload(self, namespace: str, name: str) -> str:
        """A workload's page."""
        return f"{self.base}/workloads/{quote(namespace, safe='')}/{quote(name, safe='')}"

    def workflow(self, namespace: str, name: str) -> str:
        """The steps of an Argo Workflow (the workload list, filtered)."""
        return f"{self.base}/workflows/{quote(namespace, safe='')}/{quote(name, safe='')}"

    def node(self, name: str) -> str:
        """The nodes view, on the page of node `name`."""
        return self.to("/nodes", {"q": name})

    def static(self, name: str) -> str:
        """A file of the dashboard's static folder."""
        return f"{self.base}/static/{name}"


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("scheduler_service.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        gpus=gpus, memory=memory, duration=duration, clock=clock, hours=hours
    )
    environment.globals.update(bar=bar, columns=columns)
    return environment


templates = _environment()
"""The dashboard's templates, loaded once (Jinja2 keeps them compiled)."""


def render(name: str, context: Mapping[str, Any]) -> str:
    """Template `name` rendered with `context`."""
    return templates.get_template(name).render(context)
