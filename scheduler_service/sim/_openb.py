"""Read the openb traces (Alibaba GPU cluster, 2023) into the core's vocabulary.

Two kinds of CSV file (see `../shared/data/README.md`):

- nodes, `sn,cpu_milli,memory_mib,gpu,model`: each row becomes a `Node` whose pool is its GPU
  model (CPU-only rows, `gpu` 0 and no model, go to pool `cpu`), with `gpu` GPUs of the model's
  memory (`GPU_MEMORY_MIB`);
- pods, `name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec,...]`: each row becomes an
  `OpenbPod` carrying a core `Request`: `num_gpu >= 2` or `gpu_milli == 1000` asks for whole
  GPUs; `num_gpu == 1` with `gpu_milli < 1000` asks for a slice of `gpu_milli / 10` percent of
  compute; `num_gpu == 0` is CPU-only. `gpu_spec` (`V100M16|V100M32`) lists acceptable models;
  as in the published simulator's pod conversion, empty names in it are skipped and a CPU-only
  pod's `gpu_spec` is ignored (a GPU model constrains only the GPUs a pod takes).

openb gives no per-pod GPU memory, so a slice is given the same fraction of memory as of compute,
of the smallest GPU among the models it may use (rounded down). Compute then binds on every GPU
it may land on, and memory never decides a placement: the trace's one GPU dimension stays one.

Every field is checked; a `TraceError` names the file, the line and what is wrong. The loaders
only read: the data stays where it is (never copied into the repository).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from scheduler_service.core import GPU, MILLI_GPU, Node, Request
from scheduler_service.sim._fields import ScenarioError

__all__ = [
    "DEFAULT_DATA",
    "GPU_MEMORY_MIB",
    "OpenbPod",
    "TraceError",
    "load_nodes",
    "load_pods",
    "pod_list_path",
]

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "openb"
"""`../shared/data/openb` relative to the repository root."""

_GIB = 1024
GPU_MEMORY_MIB: dict[str, int] = {
    "T4": 16 * _GIB,
    "P100": 16 * _GIB,
    "V100M16": 16 * _GIB,
    "V100M32": 32 * _GIB,
    "A10": 24 * _GIB,
    # G1-G3 are undisclosed models. Assumption: 16 GiB each, the smallest size in the trace, so
    # no slice is ever given memory that the real device might not have.
    "G1": 16 * _GIB,
    "G2": 16 * _GIB,
    "G3": 16 * _GIB,
}
"""Published memory of each GPU model in the trace, in MiB (G1-G3: an assumption, see above)."""

CPU_POOL = "cpu"
_NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
_POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
_MAX_GPUS = 8


class TraceError(ScenarioError):
    """A trace file cannot be read or is invalid; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class OpenbPod:
    """One pod of an openb pod list: its core request and the GPU models it accepts (empty: any).

    `gpu_milli` is the GPU capacity it asks for in all (num_gpu x gpu_milli), the unit of the
    protocol's arrival and allocation figures.
    """

    name: str
    request: Request
    models: tuple[str, ...]
    gpu_milli: int


def pod_list_path(data: Path, trace: str) -> Path:
    """The pod list of `trace` (`default`, `gpushare40`, ...) under `data`."""
    return data / f"openb_pod_list_{trace}.csv"


def load_nodes(path: Path) -> tuple[Node, ...]:
    """The nodes of an openb node list; raises `TraceError` on any invalid row."""
    nodes = []
    names: set[str] = set()
    for line, row in _rows(path, _NODE_COLUMNS):
        where = f"{path.name}: line {line}"
        name = row["sn"]
        if not name:
            raise TraceError(f"{where}: sn must not be empty")
        if name in names:
            raise TraceError(f"{where}: duplicate node {name!r}")
        names.add(name)
        cpu = _int(row, "cpu_milli", where, low=1)
        memory = _int(row, "memory_mib", where, low=1)
        count = _int(row, "gpu", where, low=0, high=_MAX_GPUS)
        model = row["model"]
        if count and model not in GPU_MEMORY_MIB:
            known = ", ".join(sorted(GPU_MEMORY_MIB))
            raise TraceError(f"{where}: unknown GPU model {model!r} (known: {known})")
        if not count and model:
            raise TraceError(f"{where}: model {model!r} given for a node with 0 GPUs")
        gpus = tuple(
            GPU(index=i, uuid=f"{name}-gpu{i}", model=model, memory_mib=GPU_MEMORY_MIB[model])
            for i in range(count)
        )
        nodes.append(
            Node(
                name=name,
                pool=model or CPU_POOL,
                gpus=gpus,
                cpu_milli=cpu,
                memory_mib=memory,
            )
        )
    if not nodes:
        raise TraceError(f"{path.name}: no nodes")
    return tuple(nodes)


