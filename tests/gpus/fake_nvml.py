"""A fake `pynvml`: the calls of `gpu_discovery` and the node agent, on data from real machines.

An instance stands in for the module (`discover(nvml=FakeNvml.h100_hgx())`): the NVML functions
are its methods, the error classes and constants its attributes, with pynvml's names. It is
strict where NVML is: every call but `nvmlInit` fails with `NVMLError_Uninitialized` outside an
`nvmlInit`/`nvmlShutdown` pair, and `calls` records every call in order, so a test can check
that discovery shut NVML down. `failures` makes one function fail for one GPU.

Every GPU starts idle (no memory used, 0 % busy, no processes); `load` gives one a load: memory
used, utilisation and the processes `nvmlDeviceGetComputeRunningProcesses` lists, as the node
agent's metrics read them.

The machines, and what real NVML answers on them (nothing here was run on hardware):
- `h100_hgx()`: an 8x H100 SXM HGX board (as in a DGX H100). Every GPU has 18 NVLinks, all into
  the board's four NVSwitches (5, 4, 4 and 5 links). NVML's remote PCI info for such a link is
  the switch's own PCI address, the same for every link into that switch (a DGX A100 reports
  "00000008:00:00.0" for each link into its first switch, NVIDIA/go-nvml#166), never the GPU
  on the far side; the switch addresses here are made up in that style (verify on a real board).
- `a100_pcie()`: 4x A100 PCIe 40GB cards without NVLink bridges: `nvmlDeviceGetNvLinkState`
  answers "Not Supported" from link 0.
- `a100_hgx4_mig()`: an HGX A100 4-GPU board, where GPUs link to each other directly (4 links
  to each of the 3 others, 12 in all, no switch), MIG on for GPUs 0 and 1. Links past an A100's
  12th answer "Invalid Argument".
- `gh200()`: one Grace Hopper superchip, MIG on. Its GPU memory is a NUMA node of its own, the
  one platform where `nvmlDeviceGetNumaNodeId` answers (node 1 here, verify); on x86 servers
  it answers "Not Supported", as in the other machines. Its 18 NVLinks are unconnected
  (inactive) on a standalone superchip (verify).
- `no_driver()`: `nvmlInit` fails as pynvml fails without libnvidia-ml.so.1: it raises
  `NVMLError_LibraryNotFound` while handling the loader's `OSError`.

Memory totals are what `nvidia-smi` shows on those devices (81559, 40536, 81920, 97871 MiB).
"""

# The names below are pynvml's (nvmlDeviceGetName, NVMLError_NotSupported, busId), so that the
# fake can stand in for the module; pep8-naming would have them renamed.
# ruff: noqa: N801, N802, N815, N818

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Final

__all__ = ["ErrorClass", "FakeGpu", "FakeHandle", "FakeNvml", "FakeProcess"]

_MIB: Final = 1024 * 1024
_UUID_NAMESPACE: Final = uuid.UUID("6f1d0b8e-3c57-4b8e-9a52-0c1a4c9e7d10")


class NVMLError(Exception):
    """Base of the fake's errors, as `pynvml.NVMLError` is of pynvml's."""

    text = "Unknown Error"

    def __str__(self) -> str:
        """The text pynvml gives the same error."""
        return self.text


class NVMLError_Uninitialized(NVMLError):
    text = "Uninitialized"


class NVMLError_InvalidArgument(NVMLError):
    text = "Invalid Argument"


class NVMLError_NotSupported(NVMLError):
    text = "Not Supported"


class NVMLError_LibraryNotFound(NVMLError):
    text = "NVML Shared Library Not Found"


class NVMLError_DriverNotLoaded(NVMLError):
    text = "Driver Not Loaded"


class NVMLError_GpuIsLost(NVMLError):
    text = "GPU is lost"


class NVMLError_Unknown(NVMLError):
    text = "Unknown Error"


ErrorClass = type[NVMLError]
"""An error the fake raises; named outside `FakeNvml`, whose own `NVMLError` shadows it."""


@dataclass(frozen=True, slots=True)
class FakeProcess:
    """A compute process on a GPU: its host PID and the device memory it holds.

    `used_bytes` None is what pynvml answers where the driver cannot say (NVML's
    NVML_VALUE_NOT_AVAILABLE, e.g. without permission to see other users' processes).
    """

    pid: int
    used_bytes: int | None


