"""Which GPUs a machine has: read from NVML, or simulated from a `--simulate-gpus` spec.

Shared by the local runner (aistack_flows/local) and the node agent. It is public and imports
only the standard library: `pynvml` is imported inside `discover()`, so this module imports on a
machine without an NVIDIA driver, and `discover()` then answers a `Machine` with source "none"
and a note that says why and what to do. It never raises an NVML error.

What NVML reports, and what it does not:
- `model` is NVML's product name with spaces replaced by '-', as NVIDIA GPU feature discovery
  writes the node label `nvidia.com/gpu.product` ("NVIDIA H100 80GB HBM3" becomes
  "NVIDIA-H100-80GB-HBM3"), so a model named here matches a model named on a Kubernetes node.
- `numa_node` comes from `nvmlDeviceGetNumaNodeId`, which NVML answers only where the GPU's own
  memory is a NUMA node (Grace Hopper and Grace Blackwell). On x86 servers it answers "not
  supported", and `numa_node` is then 0 for every GPU: it is not the CPU socket the GPU hangs
  off (that is `nvmlDeviceGetMemoryAffinity`, not read here).
- `nvlink_peers` follows every active NVLink to the PCI address at its far end. A far end that
  is another GPU makes the two peers; a far end that is no GPU of this machine is an NVSwitch
  (HGX and DGX boards), and every GPU linked to the same switch reaches every other one.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar, get_args

__all__ = [
    "MAX_SIMULATED_GPUS",
    "SIMULATED_MODELS",
    "DiscoveredGpu",
    "GpuSpecError",
    "Machine",
    "SimulatedModel",
    "Source",
    "discover",
    "machine_from_json",
    "machine_to_json",
    "simulated",
]

Source = Literal["nvml", "simulated", "none"]
"""Where a `Machine`'s GPUs came from: real devices, a `--simulate-gpus` spec, or nowhere."""

_SIMULATE_HINT: Final = "pass --simulate-gpus 4xH100-80GB to run with simulated GPUs"
_SIMULATED_NOTE: Final = "simulated GPUs: nothing runs on a real device"

MAX_SIMULATED_GPUS: Final = 64
"""The most GPUs one simulated machine may have; generous, as real servers hold up to 16."""

_MAX_GENERIC_GB: Final = 4096
"""The largest memory a `MODEL-<N>GB` spec may name; a bigger N is a typo, not a GPU."""

_MIB_PER_GB: Final = 1024
"""A generic spec's "N GB" is read as N GiB: N * 1024 MiB."""
_BYTES_PER_MIB: Final = 1024 * 1024

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class DiscoveredGpu:
    """One GPU of a machine, as NVML reported it or as a spec simulated it.

    Attributes:
        index: NVML's device index (the order `nvidia-smi` lists GPUs in).
        uuid: "GPU-..." as NVML reports it; simulated GPUs have "SIM-GPU-<index>-<name>".
        model: The product name as the label `nvidia.com/gpu.product` spells it.
        memory_mib: Total device memory in MiB.
        numa_node: The GPU memory's NUMA node where NVML reports one, else 0 (see the module).
        nvlink_peers: Sorted indices of the other GPUs reached over an active NVLink.
        mig_enabled: Whether MIG mode is currently on (False where MIG is not supported).
        simulated: True for a GPU that exists only in a spec.
    """

    index: int
    uuid: str
    model: str
    memory_mib: int
    numa_node: int = 0
    nvlink_peers: tuple[int, ...] = ()
    mig_enabled: bool = False
    simulated: bool = False

    def describe(self) -> str:
        """One human line, e.g. "GPU 0  NVIDIA-H100-80GB-HBM3  81559 MiB  GPU-...  NUMA 0  ..."."""
        peers = ",".join(str(peer) for peer in self.nvlink_peers) or "-"
        parts = [
            f"GPU {self.index}",
            self.model,
            f"{self.memory_mib} MiB",
            self.uuid,
            f"NUMA {self.numa_node}",
            f"NVLink {peers}",
        ]
        if self.mig_enabled:
            parts.append("MIG")
        if self.simulated:
            parts.append("(simulated)")
        return "  ".join(parts)