def load_pods(path: Path) -> tuple[OpenbPod, ...]:
    """The pods of an openb pod list; raises `TraceError` on any invalid row."""
    pods = []
    for line, row in _rows(path, _POD_COLUMNS):
        where = f"{path.name}: line {line}"
        if not row["name"]:
            raise TraceError(f"{where}: name must not be empty")
        cpu = _int(row, "cpu_milli", where, low=0)
        memory = _int(row, "memory_mib", where, low=0)
        num_gpu = _int(row, "num_gpu", where, low=0, high=_MAX_GPUS)
        gpu_milli = _int(row, "gpu_milli", where, low=0, high=MILLI_GPU)
        models = _models(row.get("gpu_spec") or "", where) if num_gpu else ()
        pods.append(
            OpenbPod(
                name=row["name"],
                request=_request(
                    where, cpu, memory, num_gpu=num_gpu, gpu_milli=gpu_milli, models=models
                ),
                models=models,
                gpu_milli=num_gpu * gpu_milli,
            )
        )
    if not pods:
        raise TraceError(f"{path.name}: no pods")
    return tuple(pods)


def _request(
    where: str, cpu: int, memory: int, *, num_gpu: int, gpu_milli: int, models: tuple[str, ...]
) -> Request:
    if num_gpu == 0:
        if gpu_milli:
            raise TraceError(f"{where}: gpu_milli {gpu_milli} given for a pod with num_gpu 0")
        return Request(cpu_milli=cpu, memory_mib=memory)
    if gpu_milli == 0:
        raise TraceError(f"{where}: gpu_milli must be > 0 for a pod with num_gpu {num_gpu}")
    if gpu_milli == MILLI_GPU:
        return Request(gpus=num_gpu, cpu_milli=cpu, memory_mib=memory)
    if num_gpu > 1:
        raise TraceError(
            f"{where}: gpu_milli {gpu_milli} < 1000 with num_gpu {num_gpu}: "
            "only a single-GPU pod may share a GPU"
        )
    if gpu_milli % 10:
        raise TraceError(
            f"{where}: gpu_milli {gpu_milli} is not a multiple of 10 (the core counts a "
            "slice's compute in whole percent)"
        )
    smallest = min(GPU_MEMORY_MIB[m] for m in models or GPU_MEMORY_MIB)
    return Request(
        gpu_memory_mib=max(1, smallest * gpu_milli // MILLI_GPU),
        gpu_compute_percent=gpu_milli // 10,
        cpu_milli=cpu,
        memory_mib=memory,
    )


def _models(spec: str, where: str) -> tuple[str, ...]:
    if not spec:
        return ()
    models = tuple(name for name in spec.split("|") if name)
    unknown = [m for m in models if m not in GPU_MEMORY_MIB]
    if unknown:
        known = ", ".join(sorted(GPU_MEMORY_MIB))
        raise TraceError(f"{where}: gpu_spec names unknown model(s) {unknown} (known: {known})")
    return models


def _rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row, after checking the header names `columns`."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as error:
        raise TraceError(f"{path}: cannot read: {error.strerror or error}") from error
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise TraceError(f"{path.name}: line 1: empty file, expected a header")
        header = [h.strip() for h in header]
        missing = [c for c in columns if c not in header]
        if missing:
            raise TraceError(f"{path.name}: line 1: header lacks column(s) {missing}")
        for values in reader:
            line = reader.line_num
            if not values:
                continue
            if len(values) != len(header):
                raise TraceError(
                    f"{path.name}: line {line}: {len(values)} fields, the header has {len(header)}"
                )
            yield line, dict(zip(header, (v.strip() for v in values), strict=True))


def _int(row: dict[str, str], key: str, where: str, *, low: int, high: int | None = None) -> int:
    text = row[key]
    try:
        value = int(text)
    except ValueError:
        raise TraceError(f"{where}: {key} must be an integer, got {text!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise TraceError(f"{where}: {key} must be {bound}, got {value}")
    return value
