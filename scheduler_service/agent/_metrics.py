"""The node's GPU metrics for Prometheus, read from NVML when scraped.

`GpuCollector` is a custom collector: every scrape opens NVML, reads each GPU and shuts NVML
down again, so a scrape shows the devices as they are (not as the last sync saw them) and the
agent holds no device file open between scrapes, which would keep a driver upgrade from
unloading the kernel module. Opening NVML is cheap where nvidia-persistenced runs, as it does on
GPU nodes set up by the GPU operator (without it the driver sets every GPU up on each open).

Series (every name starts with `aistack_gpu_` and ends with its unit):

    aistack_gpu_nvml_up{node}                              1 if NVML answered this scrape
    aistack_gpu_memory_total_bytes{node,gpu,uuid,model}    device memory
    aistack_gpu_memory_used_bytes{...}                     memory in use, by anything
    aistack_gpu_utilization_ratio{...}                     time a kernel ran, last sample (0-1)
    aistack_gpu_memory_busy_ratio{...}                     time memory was read or written (0-1)
    aistack_gpu_pod_memory_used_bytes{...,namespace,pod,pod_uid}   memory held by a pod's
                                                           processes on that GPU
    aistack_gpu_pod_processes{...,namespace,pod,pod_uid}   the pod's compute processes there

`gpu` is NVML's index, `model` the product as the label `nvidia.com/gpu.product` spells it.
A pod's processes are found by PID: NVML lists host PIDs, and `/proc/<pid>/cgroup` names the
pod's UID (hence the agent's `hostPID`). `namespace` and `pod` are filled in where the agent
knows the UID (pods bound to its node), else empty; `pod_uid` is always set. Processes in no
pod (the host's own) are left out of the pod series; they still count in memory used. A
process whose memory NVML cannot report (None, e.g. under MIG) counts as a process but adds
no bytes, so a pod's memory is then a lower bound. A device that fails a read is left out of
that scrape; a value NVML does not support (utilisation on some devices) is left out alone.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from prometheus_client.core import GaugeMetricFamily, Metric

__all__ = [
    "GpuCollector",
    "PodRef",
    "PodResolver",
    "pod_uid_from_cgroup",
    "pod_uid_of_process",
]

_log = logging.getLogger(__name__)

_GPU_LABELS: Final = ("node", "gpu", "uuid", "model")
_POD_LABELS: Final = (*_GPU_LABELS, "namespace", "pod", "pod_uid")

# The kubelet names a pod's cgroup after its UID: `pod<uid>` with the cgroupfs driver
# (/kubepods/burstable/pod0b9f.../<container>), `kubepods-<qos>-pod<uid>.slice` with systemd,
# where '-' in the UID becomes '_'. Static pods have a 32-digit hash for a UID, without dashes.
_POD_UID: Final = re.compile(
    r"(?<=[/-])pod(?P<uid>"
    r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
    r"|[0-9a-f]{32}"
    r")(?=\.slice|/|$)"
)


@dataclass(frozen=True, slots=True)
class PodRef:
    """A pod as metrics name it."""

    namespace: str
    name: str


PodResolver = Callable[[Collection[str]], Mapping[str, PodRef]]
"""Pod UIDs to the pods they belong to; UIDs it does not know are left out of the answer."""


def pod_uid_from_cgroup(text: str) -> str | None:
    """The UID of the pod whose cgroup a `/proc/<pid>/cgroup` file names, or None.

    Reads both layouts: cgroup v1 (one `id:controllers:path` line per hierarchy) and v2 (one
    `0::path` line), with the kubelet's cgroupfs or systemd driver, under containerd
    (`cri-containerd-<id>.scope`), CRI-O (`crio-<id>.scope`) or Docker. A path relative to the
    reader's own cgroup namespace (`0::/../../kubepods-...`) reads the same. The UID comes back
    as the API server writes it, with '-'.
    """
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        found = _POD_UID.search(path)
        if found is not None:
            return found["uid"].replace("_", "-")
    return None


def pod_uid_of_process(pid: int, proc_root: Path) -> str | None:
    """The pod UID of process `pid` from `<proc_root>/<pid>/cgroup`; None outside a pod.

    None too when the process is gone or its file cannot be read (a process may exit between
    NVML's list and this read).
    """
    try:
        text = (proc_root / str(pid) / "cgroup").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return pod_uid_from_cgroup(text)


@dataclass(frozen=True, slots=True)
class _Gpu:
    labels: tuple[str, str, str, str]
    memory_total_bytes: int
    memory_used_bytes: int
    utilization: tuple[int, int] | None
    processes: tuple[tuple[int, int | None], ...]


class GpuCollector:
    """Prometheus collector of one node's GPUs, read from NVML at every scrape.

    Register it with a `CollectorRegistry`. Thread-safe: scrapes may overlap each other and the
    agent's syncs, and NVML sessions are serialised with `nvml_lock` (share the agent's).
    """

    def __init__(
        self,
        node_name: str,
        *,
        nvml: Any = None,
        proc_root: Path = Path("/proc"),
        resolve_pods: PodResolver | None = None,
        nvml_lock: threading.Lock | None = None,
    ) -> None:
        """A collector for `node_name`.

        Args:
            node_name: The `node` label of every series.
            nvml: The module to call, `pynvml` when None; tests pass a fake.
            proc_root: Where the host's processes are (`/proc` in a pod with `hostPID`).
            resolve_pods: Names pods by UID; None leaves `namespace` and `pod` empty.
            nvml_lock: Held while NVML is open.
        """
        self._node = node_name
        self._nvml = nvml
        self._proc_root = proc_root
        self._resolve_pods = resolve_pods
        self._lock = nvml_lock or threading.Lock()

    def __repr__(self) -> str:
        return f"GpuCollector(node={self._node!r}, proc_root={str(self._proc_root)!r})"

    def describe(self) -> Iterator[Metric]:
        """The families, empty: lets a registry check names without reading NVML."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        """Read NVML now and yield every family; NVML not answering gives `nvml_up` 0."""
        gpus = self._read()
        read = gpus or []
        families = self._families()
        up, total, used, utilization, busy, pod_memory, pod_processes = families
        up.add_metric([self._node], 0.0 if gpus is None else 1.0)
        for gpu in read:
            total.add_metric(gpu.labels, gpu.memory_total_bytes)
            used.add_metric(gpu.labels, gpu.memory_used_bytes)
            if gpu.utilization is not None:
                utilization.add_metric(gpu.labels, gpu.utilization[0] / 100)
                busy.add_metric(gpu.labels, gpu.utilization[1] / 100)
        for labels, (memory, processes) in sorted(self._by_pod(read).items()):
            pod_memory.add_metric(labels, memory)
            pod_processes.add_metric(labels, processes)
        yield from families

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        gpu, pod = list(_GPU_LABELS), list(_POD_LABELS)
        return (
            GaugeMetricFamily(
                "aistack_gpu_nvml_up",
                "1 if NVML answered this scrape, 0 if it could not be opened.",
                labels=["node"],
            ),
            GaugeMetricFamily(
                "aistack_gpu_memory_total_bytes", "The GPU's device memory.", labels=gpu
            ),
            GaugeMetricFamily(
                "aistack_gpu_memory_used_bytes",
                "Device memory in use, by every process and the driver.",
                labels=gpu,
            ),
            GaugeMetricFamily(
                "aistack_gpu_utilization_ratio",
                "Share of NVML's last sample period in which a kernel ran on the GPU.",
                labels=gpu,
            ),
            GaugeMetricFamily(
                "aistack_gpu_memory_busy_ratio",
                "Share of NVML's last sample period in which device memory was read or written.",
                labels=gpu,
            ),
            GaugeMetricFamily(
                "aistack_gpu_pod_memory_used_bytes",
                "Device memory held by the pod's processes on the GPU (processes whose memory "
                "NVML cannot report add nothing).",
                labels=pod,
            ),
            GaugeMetricFamily(
                "aistack_gpu_pod_processes",
                "The pod's compute processes on the GPU.",
                labels=pod,
            ),
        )

    def _read(self) -> list[_Gpu] | None:
        """Every GPU NVML can read now, or None when NVML cannot be opened."""
        nvml = self._nvml
        if nvml is None:
            try:
                nvml = importlib.import_module("pynvml")
            except ImportError:
                return None
        with self._lock:
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as error:
                _log.debug("NVML could not be opened for a scrape: %s", error)
                return None
            try:
                gpus = []
                for index in range(int(nvml.nvmlDeviceGetCount())):
                    try:
                        gpus.append(self._read_gpu(nvml, index))
                    except nvml.NVMLError as error:
                        _log.debug("GPU %d left out of the scrape: %s", index, error)
                return gpus
            except nvml.NVMLError as error:
                _log.debug("NVML could not list the GPUs for a scrape: %s", error)
                return None
            finally:
                with contextlib.suppress(nvml.NVMLError):
                    nvml.nvmlShutdown()

    def _read_gpu(self, nvml: Any, index: int) -> _Gpu:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        labels = (
            self._node,
            str(index),
            _text(nvml.nvmlDeviceGetUUID(handle)),
            "-".join(_text(nvml.nvmlDeviceGetName(handle)).split()),  # as gpu_discovery names it
        )
        utilization: tuple[int, int] | None = None
        # Either may be unsupported (utilisation under MIG, processes in some VMs): that series
        # is left out, the GPU's others stay.
        with contextlib.suppress(nvml.NVMLError):
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            utilization = (int(rates.gpu), int(rates.memory))
        processes: tuple[tuple[int, int | None], ...] = ()
        with contextlib.suppress(nvml.NVMLError):
            processes = tuple(
                (int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory))
                for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            )
        return _Gpu(
            labels=labels,
            memory_total_bytes=int(memory.total),
            memory_used_bytes=int(memory.used),
            utilization=utilization,
            processes=processes,
        )

    def _by_pod(self, gpus: list[_Gpu]) -> dict[tuple[str, ...], tuple[int, int]]:
        """(GPU labels + pod labels) -> (memory bytes, processes), over every GPU's processes."""
        uid_of: dict[int, str | None] = {}
        for gpu in gpus:
            for pid, _memory in gpu.processes:
                if pid not in uid_of:
                    uid_of[pid] = pod_uid_of_process(pid, self._proc_root)
        uids = {uid for uid in uid_of.values() if uid is not None}
        pods: Mapping[str, PodRef] = {}
        if uids and self._resolve_pods is not None:
            pods = self._resolve_pods(uids)
        totals: dict[tuple[str, ...], tuple[int, int]] = {}
        for gpu in gpus:
            for pid, memory in gpu.processes:
                uid = uid_of[pid]
                if uid is None:
                    continue
                pod = pods.get(uid)
                key = (*gpu.labels, *((pod.namespace, pod.name) if pod else ("", "")), uid)
                bytes_so_far, count = totals.get(key, (0, 0))
                totals[key] = (bytes_so_far + (memory or 0), count + 1)
        return totals


def _text(value: object) -> str:
    # pynvml returns str since 11.x; older bindings return bytes.
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value).strip("\x00").strip()