@dataclass(frozen=True, slots=True)
class Machine:
    """The GPUs of one machine and where they came from.

    Attributes:
        gpus: The GPUs in index order; empty for source "none".
        source: "nvml" (real devices), "simulated" (a spec) or "none" (no NVML).
        driver_version: The NVIDIA driver's version, e.g. "550.54.15" (NVML only).
        cuda_version: The newest CUDA version the driver supports, e.g. "12.4" (NVML only).
        note: For "none": why there are no GPUs and what to do. For "simulated": a reminder
            that nothing runs on a real device. For "nvml": the devices NVML could not read,
            if any, else empty.
    """

    gpus: tuple[DiscoveredGpu, ...]
    source: Source
    driver_version: str | None = None
    cuda_version: str | None = None
    note: str = ""

    def describe(self) -> list[str]:
        """A header line, then one line per GPU, for a terminal or a log."""
        if self.source == "none":
            return [f"no GPUs: {self.note}"]
        count = f"{len(self.gpus)} GPU{'' if len(self.gpus) == 1 else 's'}"
        if self.source == "simulated":
            header = f"{count} ({self.note})"
        else:
            versions = [f"driver {self.driver_version or 'unknown'}"]
            if self.cuda_version is not None:
                versions.append(f"CUDA {self.cuda_version}")
            header = f"{count} from NVML ({', '.join(versions)})"
            if self.note:
                header += f"; {self.note}"
        return [header, *(gpu.describe() for gpu in self.gpus)]


# -- NVML -----------------------------------------------------------------------------------------


def discover(nvml: Any | None = None) -> Machine:
    """Read this machine's GPUs from NVML; never raises an NVML error.

    Args:
        nvml: The module to call, `pynvml` when None; tests pass a fake with the same functions
            and error classes.

    Returns:
        Source "nvml" with the GPUs NVML lists (possibly none), or source "none" with a note
        saying why NVML could not be used and how to run with simulated GPUs instead. A device
        whose name, UUID, memory or PCI address cannot be read is left out and named in the
        note; a device whose NUMA node, MIG mode or NVLinks cannot be read keeps the defaults
        for those. Exceptions that are not NVML errors are bugs and propagate; `nvmlShutdown`
        runs after a successful `nvmlInit` whatever happens.
    """
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError as error:
            return _no_gpus(f"the NVML bindings (nvidia-ml-py) are not installed ({error})")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as error:
        return _no_gpus(_init_failure(nvml, error))
    try:
        return _read_machine(nvml)
    except nvml.NVMLError as error:
        return _no_gpus(f"NVML failed while listing devices: {_nvml_text(error)}")
    finally:
        # The answer is already read; a failed shutdown changes nothing about it.
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _no_gpus(reason: str) -> Machine:
    return Machine(gpus=(), source="none", note=f"{reason}; {_SIMULATE_HINT}")


def _init_failure(nvml: Any, error: BaseException) -> str:
    text = _nvml_text(error)
    # pynvml raises LibraryNotFound from inside `except OSError`, so the loader's own message
    # ("libnvidia-ml.so.1: cannot open shared object file ...") is the error's context.
    if isinstance(error.__context__, OSError):
        text = f"{text}: {error.__context__}"
    if isinstance(error, nvml.NVMLError_LibraryNotFound):
        return f"no NVIDIA driver: NVML could not be loaded ({text})"
    if isinstance(error, nvml.NVMLError_DriverNotLoaded):
        return f"the NVIDIA driver is installed but not loaded ({text})"
    return f"NVML could not be initialised ({text})"


def _nvml_text(error: BaseException) -> str:
    return str(error) or type(error).__name__


@dataclass(frozen=True, slots=True)
class _Device:
    """What one device told NVML, before NVLink far ends are matched to other GPUs."""

    gpu: DiscoveredGpu
    bus_id: str
    link_ends: frozenset[str]


def _read_machine(nvml: Any) -> Machine:
    driver_version = _optional(nvml, lambda: _text(nvml.nvmlSystemGetDriverVersion()))
    cuda = _optional(nvml, lambda: int(nvml.nvmlSystemGetCudaDriverVersion()))
    devices: list[_Device] = []
    left_out: list[str] = []
    for index in range(int(nvml.nvmlDeviceGetCount())):
        try:
            devices.append(_read_device(nvml, index))
        except nvml.NVMLError as error:
            left_out.append(f"GPU {index} left out: {_nvml_text(error)}")
    peers = _nvlink_peers(devices)
    return Machine(
        gpus=tuple(replace(device.gpu, nvlink_peers=peers[device.gpu.index]) for device in devices),
        source="nvml",
        driver_version=driver_version,
        cuda_version=None if cuda is None else _cuda_text(cuda),
        note="; ".join(left_out),
    )


