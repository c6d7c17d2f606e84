"""A pod's step as a local process: its command, environment, files and limits (`PodSpec`).

Argo would build a pod from the template; the local runner builds a `PodSpec` instead, from the
template with its placeholders already resolved. A container's paths are not the machine's, so
every absolute path the template declares (input and output artifacts, output parameters,
volume mounts) is given a place under the pod's own directory, or its volume's (`Paths`), and
wherever the command, arguments, script or environment write that path, it is replaced by the
local one. A path the step builds at run time from pieces is not replaced: write it whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import PurePosixPath
from typing import Any

import yaml
from kubernetes.utils import parse_quantity

__all__ = ["Paths", "PodSpec", "pod_name", "pod_spec"]

Json = dict[str, Any]


@dataclass(slots=True)
class PodSpec:
    """What the runner needs to run one pod's step as a local process (JSON in the database)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    workdir: str
    directory: str
    """The pod's own directory: its `root`, spec, log, stdout and exit record."""
    pod: Json
    """The pod as Argo would build it (metadata and resources): what the scheduler reads."""
    script: str | None = None
    script_path: str | None = None
    input_artifacts: list[list[str]] = field(default_factory=list)
    """[source, destination] pairs copied in before the step starts."""
    raw_artifacts: list[list[str]] = field(default_factory=list)
    """[data, destination] pairs written before the step starts."""
    output_artifacts: list[Json] = field(default_factory=list)
    """{"name", "path", "optional"}: copied out after the step succeeds."""
    output_parameters: list[Json] = field(default_factory=list)
    """{"name", "path", "default"}: read after the step ends."""
    directories: list[str] = field(default_factory=list)
    """Directories to create before the step starts (parents of declared paths, volumes)."""
    cpu_milli: int = 0
    memory_mib: int = 0
    grace_seconds: float | None = None
    """The pod's terminationGracePeriodSeconds (None: the runner's setting)."""
    deadline_seconds: float | None = None
    image: str | None = None

    def to_json(self) -> Json:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PodSpec:
        return cls(**data)


def pod_name(workflow: str, template: str, node_id: str) -> str:
    """Argo's pod name for a node: `<workflow>-<template>-<fnv-1a 32 of the node name>`."""
    digest = 0x811C9DC5
    for byte in node_id.encode():
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    prefix = f"{workflow}-{template}"
    if len(prefix) > 242:  # Argo's rule: the name stays a valid pod name (253 characters)
        prefix = prefix[:242]
    return f"{prefix}-{digest}"


