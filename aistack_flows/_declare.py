"""What a step asks of the scheduler: the typed declaration and its annotation form.

A pipeline author declares a GPU step with `gpus(2, queue="research")` or
`gpu_slice(memory_gib=8, compute_percent=25)` and passes the result to the Hera template as
`annotations=`. The declaration travels as annotations because that is what every Hera template
(and every Argo template in YAML) already has; `manage` turns it into the pod contract when the
workflow is built. Reading it back (`GpuRequest.from_template`) validates it again, so a
hand-written annotation gets the same checks and errors as one made by these functions.

Numbers may be Argo placeholders (`"{{inputs.parameters.gpus}}"`) in reusable templates: those
are checked by the webhook when the pod is created, not here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypedDict, Unpack

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
    model_validator,
)

from aistack_flows._errors import Problem, RequestError
from scheduler_service import pod_contract as contract

__all__ = [
    "DECLARATION_PREFIX",
    "GpuRequest",
    "Kind",
    "StepOptions",
    "Topology",
    "gpu_slice",
    "gpus",
    "is_placeholder",
    "pod_metadata",
]

DECLARATION_PREFIX = "flows.aistack.io/"
"""Annotations only aistack_flows reads; `manage` turns them into the contract and removes them."""

GPUS_DECLARATION = f"{DECLARATION_PREFIX}gpus"
CHECKPOINT_DECLARATION = f"{DECLARATION_PREFIX}checkpoint"
RECLAIM_RETRIES_DECLARATION = f"{DECLARATION_PREFIX}reclaim-retries"

DEFAULT_RECLAIM_RETRIES = 10
"""How many reclaims (or preemptions) of one step Argo retries for free, by default."""

MAX_RECLAIM_RETRIES = 1000

Kind = Literal["build", "train", "infer"]
Topology = Literal[
    "zone",
    "zone:preferred",
    "block",
    "block:preferred",
    "rack",
    "rack:preferred",
    "host",
    "host:preferred",
]

_PLACEHOLDER = re.compile(r"^\{\{.+\}\}$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_MIB_PER_GIB = 1024


def is_placeholder(value: object) -> bool:
    """Whether `value` is an Argo placeholder (`{{...}}`), resolved when the pod is created."""
    return isinstance(value, str) and bool(_PLACEHOLDER.match(value))


def _number(
    kind: type[int] | type[float], low: float, high: float, *, low_open: bool = False
) -> PlainValidator:
    """A bounded number, or an Argo placeholder; the error says the range in the author's words."""
    what = "a whole number" if kind is int else "a number"
    span = f"above {low:g} and at most {high:g}" if low_open else f"from {low:g} to {high:g}"
    expected = f"{what} {span} (or an Argo placeholder {{{{...}}}})"

    def check(value: object) -> int | float | str:
        if is_placeholder(value):
            assert isinstance(value, str)
            return value
        try:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise TypeError
            if kind is int and isinstance(value, float):
                raise ValueError
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be {expected}, got {value!r}") from None
        if number < low or number > high or (low_open and number == low):
            raise ValueError(f"must be {expected}, got {value!r}")
        return number

    return PlainValidator(check)


def _name(value: str) -> str:
    if is_placeholder(value):
        return value
    if len(value) > contract.MAX_NAME_LENGTH or not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not a name: use at most {contract.MAX_NAME_LENGTH} lower-case "
            "letters, digits, '-' or '.', starting and ending with a letter or digit"
        )
    return value


Name = Annotated[str, AfterValidator(_name)]

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _model(value: str) -> str:
    if len(value) > contract.MAX_NAME_LENGTH or not _LABEL_VALUE.match(value):
        raise ValueError(
            f"{value!r} is not a GPU model name as GPU feature discovery writes it "
            "(e.g. NVIDIA-H100-80GB-HBM3: letters, digits, '-', '_' or '.')"
        )
    return value


ModelName = Annotated[str, AfterValidator(_model)]