@dataclass(frozen=True, slots=True)
class FakeGpu:
    """One device as the fake reports it.

    Attributes:
        name: `nvmlDeviceGetName`, e.g. "NVIDIA H100 80GB HBM3".
        uuid: `nvmlDeviceGetUUID`.
        memory_bytes: `nvmlDeviceGetMemoryInfo(h).total`.
        bus_id: `nvmlDeviceGetPciInfo(h).busId`, e.g. "00000000:1B:00.0".
        numa_node: `nvmlDeviceGetNumaNodeId`; None answers "Not Supported".
        mig_mode: The current `nvmlDeviceGetMigMode`; None answers "Not Supported".
        links: The PCI address at the far end of each NVLink, None for an inactive link; past
            the last link the state answers "Invalid Argument". None for no NVLink at all.
        memory_used_bytes: `nvmlDeviceGetMemoryInfo(h).used` (free is the rest of the total).
        utilization_percent: `nvmlDeviceGetUtilizationRates(h).gpu`.
        memory_busy_percent: `nvmlDeviceGetUtilizationRates(h).memory`.
        processes: What `nvmlDeviceGetComputeRunningProcesses` lists.
    """

    name: str
    uuid: str
    memory_bytes: int
    bus_id: str
    numa_node: int | None = None
    mig_mode: int | None = 0
    links: tuple[str | None, ...] | None = None
    memory_used_bytes: int = 0
    utilization_percent: int = 0
    memory_busy_percent: int = 0
    processes: tuple[FakeProcess, ...] = ()


@dataclass(frozen=True, slots=True)
class FakeHandle:
    """What `nvmlDeviceGetHandleByIndex` returns: opaque to callers, as NVML's handle is."""

    index: int


@dataclass(frozen=True, slots=True)
class FakeMemory:
    total: int
    free: int
    used: int


@dataclass(frozen=True, slots=True)
class FakePciInfo:
    busId: str | bytes
    busIdLegacy: str | bytes


@dataclass(frozen=True, slots=True)
class FakeUtilization:
    gpu: int
    memory: int


@dataclass(frozen=True, slots=True)
class FakeProcessInfo:
    """pynvml's c_nvmlProcessInfo_t, as `nvmlDeviceGetComputeRunningProcesses` returns it."""

    pid: int
    usedGpuMemory: int | None
    gpuInstanceId: int = 0xFFFFFFFF
    computeInstanceId: int = 0xFFFFFFFF