class Paths:
    """Where a pod's declared absolute paths live on this machine (see the module docstring)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.mapping: dict[str, str] = {}

    def declare(self, path: str, local: str | None = None) -> str:
        """Give the absolute `path` its local place (`local`, else under `root`); return it."""
        if not path.startswith("/"):
            return path
        clean = str(PurePosixPath(path))
        self.mapping[clean] = local or f"{self.root}{clean}"
        return self.mapping[clean]

    def rewrite(self, text: str) -> str:
        """`text` with every declared path, as a whole path, replaced by its local place."""
        if not self.mapping:
            return text
        pattern = "|".join(re.escape(p) for p in sorted(self.mapping, key=len, reverse=True))
        return re.sub(
            rf"(?<![\w./-])({pattern})(?![\w.-])", lambda m: self.mapping[m.group(1)], text
        )

    def local(self, path: str) -> str:
        return self.rewrite(path) if path.startswith("/") else f"{self.root}/{path}"


def pod_spec(
    template: Json,
    *,
    name: str,
    directory: str,
    artifacts: Mapping[str, Json],
    volumes: Mapping[str, Json],
    claims: set[str],
    run_directory: str,
) -> PodSpec:
    """The local form of a resolved pod template (`container` or `script`).

    `artifacts` are the inputs the call gives ({"path", "from"} or {"path", "raw"}); `volumes`
    the workflow's and the template's volumes by name; `claims` the workflow's
    volumeClaimTemplates, kept per run in `run_directory`.
    """
    paths = Paths(root=f"{directory}/root")
    script = template.get("script")
    container: Json = dict(script or template.get("container") or {})
    directories: list[str] = []
    for mount in container.get("volumeMounts") or ():
        local = _volume_directory(mount["name"], volumes, claims, run_directory, paths.root)
        sub = mount.get("subPath")
        local = f"{local}/{sub}" if sub else local
        directories.append(local)
        paths.declare(mount["mountPath"], local)
    inputs: list[list[str]] = []
    raw: list[list[str]] = []
    for artifact in artifacts.values():
        destination = paths.declare(str(artifact["path"]))
        if "raw" in artifact:
            raw.append([str(artifact["raw"]), destination])
        else:
            inputs.append([str(artifact["from"]), destination])
    outputs = template.get("outputs") or {}
    output_artifacts = [
        {
            "name": a["name"],
            "path": paths.declare(str(a["path"])),
            "optional": bool(a.get("optional")),
        }
        for a in outputs.get("artifacts") or ()
    ]
    output_parameters = []
    for parameter in outputs.get("parameters") or ():
        source = parameter.get("valueFrom") or {}
        path = source.get("path")
        output_parameters.append(
            {
                "name": parameter["name"],
                "path": paths.declare(str(path)) if path else None,
                "default": source.get("default"),
            }
        )
    command = [str(a) for a in container.get("command") or ()]
    arguments = [str(a) for a in container.get("args") or ()]
    script_path = None
    if script is not None:
        script_path = f"{directory}/script"
        command = [*(command or ["python"]), script_path]
    directories.extend(
        str(PurePosixPath(path).parent)
        for path in (
            *[p for _, p in inputs],
            *[p for _, p in raw],
            *[a["path"] for a in output_artifacts],
            *[p["path"] for p in output_parameters if p["path"]],
        )
    )
    env = {
        str(e["name"]): paths.rewrite(str(e.get("value", ""))) for e in container.get("env") or ()
    }
    workdir = container.get("workingDir")
    resources = container.get("resources") or {}
    amounts = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    metadata = template.get("metadata") or {}
    return PodSpec(
        name=name,
        argv=[paths.rewrite(a) for a in (*command, *arguments)],
        env=env,
        workdir=paths.local(str(workdir)) if workdir else paths.root,
        directory=directory,
        pod={
            "metadata": {
                "name": name,
                "labels": dict(metadata.get("labels") or {}),
                "annotations": dict(metadata.get("annotations") or {}),
            },
            "spec": {"containers": [{"name": "main", "resources": resources}]},
        },
        script=paths.rewrite(str(script["source"])) if script is not None else None,
        script_path=script_path,
        input_artifacts=inputs,
        raw_artifacts=raw,
        output_artifacts=output_artifacts,
        output_parameters=output_parameters,
        directories=sorted(set(directories)),
        cpu_milli=int(_quantity(amounts.get("cpu")) * 1000),
        memory_mib=int(_quantity(amounts.get("memory")) / 2**20),
        deadline_seconds=optional_float(template.get("activeDeadlineSeconds")),
        grace_seconds=_grace(template.get("podSpecPatch")),
        image=container.get("image"),
    )


def _grace(patch: Any) -> float | None:
    """The grace period a pod spec patch sets (checked by `check` already), or None."""
    if not patch:
        return None
    parsed = yaml.safe_load(patch) if isinstance(patch, str) else patch
    return optional_float((parsed or {}).get("terminationGracePeriodSeconds"))


def _volume_directory(
    name: str, volumes: Mapping[str, Json], claims: set[str], run: str, root: str
) -> str:
    """A volume's directory.

    A volumeClaimTemplate's lives with the run (every attempt of every step sees it); a claim by
    name with the state directory (it outlasts runs, as a PersistentVolumeClaim does); a
    hostPath is that path; anything else (emptyDir) is the pod's own.
    """
    if name in claims:
        return f"{run}/volumes/{name}"
    volume = volumes.get(name, {})
    if "persistentVolumeClaim" in volume:
        state = PurePosixPath(run).parent.parent
        return f"{state}/claims/{volume['persistentVolumeClaim']['claimName']}"
    if "hostPath" in volume:
        return str(volume["hostPath"]["path"])
    return f"{PurePosixPath(root).parent}/volumes/{name}"


def _quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("500m", "2Gi"); 0 for none or one that does not parse."""
    if value is None:
        return Decimal(0)
    try:
        return Decimal(parse_quantity(value))  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, InvalidOperation):
        return Decimal(0)


def optional_float(value: Any) -> float | None:
    """`value` as a float, or None when it is absent or not a number."""
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