class GpuRequest(BaseModel):
    """One step's request: whole GPUs or a slice of one GPU, and how the scheduler treats it.

    Field names are the author's vocabulary; `annotations()` writes the pod contract's keys.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpus: Annotated[int | str, _number(int, 1, contract.MAX_GPUS_PER_POD)] | None = None
    """Whole GPUs for each pod of the step."""
    memory_gib: (
        Annotated[
            float | str,
            _number(float, 0, contract.MAX_GPU_MEMORY_MIB / _MIB_PER_GIB, low_open=True),
        ]
        | None
    ) = None
    """A slice's GPU memory, in GiB (with `compute_percent`)."""
    compute_percent: Annotated[int | str, _number(int, 1, 100)] | None = None
    """A slice's share of one GPU's compute, in percent (with `memory_gib`)."""
    queue: Name | None = None
    """The leaf queue; default: the workflow's `aistack.io/queue` label."""
    kind: Kind = "train"
    """build (not preemptible, within quota), train (preemptible, may borrow) or infer."""
    priority: (
        Annotated[int | str, _number(int, contract.MIN_PRIORITY, contract.MAX_PRIORITY)] | None
    ) = None
    """Priority inside the queue (default 0)."""
    preemptible: bool | None = None
    """Overrides the kind's default (train: yes; build and infer: no)."""
    pools: tuple[Name, ...] = ()
    """Acceptable pools, preferred first (default: any)."""
    gpu_models: tuple[ModelName, ...] = ()
    """Acceptable GPU models (as GPU feature discovery names them), preferred first."""
    topology: Topology | None = None
    """Keep a gang inside one domain of this level ("rack"), or prefer to (":preferred")."""
    gang: Annotated[int | str, _number(int, 2, contract.MAX_GANG_SIZE)] | None = None
    """Distributed training: this many pods, admitted together, each on its own rank."""
    checkpoint: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None
    """Where the step's checkpoints live (a path on a mounted volume, or a URI prefix)."""
    reclaim_retries: Annotated[int, Field(ge=0, le=MAX_RECLAIM_RETRIES, strict=False)] = (
        DEFAULT_RECLAIM_RETRIES
    )
    """How many reclaims or preemptions Argo retries for free (preemptible steps only)."""

    @model_validator(mode="after")
    def _one_shape(self) -> GpuRequest:
        sliced = (self.memory_gib is not None, self.compute_percent is not None)
        if any(sliced) and not all(sliced):
            raise ValueError("a GPU slice needs both memory_gib and compute_percent")
        if all(sliced) and self.gpus is not None:
            raise ValueError(
                "ask for whole GPUs (gpus) or a slice (memory_gib and compute_percent), not both"
            )
        if not any(sliced) and self.gpus is None:
            raise ValueError("ask for gpus, or for a slice with memory_gib and compute_percent")
        if self.gang is not None and self.is_slice:
            raise ValueError("a gang asks for whole GPUs per pod, not slices")
        if self.topology is not None and self.gang is None:
            raise ValueError("a topology wish only applies to a gang (set gang=N)")
        return self

    @property
    def is_slice(self) -> bool:
        """Whether the step asks for part of one GPU."""
        return self.compute_percent is not None

    @property
    def is_preemptible(self) -> bool:
        """Whether the scheduler may evict the step (the kind's default unless overridden)."""
        if self.preemptible is not None:
            return self.preemptible
        return self.kind == "train"

    # -- the annotation form ----------------------------------------------------------------------

    def annotations(self) -> dict[str, str]:
        """The declaration as template annotations (what `gpus` and `gpu_slice` return)."""
        found: dict[str, str] = {}
        if self.gpus is not None:
            found[GPUS_DECLARATION] = str(self.gpus)
        if self.memory_gib is not None:
            found[contract.GPU_MEMORY_ANNOTATION] = _memory_mib(self.memory_gib)
        if self.compute_percent is not None:
            found[contract.GPU_COMPUTE_ANNOTATION] = str(self.compute_percent)
        if self.queue is not None:
            found[contract.QUEUE_LABEL] = self.queue
        found[contract.KIND_LABEL] = self.kind
        if self.priority is not None:
            found[contract.PRIORITY_ANNOTATION] = str(self.priority)
        if self.preemptible is not None:
            found[contract.PREEMPTIBLE_ANNOTATION] = str(self.preemptible).lower()
        if self.pools:
            found[contract.POOLS_ANNOTATION] = ",".join(self.pools)
        if self.gpu_models:
            found[contract.GPU_MODELS_ANNOTATION] = ",".join(self.gpu_models)
        if self.topology is not None:
            found[contract.TOPOLOGY_ANNOTATION] = self.topology
        if self.gang is not None:
            found[contract.GANG_SIZE_ANNOTATION] = str(self.gang)
        if self.checkpoint is not None:
            found[CHECKPOINT_DECLARATION] = self.checkpoint
        if self.reclaim_retries != DEFAULT_RECLAIM_RETRIES:
            found[RECLAIM_RETRIES_DECLARATION] = str(self.reclaim_retries)
        return found

    def pod_labels_and_annotations(self, queue: str) -> tuple[dict[str, str], dict[str, str]]:
        """The contract's labels (queue, kind) and annotations for a pod of this step in `queue`.

        Whole GPUs are not among them: a pod asks for those as `nvidia.com/gpu` in its
        container's resources.
        """
        annotations = {
            k: v
            for k, v in self.annotations().items()
            if not k.startswith(DECLARATION_PREFIX)
            and k not in {contract.QUEUE_LABEL, contract.KIND_LABEL}
        }
        return {contract.QUEUE_LABEL: queue, contract.KIND_LABEL: self.kind}, annotations

    @classmethod
    def from_metadata(
        cls,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        *,
        resource_gpus: str | None,
    ) -> GpuRequest | list[Problem] | None:
        """Read a template's declaration back; None for a step that asks for no GPU.

        `resource_gpus` is what the template's container asks for as `nvidia.com/gpu` (None if
        nothing). Labels win over annotations of the same key (the contract's own form).
        Returns the problems, each naming the field, when the declaration is invalid.
        """
        merged = {**annotations, **labels}
        declared = merged.get(GPUS_DECLARATION)
        if declared is not None and resource_gpus is not None and declared != resource_gpus:
            return [
                Problem(
                    "gpus",
                    f"{GPUS_DECLARATION}={declared!r} but the container asks for "
                    f"{contract.GPU_RESOURCE}={resource_gpus!r}; declare the GPUs once",
                )
            ]
        fields: dict[str, Any] = {}
        gpus_text = declared if declared is not None else resource_gpus
        if gpus_text is not None and gpus_text != "0":
            fields["gpus"] = gpus_text
        memory = merged.get(contract.GPU_MEMORY_ANNOTATION)
        if memory is not None:
            fields["memory_gib"] = _memory_gib(memory)
        _copy(merged, fields, contract.GPU_COMPUTE_ANNOTATION, "compute_percent")
        if not {"gpus", "memory_gib", "compute_percent"} & set(fields):
            return None
        _copy(merged, fields, contract.QUEUE_LABEL, "queue")
        _copy(merged, fields, contract.KIND_LABEL, "kind")
        _copy(merged, fields, contract.PRIORITY_ANNOTATION, "priority")
        _copy(merged, fields, contract.PREEMPTIBLE_ANNOTATION, "preemptible")
        _copy(merged, fields, contract.TOPOLOGY_ANNOTATION, "topology")
        _copy(merged, fields, contract.GANG_SIZE_ANNOTATION, "gang")
        _copy(merged, fields, CHECKPOINT_DECLARATION, "checkpoint")
        _copy(merged, fields, RECLAIM_RETRIES_DECLARATION, "reclaim_retries")
        for key, field in (
            (contract.POOLS_ANNOTATION, "pools"),
            (contract.GPU_MODELS_ANNOTATION, "gpu_models"),
        ):
            if key in merged:
                fields[field] = tuple(p.strip() for p in merged[key].split(",") if p.strip())
        return cls.parse(fields)

    @classmethod
    def parse(cls, fields: Mapping[str, Any]) -> GpuRequest | list[Problem]:
        """Validate `fields`; the problems name the author's fields."""
        try:
            return cls.model_validate(dict(fields))
        except ValidationError as error:
            return problems_of(error)


