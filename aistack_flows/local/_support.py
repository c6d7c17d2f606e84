"""What a local run can do, checked before anything starts.

The local runner runs a workflow's pods as processes on this machine. A feature it cannot carry
out (a Kubernetes resource, a sidecar, an artifact repository, a template in the cluster) is
refused up front with a message that names the template and the field, never skipped: a
pipeline that runs locally does what it would do on a cluster, or does not start. Fields that
only steer a cluster (node selectors, service accounts, pod GC) do nothing here and are
accepted. The image of a step is not used (its command runs with this machine's programs): that
is a warning.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from scheduler_service import pod_contract as contract

__all__ = ["Support", "UnsupportedError", "calls", "check"]

Json = dict[str, Any]

_CLUSTER_ONLY = "has no meaning on one machine"

_REFUSED_TEMPLATE_TYPES = {
    "resource": "creates Kubernetes objects, which need a cluster",
    "suspend": "waits for someone to resume it on a cluster",
    "http": "is run by Argo's agent on a cluster",
    "plugin": "is run by an executor plugin on a cluster",
    "containerSet": "runs several containers in one pod",
    "data": "reads an artifact repository",
}
_TEMPLATE_FIELDS = {
    "name", "inputs", "outputs", "metadata", "container", "script", "dag", "steps",
    "retryStrategy", "activeDeadlineSeconds", "parallelism", "podSpecPatch", "volumes",
    # Cluster-only steering: accepted, nothing to do on one machine.
    "nodeSelector", "tolerations", "affinity", "serviceAccountName", "securityContext",
    "automountServiceAccountToken", "priorityClassName", "priority", "archiveLocation",
    "executor", "schedulerName", "metrics", "failFast", "hostAliases", "archiveLogs",
}  # fmt: skip
_TASK_FIELDS = {
    "name", "template", "arguments", "depends", "dependencies", "when", "withItems",
    "withParam", "withSequence", "continueOn",
}  # fmt: skip
_CONTAINER_FIELDS = {
    "name", "image", "command", "args", "env", "workingDir", "resources", "volumeMounts",
    "source", "imagePullPolicy", "ports", "securityContext", "livenessProbe", "readinessProbe",
    "startupProbe", "terminationMessagePath", "terminationMessagePolicy",
}  # fmt: skip
_SPEC_FIELDS = {
    "entrypoint", "templates", "arguments", "onExit", "parallelism", "volumes",
    "volumeClaimTemplates", "serviceAccountName", "podGC", "ttlStrategy", "archiveLogs",
    "workflowMetadata", "artifactRepositoryRef", "nodeSelector", "tolerations", "affinity",
    "securityContext", "podPriorityClassName", "priority", "metrics", "podMetadata",
    "automountServiceAccountToken", "executor", "imagePullSecrets", "schedulerName",
    "podDisruptionBudget", "shutdown", "volumeClaimGC",
}  # fmt: skip
_ARTIFACT_STORES = (
    "s3", "gcs", "http", "git", "oss", "hdfs", "artifactory", "azure", "fromExpression",
)  # fmt: skip
_VOLUMES = {"persistentVolumeClaim", "emptyDir", "hostPath"}
_PYTHON = {"python", "python3"}


class UnsupportedError(ValueError):
    """The workflow uses what a local run cannot do; the message lists every such use."""

    def __init__(self, workflow: str, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{workflow} cannot run on this machine:\n{listed}\n"
            "Run it on a cluster (aistack submit), or change what is listed."
        )


@dataclass(frozen=True, slots=True)
class Support:
    """What `check` found: warnings to show (the workflow can run)."""

    warnings: tuple[str, ...]


def check(manifest: Mapping[str, Any]) -> Support:
    """Check that every template the run can reach is something a local run can do.

    Raises `UnsupportedError` listing every problem; returns the warnings otherwise.
    """
    metadata = manifest.get("metadata") or {}
    title = metadata.get("name") or metadata.get("generateName") or "the workflow"
    spec: Mapping[str, Any] = manifest.get("spec") or {}
    problems: list[str] = []
    warnings: list[str] = []
    problems.extend(
        f"spec.{key}: {_CLUSTER_ONLY if key != 'templateDefaults' else 'is not supported'}; "
        "the local runner cannot carry it out"
        for key in spec
        if key not in _SPEC_FIELDS
    )
    templates = {t.get("name"): t for t in spec.get("templates") or ()}
    entry = spec.get("entrypoint")
    if not entry:
        problems.append("spec.entrypoint: a workflow needs an entrypoint")
    roots = [r for r in (entry, spec.get("onExit")) if r]
    reachable = set(_reachable(roots, templates, problems))
    for name, template in templates.items():
        if name in reachable:
            _check_template(template, problems, warnings)
    for volume in spec.get("volumes") or ():
        _check_volume(f"spec.volumes {volume.get('name')}", volume, problems)
    if problems:
        raise UnsupportedError(str(title), problems)
    return Support(warnings=tuple(dict.fromkeys(warnings)))


def _reachable(
    roots: list[str], templates: Mapping[str, Json], problems: list[str]
) -> Iterator[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        template = templates.get(name)
        if template is None:
            problems.append(f"template {name}: not defined in this workflow")
            continue
        yield name
        for task in calls(template):
            where = f"template {name}, task {task.get('name')}"
            if "templateRef" in task:
                ref = task["templateRef"]
                problems.append(
                    f"{where}: templateRef {ref.get('name')}/{ref.get('template')} lives on the "
                    "cluster; pass --templates DIR with its YAML (e.g. --templates templates/), "
                    "or copy the template into the workflow"
                )
            elif "inline" in task:
                problems.append(f"{where}: inline templates are not supported locally")
            elif "template" in task:
                stack.append(str(task["template"]))
            problems.extend(
                f"{where}: {key} is not supported locally"
                for key in task
                if key not in _TASK_FIELDS | {"templateRef", "inline"}
            )


def calls(template: Mapping[str, Any]) -> Iterator[Json]:
    """The tasks of a DAG template, or the steps of a steps template."""
    yield from (template.get("dag") or {}).get("tasks") or ()
    for group in template.get("steps") or ():
        yield from group or ()


def _check_template(template: Json, problems: list[str], warnings: list[str]) -> None:
    name = template.get("name")
    where = f"template {name}"
    for key, why in _REFUSED_TEMPLATE_TYPES.items():
        if key in template:
            problems.append(f"{where}: a {key} template {why}")
    for key in template:
        if key in _REFUSED_TEMPLATE_TYPES:
            continue
        if key not in _TEMPLATE_FIELDS:
            problems.append(f"{where}: {key} is not supported locally (steps run as processes)")
    container = template.get("script") or template.get("container")
    if container is not None:
        _check_container(where, container, problems, warnings, script="script" in template)
    _check_patch(where, template.get("podSpecPatch"), problems)
    for kind in ("inputs", "outputs"):
        for artifact in (template.get(kind) or {}).get("artifacts") or ():
            stores = [s for s in _ARTIFACT_STORES if s in artifact]
            if stores:
                problems.append(
                    f"{where}: {kind} artifact {artifact.get('name')} uses {stores[0]}; locally "
                    "artifacts are files passed between steps (use path and from)"
                )
            elif not artifact.get("path") and kind == "inputs" and "raw" not in artifact:
                problems.append(f"{where}: input artifact {artifact.get('name')} needs a path")
    for volume in template.get("volumes") or ():
        _check_volume(f"{where} volume {volume.get('name')}", volume, problems)


def _check_container(
    where: str,
    container: Mapping[str, Any],
    problems: list[str],
    warnings: list[str],
    *,
    script: bool,
) -> None:
    problems.extend(
        f"{where}: container field {key} is not supported locally (envFrom, secrets and the "
        "like exist only on a cluster)"
        for key in container
        if key not in _CONTAINER_FIELDS
    )
    problems.extend(
        f"{where}: env {variable.get('name')} reads valueFrom (a secret, a config map or the "
        "pod), which exists only on a cluster; give a value"
        for variable in container.get("env") or ()
        if "valueFrom" in variable
    )
    command = list(container.get("command") or ())
    if not command and not script:
        problems.append(
            f"{where}: the container has no command; locally the image's entrypoint is unknown, "
            "so give the command"
        )
    image = container.get("image")
    if image:
        program = command[0] if command else "python"
        how = (
            "with this environment's Python"
            if program in _PYTHON
            else f"as {program} on this machine"
        )
        warnings.append(f"{where}: image {image} is not used; the step runs {how}")


_PATCHABLE = {"schedulingGates", "hostname", "subdomain", "terminationGracePeriodSeconds"}
"""What a pod spec patch may set locally: the scheduler's gate (the runner is the gate here), a
gang member's DNS name (members meet on 127.0.0.1 here) and the grace period of a stop."""