@dataclass
class FakeNvml:
    """A stand-in for the `pynvml` module on one machine; build one with a class method.

    Attributes:
        gpus: The devices, in NVML index order.
        driver_version: `nvmlSystemGetDriverVersion`.
        cuda_version: `nvmlSystemGetCudaDriverVersion`, e.g. 12040 for CUDA 12.4.
        strings_as_bytes: Answer bytes where pynvml answers str, as bindings before 11.x did.
        library_missing: `nvmlInit` fails as it does where libnvidia-ml.so.1 is absent.
        init_error: `nvmlInit` raises this error class instead.
        failures: (function name, GPU index) -> the error class that call raises; the index
            is -1 for the functions of no GPU (nvmlDeviceGetCount, nvmlSystemGet...).
        calls: Every call made, by function name, in order.
        initialised: Whether NVML is between `nvmlInit` and `nvmlShutdown`.
    """

    NVMLError = NVMLError
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_InvalidArgument = NVMLError_InvalidArgument
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_Unknown = NVMLError_Unknown

    # Unannotated, like the error classes above, so that they stay out of the dataclass fields.
    NVML_FEATURE_DISABLED = 0
    NVML_FEATURE_ENABLED = 1
    NVML_DEVICE_MIG_DISABLE = 0
    NVML_DEVICE_MIG_ENABLE = 1
    # nvml.h's value for the drivers these machines run; pynvml 13 says 36 (a later nvml.h).
    NVML_NVLINK_MAX_LINKS = 18

    gpus: tuple[FakeGpu, ...] = ()
    driver_version: str = "550.54.15"
    cuda_version: int = 12040
    strings_as_bytes: bool = False
    library_missing: bool = False
    init_error: ErrorClass | None = None
    failures: dict[tuple[str, int], ErrorClass] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    initialised: bool = False

    # -- the machines -------------------------------------------------------------------------

    @classmethod
    def h100_hgx(cls) -> FakeNvml:
        """8x H100 SXM 80GB on one HGX board, every GPU linked to all four NVSwitches."""
        switches = [f"00000000:{bus:02X}:00.0" for bus in (0x05, 0x06, 0x07, 0x08)]
        per_switch = (5, 4, 4, 5)
        links = tuple(
            switch for switch, count in zip(switches, per_switch, strict=True) for _ in range(count)
        )
        bus_ids = (0x1B, 0x43, 0x52, 0x61, 0x9D, 0xC3, 0xD1, 0xDF)
        return cls(
            gpus=tuple(
                FakeGpu(
                    name="NVIDIA H100 80GB HBM3",
                    uuid=_uuid("h100", index),
                    memory_bytes=85520809984,  # 81559 MiB
                    bus_id=f"00000000:{bus:02X}:00.0",
                    links=links,
                )
                for index, bus in enumerate(bus_ids)
            ),
            driver_version="550.54.15",
            cuda_version=12040,
        )

    @classmethod
    def a100_pcie(cls) -> FakeNvml:
        """4x A100 PCIe 40GB cards, no NVLink bridges."""
        bus_ids = (0x17, 0x65, 0xCA, 0xE3)
        return cls(
            gpus=tuple(
                FakeGpu(
                    name="NVIDIA A100-PCIE-40GB",
                    uuid=_uuid("a100-pcie", index),
                    memory_bytes=40536 * _MIB,
                    bus_id=f"00000000:{bus:02X}:00.0",
                )
                for index, bus in enumerate(bus_ids)
            ),
            driver_version="535.161.08",
            cuda_version=12020,
        )

    @classmethod
    def a100_hgx4_mig(cls) -> FakeNvml:
        """4x A100 SXM4 80GB linked directly to each other (HGX A100 4-GPU), MIG on 0 and 1."""
        bus_ids = [f"00000000:{bus:02X}:00.0" for bus in (0x01, 0x41, 0x81, 0xC1)]
        return cls(
            gpus=tuple(
                FakeGpu(
                    name="NVIDIA A100-SXM4-80GB",
                    uuid=_uuid("a100-sxm4", index),
                    memory_bytes=81920 * _MIB,
                    bus_id=bus_id,
                    mig_mode=1 if index < 2 else 0,
                    links=tuple(other for other in bus_ids if other != bus_id for _ in range(4)),
                )
                for index, bus_id in enumerate(bus_ids)
            ),
            driver_version="535.161.08",
            cuda_version=12020,
        )

    @classmethod
    def gh200(cls) -> FakeNvml:
        """One GH200 superchip: GPU memory on NUMA node 1, MIG on, NVLinks unconnected."""
        return cls(
            gpus=(
                FakeGpu(
                    name="NVIDIA GH200 480GB",
                    uuid=_uuid("gh200", 0),
                    memory_bytes=97871 * _MIB,
                    bus_id="00000009:01:00.0",
                    numa_node=1,
                    mig_mode=1,
                    links=(None,) * 18,
                ),
            ),
            driver_version="560.35.03",
            cuda_version=12060,
        )

    @classmethod
    def no_driver(cls) -> FakeNvml:
        """A machine without the NVIDIA driver: `nvmlInit` cannot load libnvidia-ml.so.1."""
        return cls(library_missing=True)

    def load(
        self,
        index: int,
        *,
        memory_used_bytes: int = 0,
        utilization_percent: int = 0,
        memory_busy_percent: int = 0,
        processes: tuple[FakeProcess, ...] = (),
    ) -> FakeNvml:
        """Give GPU `index` this load (replacing its last one); returns the fake, for chaining."""
        gpus = list(self.gpus)
        gpus[index] = replace(
            gpus[index],
            memory_used_bytes=memory_used_bytes,
            utilization_percent=utilization_percent,
            memory_busy_percent=memory_busy_percent,
            processes=processes,
        )
        self.gpus = tuple(gpus)
        return self

    # -- NVML ---------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.library_missing:
            try:
                raise OSError(
                    "libnvidia-ml.so.1: cannot open shared object file: No such file or directory"
                )
            except OSError:
                # pynvml raises it just so, leaving the loader's OSError as its context.
                raise NVMLError_LibraryNotFound()  # noqa: B904
        if self.init_error is not None:
            raise self.init_error()
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._enter("nvmlSystemGetDriverVersion")
        return self._string(self.driver_version)

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion")
        return self.cuda_version

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._enter("nvmlDeviceGetHandleByIndex", index)
        if not 0 <= index < len(self.gpus):
            raise NVMLError_InvalidArgument()
        return FakeHandle(index)

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str | bytes:
        return self._string(self._gpu("nvmlDeviceGetName", handle).name)

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str | bytes:
        return self._string(self._gpu("nvmlDeviceGetUUID", handle).uuid)

    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle) -> FakeMemory:
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        used = gpu.memory_used_bytes
        return FakeMemory(total=gpu.memory_bytes, free=gpu.memory_bytes - used, used=used)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> FakeUtilization:
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return FakeUtilization(gpu=gpu.utilization_percent, memory=gpu.memory_busy_percent)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> list[FakeProcessInfo]:
        gpu = self._gpu("nvmlDeviceGetComputeRunningProcesses", handle)
        return [FakeProcessInfo(pid=p.pid, usedGpuMemory=p.used_bytes) for p in gpu.processes]

    def nvmlDeviceGetPciInfo(self, handle: FakeHandle) -> FakePciInfo:
        return self._pci_info(self._gpu("nvmlDeviceGetPciInfo", handle).bus_id)

    def nvmlDeviceGetNumaNodeId(self, handle: FakeHandle) -> int:
        node = self._gpu("nvmlDeviceGetNumaNodeId", handle).numa_node
        if node is None:
            raise NVMLError_NotSupported()
        return node

    def nvmlDeviceGetMigMode(self, handle: FakeHandle) -> list[int]:
        mode = self._gpu("nvmlDeviceGetMigMode", handle).mig_mode
        if mode is None:
            raise NVMLError_NotSupported()
        return [mode, mode]  # [current, pending]: no change pending

    def nvmlDeviceGetNvLinkState(self, handle: FakeHandle, link: int) -> int:
        far_end = self._far_end("nvmlDeviceGetNvLinkState", handle, link)
        return self.NVML_FEATURE_DISABLED if far_end is None else self.NVML_FEATURE_ENABLED

    def nvmlDeviceGetNvLinkRemotePciInfo(self, handle: FakeHandle, link: int) -> FakePciInfo:
        far_end = self._far_end("nvmlDeviceGetNvLinkRemotePciInfo", handle, link)
        if far_end is None:
            raise NVMLError_NotSupported()
        return self._pci_info(far_end)

    # -- plumbing -----------------------------------------------------------------------------

    def _enter(self, function: str, index: int | None = None) -> None:
        self.calls.append(function)
        if not self.initialised:
            raise NVMLError_Uninitialized()
        failure = self.failures.get((function, -1 if index is None else index))
        if failure is not None:
            raise failure()

    def _gpu(self, function: str, handle: FakeHandle) -> FakeGpu:
        self._enter(function, handle.index)
        return self.gpus[handle.index]

    def _far_end(self, function: str, handle: FakeHandle, link: int) -> str | None:
        links = self._gpu(function, handle).links
        if links is None:
            raise NVMLError_NotSupported()
        if not 0 <= link < len(links):
            raise NVMLError_InvalidArgument()
        return links[link]

    def _string(self, text: str) -> str | bytes:
        return text.encode() if self.strings_as_bytes else text

    def _pci_info(self, bus_id: str) -> FakePciInfo:
        domain, rest = bus_id.split(":", 1)
        legacy = f"{int(domain, 16):04X}:{rest}"
        return FakePciInfo(busId=self._string(bus_id), busIdLegacy=self._string(legacy))


def _uuid(board: str, index: int) -> str:
    """A UUID in NVML's "GPU-<uuid>" form, the same on every run."""
    return f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{board}-{index}')}"