def _copy(source: Mapping[str, str], target: dict[str, Any], key: str, field: str) -> None:
    if key in source:
        target[field] = source[key]


def _memory_mib(gib: float | str) -> str:
    if isinstance(gib, str):
        return _scaled_placeholder(gib)
    return str(math.ceil(gib * _MIB_PER_GIB))


def _memory_gib(mib: str) -> float | str:
    """The MiB annotation back in GiB (placeholders stay as written)."""
    if is_placeholder(mib):
        return mib
    try:
        return int(mib) / _MIB_PER_GIB
    except ValueError:
        return mib  # not a number: validation names the field


_INPUT_PARAMETER = re.compile(r"^\{\{inputs\.parameters\.([A-Za-z0-9_-]+)\}\}$")
_SCALED_PARAMETER = re.compile(
    r'^\{\{=int\(float\(inputs\.parameters\["([A-Za-z0-9_-]+)"\]\) \* 1024\)\}\}$'
)


def _scaled_placeholder(gib: str) -> str:
    """A GiB input parameter as an Argo expression giving MiB, resolved when the pod is made."""
    if _SCALED_PARAMETER.match(gib):
        return gib
    found = _INPUT_PARAMETER.match(gib)
    if found is None:
        raise ValueError(
            f"memory_gib={gib!r}: a placeholder for a slice's memory must be one input "
            "parameter, {{inputs.parameters.NAME}}"
        )
    # Double quotes: a template that writes the annotation into a YAML manifest (a Deployment)
    # single-quotes the whole string, which would double a single quote inside it, and Argo
    # evaluates the expression in the manifest's text before reading it as YAML.
    return f'{{{{=int(float(inputs.parameters["{found.group(1)}"]) * 1024)}}}}'