def _read_device(nvml: Any, index: int) -> _Device:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    gpu = DiscoveredGpu(
        index=index,
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        model=_product_label(_text(nvml.nvmlDeviceGetName(handle))),
        memory_mib=int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // _BYTES_PER_MIB,
        numa_node=_optional(nvml, lambda: _numa_node(nvml, handle)) or 0,
        mig_enabled=_optional(nvml, lambda: _mig_enabled(nvml, handle)) or False,
    )
    bus_id = _pci_address(nvml.nvmlDeviceGetPciInfo(handle).busId)
    return _Device(gpu=gpu, bus_id=bus_id, link_ends=_nvlink_ends(nvml, handle))


def _optional(nvml: Any, read: Callable[[], _T]) -> _T | None:
    """`read()`, or None where NVML or these bindings do not offer the value."""
    try:
        return read()
    except (nvml.NVMLError, AttributeError):
        return None


def _numa_node(nvml: Any, handle: object) -> int:
    # pynvml reads the node into a signed int; a negative value names no node.
    return max(int(nvml.nvmlDeviceGetNumaNodeId(handle)), 0)


def _mig_enabled(nvml: Any, handle: object) -> bool:
    current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    return bool(current == nvml.NVML_DEVICE_MIG_ENABLE)


def _nvlink_ends(nvml: Any, handle: object) -> frozenset[str]:
    """PCI addresses at the far end of this device's active NVLinks."""
    ends: set[str] = set()
    for link in range(int(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 0))):
        try:
            active = nvml.nvmlDeviceGetNvLinkState(handle, link) == nvml.NVML_FEATURE_ENABLED
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_InvalidArgument):
            break  # no NVLink at all, or past the device's last link
        except (nvml.NVMLError, AttributeError):
            continue
        if not active:
            continue
        try:
            ends.add(_pci_address(nvml.nvmlDeviceGetNvLinkRemotePciInfo(handle, link).busId))
        except (nvml.NVMLError, AttributeError):
            # An active link whose far end NVML cannot name (a switch hidden from a VM) is left
            # out: the GPU then shows fewer peers than it has, never a peer it lacks.
            continue
    return frozenset(ends)


def _nvlink_peers(devices: list[_Device]) -> dict[int, tuple[int, ...]]:
    gpu_at = {device.bus_id: device.gpu.index for device in devices}
    peers: dict[int, set[int]] = {device.gpu.index: set() for device in devices}
    on_switch: dict[str, set[int]] = {}
    for device in devices:
        here = device.gpu.index
        for end in device.link_ends:
            there = gpu_at.get(end)
            if there is None:
                on_switch.setdefault(end, set()).add(here)
            elif there != here:
                peers[here].add(there)
                peers[there].add(here)
    for linked in on_switch.values():
        for here in linked:
            peers[here] |= linked - {here}
    return {index: tuple(sorted(found)) for index, found in peers.items()}


def _product_label(name: str) -> str:
    """NVML's product name as GPU feature discovery writes `nvidia.com/gpu.product`."""
    return "-".join(name.split())


def _text(value: object) -> str:
    # pynvml returns str since 11.x; older bindings (and raw ctypes fields) return bytes.
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value).strip("\x00").strip()


def _pci_address(bus_id: object) -> str:
    """A PCI address in one spelling: NVML writes "00000000:1B:00.0" or "0000:1b:00.0"."""
    text = _text(bus_id).lower()
    domain, separator, rest = text.partition(":")
    if not separator or rest.count(":") != 1:
        return text
    try:
        return f"{int(domain, 16):08x}:{rest}"
    except ValueError:
        return text


def _cuda_text(version: int) -> str:
    """NVML's CUDA version as users write it: 12040 is "12.4"."""
    return f"{version // 1000}.{version % 1000 // 10}"


# -- simulated GPUs -------------------------------------------------------------------------------


class GpuSpecError(ValueError):
    """A `--simulate-gpus` spec that cannot be read; the message says why and gives an example."""


@dataclass(frozen=True, slots=True)
class SimulatedModel:
    """A GPU model a spec may name, with the figures its real devices report.

    Attributes:
        product: The product name as the label `nvidia.com/gpu.product` spells it.
        memory_mib: Total memory as NVML reports it, a little under the marketed size.
        nvlink: Whether boards of this model join their GPUs with NVLink (SXM modules on an
            HGX board); PCIe cards such as the L4 have none, so their GPUs get no peers.
    """

    product: str
    memory_mib: int
    nvlink: bool = True


