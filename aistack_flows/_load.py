"""Pipelines from files: a Hera pipeline (.py) or Argo manifests (.yaml, .yml, .json).

Both come back as Hera objects, so that rendering and submitting go through one path: Hera's
build, with the pre-build hooks that manage GPU steps.
"""

from __future__ import annotations

import runpy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from hera.workflows import ClusterWorkflowTemplate, CronWorkflow, Workflow, WorkflowTemplate

from aistack_flows._errors import PipelineError, RequestError

__all__ = ["MAX_MANIFEST_BYTES", "LoadError", "Pipeline", "load_pipelines"]

Pipeline = Workflow | WorkflowTemplate | ClusterWorkflowTemplate | CronWorkflow
"""What a file may define (WorkflowTemplate and CronWorkflow are Workflow subclasses in Hera)."""

MAX_MANIFEST_BYTES = 4 << 20
"""The largest YAML or JSON file read (Kubernetes refuses objects above ~1.5 MiB anyway)."""

_KINDS: dict[str, type[Pipeline]] = {
    "Workflow": Workflow,
    "WorkflowTemplate": WorkflowTemplate,
    "ClusterWorkflowTemplate": ClusterWorkflowTemplate,
    "CronWorkflow": CronWorkflow,
}


class LoadError(ValueError):
    """A file could not be read as pipelines; the message names the file and what to change."""


def load_pipelines(path: Path) -> list[Pipeline]:
    """Every pipeline `path` defines, in order; raise `LoadError` when there is none.

    A Python file is run as a module named `__aistack__` (so its `if __name__ == "__main__":`
    block, which usually submits, does not run) and its module-level Hera workflows are taken.
    A YAML or JSON file holds one manifest per document.
    """
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    if path.suffix == ".py":
        found = _from_python(path)
    elif path.suffix in {".yaml", ".yml", ".json"}:
        found = _from_manifests(path)
    else:
        raise LoadError(f"{path}: give a Hera pipeline (.py) or Argo manifests (.yaml, .json)")
    if not found:
        raise LoadError(
            f"{path}: defines no Workflow, WorkflowTemplate, ClusterWorkflowTemplate or "
            "CronWorkflow (a Python file must keep them in module-level variables)"
        )
    return found


def _from_python(path: Path) -> list[Pipeline]:
    try:
        namespace = runpy.run_path(str(path), run_name="__aistack__")
    except (RequestError, PipelineError) as error:  # a declaration refused as the file ran
        raise LoadError(f"{path}: {error}") from error
    except Exception as error:  # the author's code: report it, whatever it raised
        raise LoadError(f"{path}: running it failed: {type(error).__name__}: {error}") from error
    return _unique(v for v in namespace.values() if isinstance(v, Pipeline))


def _unique(values: Iterable[Pipeline]) -> list[Pipeline]:
    seen: set[int] = set()
    found = []
    for value in values:
        if id(value) not in seen:
            seen.add(id(value))
            found.append(value)
    return found


def _from_manifests(path: Path) -> list[Pipeline]:
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise LoadError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB")
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise LoadError(f"{path}: not YAML or JSON: {error}") from error
    return [_from_manifest(path, index, document) for index, document in enumerate(documents)]


def _from_manifest(path: Path, index: int, document: Any) -> Pipeline:
    kind = document.get("kind") if isinstance(document, dict) else None
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise LoadError(
            f"{path}: document {index + 1} is a {kind!r}, not one of {', '.join(_KINDS)}"
        )
    try:
        pipeline = cls.from_dict(document)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise LoadError(f"{path}: document {index + 1} is not a valid {kind}: {error}") from error
    assert isinstance(pipeline, cls)
    return pipeline
