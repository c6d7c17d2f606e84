"""From an author's workflow to one whose GPU steps carry the scheduler's contract on their pods.

`manage` is a pure function on Argo manifests (the dicts Hera's `to_dict()` makes and YAML
files hold): Workflow, WorkflowTemplate, ClusterWorkflowTemplate and CronWorkflow. Argo builds
each step's pod from its template (`metadata` becomes the pod's labels and annotations, the
container's resources and env its own, `podSpecPatch` is merged into the pod spec), so the
contract is written there, per GPU template:

- labels: the queue (the step's, else the workflow's `aistack.io/queue` label), the kind, and
  for a gang its name; annotations: the slice, priority, preemptibility, pools, models, topology
  and gang size, as `scheduler_service.pod_contract` names them;
- the main container: whole GPUs as `nvidia.com/gpu`, the checkpoint and gang variables;
- `podSpecPatch`: the scheduling gate (so a cluster without the scheduler holds the pod rather
  than give it GPUs), and a gang member's DNS name;
- `retryStrategy` (preemptible steps): reclaims retried for free (see `_retry`);
- every task that calls a gang template fans it out once per rank (see `_gang`).

Templates that ask for no GPU, exit handlers among them, are left exactly as they are, and
Argo's own `init` and `wait` containers are never touched (only the template's main container
is). `manage` is idempotent: a managed manifest is a fixed point. Every problem in the whole
manifest is reported at once (`PipelineError`), each naming the step and the field.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from aistack_flows._checkpoint import ATTEMPT_ENV, checkpoint_environment
from aistack_flows._declare import DECLARATION_PREFIX, GpuRequest, is_placeholder
from aistack_flows._errors import PipelineError, Problem
from aistack_flows._gang import RANK_PARAMETER, gang_environment, gang_name, gang_pod_spec
from aistack_flows._retry import compose_retry_strategy
from scheduler_service import pod_contract as contract

__all__ = ["WORKFLOW_KINDS", "manage", "uses_scheduler"]

WORKFLOW_KINDS = frozenset(
    {"Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow"}
)

DESCRIPTION_ANNOTATION = "workflows.argoproj.io/description"
"""Shown under the workflow's name in the Argo UI's list (markdown)."""

_FAN_OUT_FIELDS = ("withItems", "withParam", "withSequence")

_REQUEST_KEYS = frozenset(
    {
        contract.QUEUE_LABEL,
        contract.KIND_LABEL,
        contract.GANG_LABEL,
        contract.GANG_SIZE_ANNOTATION,
        contract.PRIORITY_ANNOTATION,
        contract.PREEMPTIBLE_ANNOTATION,
        contract.GPU_MEMORY_ANNOTATION,
        contract.GPU_COMPUTE_ANNOTATION,
        contract.POOLS_ANNOTATION,
        contract.GPU_MODELS_ANNOTATION,
        contract.TOPOLOGY_ANNOTATION,
    }
)
"""What a pod says to the scheduler; other `aistack.io/` keys (e.g. a test harness's) are not."""

Json = dict[str, Any]


def uses_scheduler(manifest: Mapping[str, Any]) -> bool:
    """Whether the manifest asks for the scheduler anywhere (any key the scheduler reads).

    Only such workflows are managed: plain Hera code that never mentions the scheduler builds
    exactly as before.
    """
    spec = _spec(manifest)
    metadata_sources = [manifest.get("metadata") or {}, spec.get("podMetadata") or {}]
    metadata_sources += [t.get("metadata") or {} for t in spec.get("templates") or ()]
    return any(_declares(metadata) for metadata in metadata_sources)


def manage(manifest: Mapping[str, Any]) -> Json:
    """A copy of `manifest` whose GPU steps carry the contract; raise `PipelineError` if it cannot.

    See the module docstring for what is written where.
    """
    managed: Json = copy.deepcopy(dict(manifest))
    metadata = managed.setdefault("metadata", {})
    title = metadata.get("name") or metadata.get("generateName") or "<unnamed>"
    kind = managed.get("kind")
    if kind not in WORKFLOW_KINDS:
        raise PipelineError(
            title,
            [("workflow", Problem("kind", f"{kind!r} is not one of {sorted(WORKFLOW_KINDS)}"))],
        )
    spec = _spec(managed)
    report = _Report()
    default_queue = (metadata.get("labels") or {}).get(contract.QUEUE_LABEL)
    _check_pod_metadata(spec, report)
    templates: dict[str, Json] = {t.get("name", ""): t for t in spec.get("templates") or ()}
    requests: dict[str, GpuRequest] = {}
    for name, template in templates.items():
        request = _read(template, report.at(f"step {name}"))
        if request is not None:
            requests[name] = request
    calls = list(_calls(templates.values()))
    for name, request in requests.items():
        where = report.at(f"step {name}")
        queue = request.queue or default_queue
        if queue is None:
            where.add(
                "queue",
                "no queue: name one (gpus(..., queue=...)) or label the workflow "
                f"{contract.QUEUE_LABEL}: <queue> as the default for its GPU steps",
            )
            continue
        _write_contract(templates[name], request, queue, where)
        if request.gang is not None:
            _fan_out(name, request, spec=spec, calls=calls, templates=templates, report=report)
    if report.problems:
        raise PipelineError(title, report.problems)
    if requests:
        _describe(managed, requests, default_queue)
    return managed


# -- reading -------------------------------------------------------------------------------------


class _Report:
    """Problems found so far, each with where it was found."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, Problem]] = []

    def at(self, where: str) -> _Where:
        return _Where(self, where)


@dataclass(frozen=True, slots=True)
class _Where:
    report: _Report
    where: str

    def add(self, field: str, message: str) -> None:
        self.report.problems.append((self.where, Problem(field, message)))

    def extend(self, problems: list[Problem]) -> None:
        self.report.problems += [(self.where, p) for p in problems]


def _spec(manifest: Mapping[str, Any]) -> Json:
    spec: Json = manifest.get("spec") or {}
    if manifest.get("kind") == "CronWorkflow":
        workflow_spec: Json = spec.get("workflowSpec") or {}
        return workflow_spec
    return spec


def _check_pod_metadata(spec: Mapping[str, Any], report: _Report) -> None:
    """The queue label where it would reach every pod of the workflow is refused."""
    if contract.QUEUE_LABEL in ((spec.get("podMetadata") or {}).get("labels") or {}):
        report.at("workflow").add(
            "podMetadata.labels",
            f"{contract.QUEUE_LABEL} there would put every pod, CPU-only steps and exit "
            "handlers too, in the scheduler's queue; label the workflow itself (its default "
            "queue for GPU steps) or name the queue per step",
        )
    defaults = ((spec.get("templateDefaults") or {}).get("metadata") or {}).get("labels") or {}
    if contract.QUEUE_LABEL in defaults:
        report.at("workflow").add(
            "templateDefaults.metadata.labels",
            f"{contract.QUEUE_LABEL} there would put every template in the queue; name it per "
            "GPU step or as the workflow's label",
        )


def _main_container(template: Mapping[str, Any]) -> Json | None:
    """The step's own container (Argo adds `wait` and `init` beside it; those are not ours)."""
    found: Json | None = template.get("container") or template.get("script")
    return found


def _resource_gpus(container: Mapping[str, Any]) -> str | None:
    resources = container.get("resources") or {}
    for part in ("limits", "requests"):
        value = (resources.get(part) or {}).get(contract.GPU_RESOURCE)
        if value is not None:
            return str(value)
    return None


def _read(template: Json, where: _Where) -> GpuRequest | None:
    """The template's request, or None for a CPU-only step (problems go to `where`)."""
    metadata = template.get("metadata") or {}
    for part in ("initContainers", "sidecars"):
        if any(_resource_gpus(c) for c in template.get(part) or ()):
            where.add(
                part,
                f"asks for {contract.GPU_RESOURCE}; give the GPUs to the step's own container "
                "(the scheduler places the step by what its main container asks)",
            )
    main = _main_container(template)
    if main is None:
        nested = template.get("containerSet") or {}
        if any(_resource_gpus(c) for c in nested.get("containers") or ()):
            where.add(
                "containerSet",
                "a container set cannot ask the scheduler for GPUs; use a container or script "
                "template",
            )
        if _declares(metadata):
            where.add(
                "metadata",
                "only container and script steps can ask for GPUs; this step runs no pod of "
                "its own (a DAG, steps, resource or suspend template)",
            )
        return None
    parsed = GpuRequest.from_metadata(
        metadata.get("labels") or {},
        metadata.get("annotations") or {},
        resource_gpus=_resource_gpus(main),
    )
    if isinstance(parsed, list):
        where.extend(parsed)
        return None
    if parsed is None and _declares(metadata):
        where.add(
            "metadata",
            "declares aistack.io settings but asks for no GPU; only GPU steps are scheduled "
            "(use gpus(N) or gpu_slice(...)), or remove the settings",
        )
    return parsed


def _declares(metadata: Mapping[str, Any]) -> bool:
    """Whether labels or annotations say anything to the scheduler."""
    keys = [*(metadata.get("labels") or {}), *(metadata.get("annotations") or {})]
    return any(k in _REQUEST_KEYS or k.startswith(DECLARATION_PREFIX) for k in keys)


# -- writing the contract ------------------------------------------------------------------------


def _write_contract(template: Json, request: GpuRequest, queue: str, where: _Where) -> None:
    metadata = template.setdefault("metadata", {})
    ours, contract_annotations = request.pod_labels_and_annotations(queue)
    labels = metadata.setdefault("labels", {})
    labels.update(ours)
    annotations: Json = {
        k: v
        for k, v in (metadata.get("annotations") or {}).items()
        if not k.startswith(DECLARATION_PREFIX) and k not in ours
    }
    annotations.update(contract_annotations)
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    main = _main_container(template)
    assert main is not None  # only container and script steps have a request
    if request.gpus is not None:
        resources = main.setdefault("resources", {})
        resources.setdefault("limits", {})[contract.GPU_RESOURCE] = str(request.gpus)
        if contract.GPU_RESOURCE in (resources.get("requests") or {}):
            resources["requests"][contract.GPU_RESOURCE] = str(request.gpus)
    if request.is_preemptible:
        strategy = compose_retry_strategy(template.get("retryStrategy"), request.reclaim_retries)
        if isinstance(strategy, Problem):
            where.extend([strategy])
            return
        template["retryStrategy"] = strategy
    retried = "retryStrategy" in template
    environment: dict[str, str] = {}
    if request.checkpoint is not None:
        environment |= checkpoint_environment(request.checkpoint, gang=request.gang is not None)
    if retried:
        environment[ATTEMPT_ENV] = "{{retries}}"
    pod_spec: Json = {"schedulingGates": [{"name": contract.SCHEDULING_GATE}]}
    if request.gang is not None:
        labels[contract.GANG_LABEL] = gang_name(retried=retried)
        labels[contract.GANG_DNS_LABEL] = "true"
        environment |= {
            e["name"]: e["value"] for e in gang_environment(size=str(request.gang), retried=retried)
        }
        pod_spec |= gang_pod_spec(retried=retried)
        _add_input(template, RANK_PARAMETER)
    _set_environment(main, environment)
    _patch_pod_spec(template, pod_spec, where)


def _add_input(template: Json, name: str) -> None:
    parameters = template.setdefault("inputs", {}).setdefault("parameters", [])
    if all(p.get("name") != name for p in parameters):
        parameters.append({"name": name})


def _set_environment(container: Json, values: Mapping[str, str]) -> None:
    """Set `values` in the container's env, replacing entries of the same name, in order."""
    if not values:
        return
    kept = [e for e in container.get("env") or () if e.get("name") not in values]
    container["env"] = kept + [{"name": k, "value": v} for k, v in values.items()]


def _patch_pod_spec(template: Json, ours: Mapping[str, Any], where: _Where) -> None:
    """Merge `ours` into the template's podSpecPatch (a JSON or YAML string, as Argo takes it)."""
    text = template.get("podSpecPatch")
    patch: Json = {}
    if text:
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError:
            loaded = None
        if not isinstance(loaded, dict):
            where.add(
                "podSpecPatch",
                "must be a JSON or YAML object for the scheduler's gate to be added to it "
                "(a whole patch from a parameter cannot be combined)",
            )
            return
        patch = loaded
    gates = [
        g for g in patch.get("schedulingGates") or () if g != {"name": contract.SCHEDULING_GATE}
    ]
    for key, value in ours.items():
        if key == "schedulingGates":
            continue
        if key in patch and patch[key] != value:
            where.add(
                f"podSpecPatch.{key}",
                f"is set to {patch[key]!r}, but a gang member's {key} is the scheduler's "
                "(its DNS name); remove it",
            )
            return
        patch[key] = value
    patch["schedulingGates"] = [*ours["schedulingGates"], *gates]
    template["podSpecPatch"] = json.dumps(patch, sort_keys=True, separators=(",", ":"))


# -- gangs: fan-out and parallelism --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    """A task or step of `caller` that runs a template of this manifest."""

    caller: str
    task: Json


def _calls(templates: Any) -> Iterator[_Call]:
    for template in templates:
        caller = template.get("name", "")
        for task in (template.get("dag") or {}).get("tasks") or ():
            yield _Call(caller, task)
        for group in template.get("steps") or ():
            for step in group:
                yield _Call(caller, step)


def _fan_out(
    name: str,
    request: GpuRequest,
    *,
    spec: Json,
    calls: list[_Call],
    templates: Mapping[str, Json],
    report: _Report,
) -> None:
    """Make every call of gang template `name` run it once per rank; check it can run at once."""
    mine = [c for c in calls if c.task.get("template") == name]
    where = report.at(f"step {name}")
    if spec.get("entrypoint") == name or not mine:
        if spec.get("entrypoint") == name:
            where.add(
                "gang",
                "a gang step must be called from a DAG or steps template (its pods are one "
                "fan-out, one per rank); it cannot be the entrypoint",
            )
        return
    size = request.gang
    assert size is not None
    for call in mine:
        at = report.at(f"step {name} (called as {call.task.get('name')} from {call.caller})")
        count = _static_count(size, call.task, at)
        if count is None:
            continue
        _check_fan_out(call.task, count, at)
        _check_parallelism(count, call, spec, templates, at)
        arguments = call.task.setdefault("arguments", {}).setdefault("parameters", [])
        arguments[:] = [a for a in arguments if a.get("name") != RANK_PARAMETER]
        arguments.append({"name": RANK_PARAMETER, "value": "{{item}}"})


def _static_count(size: int | str, task: Json, at: _Where) -> str | None:
    """How many pods the call makes: the gang size, or what the call passes for its parameter."""
    if isinstance(size, int):
        return str(size)
    parameter = size.removeprefix("{{inputs.parameters.").removesuffix("}}")
    if not is_placeholder(size) or parameter == size:
        at.add("gang", f"{size!r}: a placeholder gang size must be {{{{inputs.parameters.NAME}}}}")
        return None
    passed = [
        a.get("value")
        for a in (task.get("arguments") or {}).get("parameters") or ()
        if a.get("name") == parameter
    ]
    if not passed:
        at.add(
            "gang",
            f"the gang size is the input parameter {parameter!r}; pass it as an argument here",
        )
        return None
    return str(passed[0])


def _check_fan_out(task: Json, count: str, at: _Where) -> None:
    """The call's fan-out must be ranks 0..count-1; with none, add it."""
    present = [f for f in _FAN_OUT_FIELDS if f in task]
    if not present:
        task["withSequence"] = {"count": count}
        return
    if present == ["withSequence"]:
        sequence = task["withSequence"]
        starts_at_zero = str(sequence.get("start", "0")) == "0" and "end" not in sequence
        if starts_at_zero and str(sequence.get("count")) == count:
            return
    ranks = [str(r) for r in range(int(count))] if count.isdigit() else None
    if present == ["withItems"] and [str(i) for i in task["withItems"]] == ranks:
        return
    at.add(
        present[0],
        f"a gang of {count} runs one pod per rank: fan it out as withSequence count {count} "
        "(0..N-1), or leave the fan-out to the scheduler's layer; withParam cannot be checked "
        "before the workflow runs",
    )


def _check_parallelism(
    count: str, call: _Call, spec: Json, templates: Mapping[str, Json], at: _Where
) -> None:
    """Argo must be allowed to create all the gang's pods at once, or it never starts."""
    if not count.isdigit():
        return  # known only when the workflow runs
    limits = [("the workflow's parallelism", spec.get("parallelism"))]
    limits.append(
        (f"template {call.caller}'s parallelism", templates.get(call.caller, {}).get("parallelism"))
    )
    for what, limit in limits:
        if isinstance(limit, int) and limit < int(count):
            at.add(
                "gang",
                f"{what} is {limit}, so Argo would never create all {count} pods of the gang "
                "at once and it would wait forever; raise it to at least the gang size",
            )


# -- the workflow as the Argo UI lists it --------------------------------------------------------


def _number(value: float | str | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _describe(managed: Json, requests: Mapping[str, GpuRequest], default_queue: str | None) -> None:
    """Say in the workflow's description what its GPU steps ask for (unless the author did)."""
    lines = []
    for name, request in sorted(requests.items()):
        size = (
            f"{request.gpus} GPU(s)"
            if request.gpus is not None
            else f"slice {_number(request.memory_gib)} GiB / {request.compute_percent}%"
        )
        if request.gang is not None:
            size = f"{request.gang} pods x {size}"
        lines.append(f"{name}: {request.kind}, {size}, queue {request.queue or default_queue}")
    text = "AI-Stack GPU steps: " + "; ".join(lines)
    if managed.get("kind") == "CronWorkflow":
        # Each run is a new Workflow: the workflow spec's metadata is what the controller puts
        # on it (the CronWorkflow's own labels are not copied).
        target = _spec(managed).setdefault("workflowMetadata", {})
        labels = managed["metadata"].get("labels") or {}
        if contract.QUEUE_LABEL in labels:
            target.setdefault("labels", {}).setdefault(
                contract.QUEUE_LABEL, labels[contract.QUEUE_LABEL]
            )
    else:
        target = managed["metadata"]
    target.setdefault("annotations", {}).setdefault(DESCRIPTION_ANNOTATION, text)