SIMULATED_MODELS: Final[Mapping[str, SimulatedModel]] = MappingProxyType(
    {
        # Memory as `nvidia-smi` and NVML report it on the real devices.
        "H100-80GB": SimulatedModel("NVIDIA-H100-80GB-HBM3", 81559),
        "H200": SimulatedModel("NVIDIA-H200", 143771),
        "A100-80GB": SimulatedModel("NVIDIA-A100-SXM4-80GB", 81920),
        "A100-40GB": SimulatedModel("NVIDIA-A100-SXM4-40GB", 40536),
        "L4": SimulatedModel("NVIDIA-L4", 23034, nvlink=False),
        "L40S": SimulatedModel("NVIDIA-L40S", 46068, nvlink=False),
        "T4": SimulatedModel("Tesla-T4", 15360, nvlink=False),
    }
)
"""The models a spec names by their key (case does not matter), e.g. "4xH100-80GB"."""

_SPEC_EXAMPLE: Final = (
    "write COUNTxMODEL groups separated by commas, e.g. 4xH100-80GB or 2xA100-40GB,1xL4"
)
_GROUP: Final = re.compile(r"\s*(?:(?P<count>[+-]?\d+)\s*[xX])?\s*(?P<name>.*?)\s*")
_GENERIC_MODEL: Final = re.compile(r"[A-Z0-9][A-Z0-9.]*(?:-[A-Z0-9.]+)*-(?P<gb>\d+)GB")


def simulated(spec: str) -> Machine:
    """The machine a `--simulate-gpus` spec describes.

    A spec is comma-separated groups `COUNTxMODEL`, the count optional (1): "4xH100-80GB",
    "2xA100-40GB,1xL4". MODEL is a key of `SIMULATED_MODELS`, or any `NAME-<N>GB` for a GPU
    not in that table: product "SIM-NAME-<N>GB" with N*1024 MiB, NVLinked like an SXM board.
    The GPUs of one group are fully NVLinked to each other (one HGX board) unless the model
    is a PCIe card; groups are not linked to each other. The same spec always gives the same
    UUIDs, "SIM-GPU-<index>-<MODEL>", unique within the machine.

    Args:
        spec: The spec as the user wrote it.

    Returns:
        A machine with source "simulated" and 1 to `MAX_SIMULATED_GPUS` GPUs.

    Raises:
        GpuSpecError: The spec is empty, a group has no model or a count below 1, a model is
            unknown, or the machine would have more than `MAX_SIMULATED_GPUS` GPUs.
    """
    if not spec.strip():
        raise GpuSpecError(f"the GPU spec is empty; {_SPEC_EXAMPLE}")
    groups = [_parse_group(spec, text) for text in spec.split(",")]
    total = sum(count for count, _name, _model in groups)
    if total > MAX_SIMULATED_GPUS:
        raise GpuSpecError(
            f"GPU spec {spec!r} asks for {total} GPUs, more than one machine has "
            f"(at most {MAX_SIMULATED_GPUS}); {_SPEC_EXAMPLE}"
        )
    gpus: list[DiscoveredGpu] = []
    for count, name, model in groups:
        board = range(len(gpus), len(gpus) + count)
        gpus.extend(
            DiscoveredGpu(
                index=index,
                uuid=f"SIM-GPU-{index}-{name}",
                model=model.product,
                memory_mib=model.memory_mib,
                nvlink_peers=tuple(peer for peer in board if peer != index) if model.nvlink else (),
                simulated=True,
            )
            for index in board
        )
    return Machine(gpus=tuple(gpus), source="simulated", note=_SIMULATED_NOTE)


def _parse_group(spec: str, text: str) -> tuple[int, str, SimulatedModel]:
    """One `COUNTxMODEL` group as (count, the model's spec name, the model)."""
    match = _GROUP.fullmatch(text)
    # The pattern matches any text (count and name may both be empty); the assert tells mypy.
    assert match is not None
    count_text, name = match["count"], match["name"].upper()
    if not text.strip():
        raise GpuSpecError(f"GPU spec {spec!r} has an empty group; {_SPEC_EXAMPLE}")
    where = f"GPU spec {spec!r}"
    if text.strip() != spec.strip():
        where = f"group {text.strip()!r} of {where}"
    if not name:
        raise GpuSpecError(f"{where} names no GPU model; {_SPEC_EXAMPLE}")
    count = 1 if count_text is None else int(count_text)
    if count < 1:
        raise GpuSpecError(f"{where} asks for {count} GPUs, at least 1 is needed; {_SPEC_EXAMPLE}")
    return count, name, _model_named(where, name)