def problems_of(error: ValidationError) -> list[Problem]:
    """Pydantic's errors as problems that name the author's field and say what to do."""
    found = []
    for entry in error.errors(include_url=False):
        field = ".".join(str(part) for part in entry["loc"])
        message = entry["msg"].removeprefix("Value error, ")
        if entry["type"] == "extra_forbidden":
            message = "is not a field of a GPU request"
        found.append(Problem(field or "request", message))
    return found


def pod_metadata(request: GpuRequest, *, queue: str) -> dict[str, dict[str, str]]:
    """`metadata` for a pod that Argo does not build (a Deployment's or a Job's pod template).

    The scheduler admits such pods like any step: `{"metadata": {**pod_metadata(...)}}`. Whole
    GPUs go in the container's resources (`nvidia.com/gpu`); the admission webhook adds the
    scheduling gate. Gangs and free reclaim retries are Argo-step features and do not apply.
    """
    labels, annotations = request.pod_labels_and_annotations(queue)
    return {"labels": labels, "annotations": annotations} if annotations else {"labels": labels}


# -- what authors call ----------------------------------------------------------------------------


class StepOptions(TypedDict, total=False):
    """Everything a GPU step may say besides its size (see `GpuRequest`)."""

    queue: str
    kind: Kind
    priority: int | str
    preemptible: bool
    pools: Sequence[str]
    gpu_models: Sequence[str]
    topology: Topology
    gang: int | str
    checkpoint: str
    reclaim_retries: int


def gpus(count: int | str, **options: Unpack[StepOptions]) -> dict[str, str]:
    """Annotations for a Hera template that asks for `count` whole GPUs per pod.

    `@script(annotations=gpus(8, queue="research", gang=4))` is a four-pod training step with 8
    GPUs per pod. Raises `RequestError` naming every bad field.
    """
    return _declare({"gpus": count, **options})


def gpu_slice(
    *, memory_gib: float | str, compute_percent: int | str, **options: Unpack[StepOptions]
) -> dict[str, str]:
    """Annotations for a Hera template that asks for a slice of one GPU.

    `Container(..., annotations=gpu_slice(memory_gib=8, compute_percent=25, kind="build"))`.
    Raises `RequestError` naming every bad field.
    """
    return _declare({"memory_gib": memory_gib, "compute_percent": compute_percent, **options})


def _declare(fields: Mapping[str, Any]) -> dict[str, str]:
    if isinstance(fields.get("memory_gib"), str) and is_placeholder(fields["memory_gib"]):
        try:
            _scaled_placeholder(fields["memory_gib"])
        except ValueError as error:
            raise RequestError([Problem("memory_gib", str(error))]) from None
    parsed = GpuRequest.parse(fields)
    if isinstance(parsed, list):
        raise RequestError(parsed)
    return parsed.annotations()