def _check_patch(where: str, patch: Any, problems: list[str]) -> None:
    """Refuse a pod spec patch that changes what a local process cannot have."""
    if patch is None:
        return
    try:
        parsed = yaml.safe_load(patch) if isinstance(patch, str) else patch
    except yaml.YAMLError:
        problems.append(f"{where}: podSpecPatch is not JSON or YAML")
        return
    if not isinstance(parsed, Mapping):
        problems.append(f"{where}: podSpecPatch must be an object")
        return
    others = sorted(set(parsed) - _PATCHABLE)
    if others:
        problems.append(
            f"{where}: podSpecPatch sets {', '.join(others)}, which a local process cannot have "
            f"({json.dumps(parsed)[:120]})"
        )
    grace = parsed.get("terminationGracePeriodSeconds")
    if grace is not None and (
        isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= 86_400
    ):
        problems.append(f"{where}: terminationGracePeriodSeconds must be 0 to 86400 seconds")
    gates = [g.get("name") for g in parsed.get("schedulingGates") or () if isinstance(g, Mapping)]
    if any(g != contract.SCHEDULING_GATE for g in gates):
        problems.append(f"{where}: podSpecPatch adds scheduling gates {gates} that no one removes")


def _check_volume(where: str, volume: Mapping[str, Any], problems: list[str]) -> None:
    kinds = set(volume) - {"name"}
    if not kinds & _VOLUMES:
        problems.append(
            f"{where}: {', '.join(sorted(kinds)) or 'no source'} volumes exist only on a cluster; "
            "locally a volume is a directory (persistentVolumeClaim, emptyDir or hostPath)"
        )
