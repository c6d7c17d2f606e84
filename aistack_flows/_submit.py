"""Render pipelines as YAML, or submit them: straight to Kubernetes, or through Argo Server.

Every path builds the pipeline with Hera (`to_dict`), so the pre-build hooks manage its GPU
steps, and a `PipelineError` stops it before anything reaches the cluster.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import yaml
from hera.workflows import WorkflowsService
from kubernetes.client import ApiClient, CustomObjectsApi
from pydantic.warnings import PydanticDeprecatedSince20

from aistack_flows._load import Pipeline

__all__ = [
    "ARGO_GROUP",
    "ARGO_VERSION",
    "Submitted",
    "plural",
    "render",
    "submit",
    "submit_to_argo",
]

ARGO_GROUP = "argoproj.io"
ARGO_VERSION = "v1alpha1"

_PLURALS = {
    "Workflow": "workflows",
    "WorkflowTemplate": "workflowtemplates",
    "ClusterWorkflowTemplate": "clusterworkflowtemplates",
    "CronWorkflow": "cronworkflows",
}


@dataclass(frozen=True, slots=True)
class Submitted:
    """What the cluster made of a submitted pipeline."""

    kind: str
    name: str
    namespace: str | None
    """None for a ClusterWorkflowTemplate (cluster-scoped)."""

    def __str__(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.kind.lower()} {self.name} created{where}"


def plural(kind: str) -> str:
    """The Argo resource name of a manifest kind (`Workflow` -> `workflows`)."""
    return _PLURALS[kind]


def render(pipelines: Iterable[Pipeline]) -> str:
    """The pipelines as a YAML stream, managed, in the key order Argo's docs use."""
    return "---\n".join(
        yaml.safe_dump(_ordered(p.to_dict()), sort_keys=False, width=100) for p in pipelines
    )


def _ordered(manifest: Mapping[str, Any]) -> dict[str, Any]:
    first = ("apiVersion", "kind", "metadata", "spec")
    return {
        **{k: manifest[k] for k in first if k in manifest},
        **{k: v for k, v in manifest.items() if k not in first},
    }


def submit(pipeline: Pipeline, api_client: ApiClient, *, namespace: str) -> Submitted:
    """Create the pipeline with the Kubernetes API (no Argo Server needed).

    `namespace` is used unless the manifest names its own. Raises the client's `ApiException`
    when the API server refuses it (its message says why).
    """
    manifest = pipeline.to_dict()
    kind: str = manifest["kind"]
    custom = CustomObjectsApi(api_client)
    if kind == "ClusterWorkflowTemplate":
        created: Any = custom.create_cluster_custom_object(
            ARGO_GROUP, ARGO_VERSION, plural(kind), manifest
        )
        return Submitted(kind, created["metadata"]["name"], None)
    target = manifest["metadata"].get("namespace") or namespace
    created = custom.create_namespaced_custom_object(
        ARGO_GROUP, ARGO_VERSION, target, plural(kind), manifest
    )
    return Submitted(kind, created["metadata"]["name"], target)


def submit_to_argo(
    pipeline: Pipeline, *, host: str, token: str | None, namespace: str, verify_ssl: bool = True
) -> Submitted:
    """Create the pipeline through Argo Server (Hera's `WorkflowsService`), as `w.create()` does."""
    if pipeline.namespace is None:
        pipeline.namespace = namespace
    # Hera opens a session per service and never closes it: give it one that is closed here.
    with requests.Session() as session, warnings.catch_warnings():
        pipeline.workflows_service = WorkflowsService(
            host=host, token=token, verify_ssl=verify_ssl, session=session
        )
        # Hera 7.1's client serialises with pydantic's deprecated `.json()`: its concern, not
        # the author's.
        warnings.simplefilter("ignore", PydanticDeprecatedSince20)
        created: Any = pipeline.create()
    kind = type(pipeline).__name__
    metadata = created.metadata
    return Submitted(kind, metadata.name, getattr(metadata, "namespace", None) or namespace)