def _model_named(where: str, name: str) -> SimulatedModel:
    known = SIMULATED_MODELS.get(name)
    if known is not None:
        return known
    generic = _GENERIC_MODEL.fullmatch(name)
    if generic is not None:
        size_gb = int(generic["gb"])
        if 1 <= size_gb <= _MAX_GENERIC_GB:
            return SimulatedModel(f"SIM-{name}", size_gb * _MIB_PER_GB)
        raise GpuSpecError(
            f"{where}: model {name!r} has {size_gb} GB, outside 1 to {_MAX_GENERIC_GB} GB; "
            f"{_SPEC_EXAMPLE}"
        )
    raise GpuSpecError(
        f"{where}: unknown GPU model {name!r}; known models are {', '.join(SIMULATED_MODELS)}, "
        f"or NAME-<N>GB for any other GPU with N GB (e.g. 8xB200-180GB); {_SPEC_EXAMPLE}"
    )


# -- JSON -----------------------------------------------------------------------------------------


def machine_to_json(machine: Machine) -> dict[str, Any]:
    """The machine as plain JSON values (dicts, lists, str, int, bool, None), e.g. for a database.

    `machine_from_json` reads it back to an equal `Machine`.
    """
    return {
        "source": machine.source,
        "driver_version": machine.driver_version,
        "cuda_version": machine.cuda_version,
        "note": machine.note,
        "gpus": [
            {
                "index": gpu.index,
                "uuid": gpu.uuid,
                "model": gpu.model,
                "memory_mib": gpu.memory_mib,
                "numa_node": gpu.numa_node,
                "nvlink_peers": list(gpu.nvlink_peers),
                "mig_enabled": gpu.mig_enabled,
                "simulated": gpu.simulated,
            }
            for gpu in machine.gpus
        ],
    }


def machine_from_json(data: Mapping[str, Any]) -> Machine:
    """Read back what `machine_to_json` wrote.

    Fields with defaults may be absent, so records written before a field existed still read.

    Raises:
        ValueError: A field is missing or has the wrong type; the message names it.
    """
    source = _json_field(data, "source", str, "machine")
    if source not in get_args(Source):
        raise ValueError(f"machine.source: expected one of {get_args(Source)}, got {source!r}")
    gpus = _json_field(data, "gpus", list, "machine")
    return Machine(
        gpus=tuple(_gpu_from_json(gpu, f"machine.gpus[{i}]") for i, gpu in enumerate(gpus)),
        source=source,  # type: ignore[arg-type]  # checked against Source just above
        driver_version=_json_optional_str(data, "driver_version", "machine"),
        cuda_version=_json_optional_str(data, "cuda_version", "machine"),
        note=_json_field(data, "note", str, "machine", default=""),
    )


def _gpu_from_json(data: object, where: str) -> DiscoveredGpu:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object, got {data!r}")
    peers = _json_field(data, "nvlink_peers", list, where, default=[])
    if not all(type(peer) is int for peer in peers):
        raise ValueError(f"{where}.nvlink_peers: expected GPU indices, got {peers!r}")
    return DiscoveredGpu(
        index=_json_field(data, "index", int, where),
        uuid=_json_field(data, "uuid", str, where),
        model=_json_field(data, "model", str, where),
        memory_mib=_json_field(data, "memory_mib", int, where),
        numa_node=_json_field(data, "numa_node", int, where, default=0),
        nvlink_peers=tuple(peers),
        mig_enabled=_json_field(data, "mig_enabled", bool, where, default=False),
        simulated=_json_field(data, "simulated", bool, where, default=False),
    )


_MISSING: Final = object()


def _json_field(
    data: Mapping[str, Any], key: str, kind: type[_T], where: str, default: object = _MISSING
) -> _T:
    value = data.get(key, default)
    if value is _MISSING:
        raise ValueError(f"{where}.{key} is missing")
    # bool is an int to isinstance; JSON's true is never a count.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def _json_optional_str(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}.{key}: expected a string or null, got {value!r}")
    return value
