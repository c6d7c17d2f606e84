"""GPU metrics: read from NVML at each scrape, processes mapped to pods through a fake /proc."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scheduler_service.agent import GpuCollector, PodRef, pod_uid_from_cgroup, pod_uid_of_process
from tests.gpus.fake_nvml import FakeNvml, FakeProcess, NVMLError_GpuIsLost, NVMLError_NotSupported

GIB = 1 << 30
UID_A = "0b9f0d2a-6c1e-4f3a-9d2b-5e8c7a6b4f10"
UID_B = "7d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0"
STATIC_UID = "5f1b8a0e0f3b6c0c5d8b9a7e6f5d4c3b"
CONTAINER = "a" * 64

# /proc/<pid>/cgroup as the kubelet's cgroup drivers and the container runtimes leave it.
CGROUPS = {
    "v2 systemd containerd": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
        f"{UID_A.replace('-', '_')}.slice/cri-containerd-{CONTAINER}.scope\n",
        UID_A,
    ),
    "v2 systemd cri-o": (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
        f"{UID_A.replace('-', '_')}.slice/crio-{CONTAINER}.scope\n",
        UID_A,
    ),
    "v2 systemd guaranteed": (
        f"0::/kubepods.slice/kubepods-pod{UID_A.replace('-', '_')}.slice/"
        f"cri-containerd-{CONTAINER}.scope\n",
        UID_A,
    ),
    "v2 cgroupfs": (f"0::/kubepods/burstable/pod{UID_A}/{CONTAINER}\n", UID_A),
    "v2 seen from a private cgroup namespace": (
        f"0::/../../kubepods-besteffort-pod{UID_A.replace('-', '_')}.slice/"
        f"cri-containerd-{CONTAINER}.scope\n",
        UID_A,
    ),
    "v1 cgroupfs containerd": (
        f"12:pids:/kubepods/burstable/pod{UID_B}/{CONTAINER}\n"
        f"11:memory:/kubepods/burstable/pod{UID_B}/{CONTAINER}\n"
        f"1:name=systemd:/kubepods/burstable/pod{UID_B}/{CONTAINER}\n",
        UID_B,
    ),
    "v1 systemd cri-o": (
        f"13:cpuset:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
        f"{UID_B.replace('-', '_')}.slice/crio-{CONTAINER}.scope\n"
        "0::/\n",
        UID_B,
    ),
    "v1 docker guaranteed": (f"4:devices:/kubepods/pod{UID_B}/{CONTAINER}\n", UID_B),
    "static pod": (f"0::/kubepods/besteffort/pod{STATIC_UID}/{CONTAINER}\n", STATIC_UID),
    "host process": ("0::/system.slice/nvidia-persistenced.service\n", None),
    "user session": ("0::/user.slice/user-1000.slice/session-4.scope\n", None),
    "qos slice only": ("0::/kubepods.slice/kubepods-burstable.slice\n", None),
    "empty": ("", None),
}


@pytest.mark.parametrize(("text", "uid"), CGROUPS.values(), ids=CGROUPS.keys())
def test_the_pod_uid_is_read_from_every_cgroup_layout(text: str, uid: str | None) -> None:
    assert pod_uid_from_cgroup(text) == uid


def _proc(root: Path, pids: Mapping[int, str]) -> Path:
    for pid, text in pids.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cgroup").write_text(text)
    return root


def test_a_process_is_mapped_through_its_proc_entry(tmp_path: Path) -> None:
    proc = _proc(tmp_path, {42: CGROUPS["v2 cgroupfs"][0], 43: CGROUPS["host process"][0]})

    assert pod_uid_of_process(42, proc) == UID_A
    assert pod_uid_of_process(43, proc) is None
    assert pod_uid_of_process(44, proc) is None  # exited since NVML listed it


class Resolver:
    """Knows pod A only; records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[set[str]] = []

    def __call__(self, uids: Collection[str]) -> dict[str, PodRef]:
        self.asked.append(set(uids))
        known = {UID_A: PodRef("team-vision", "train-0")}
        return {uid: known[uid] for uid in uids if uid in known}


def _scrape(collector: GpuCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


Sample = tuple[dict[str, str], float]


def _samples(text: str, name: str) -> list[Sample]:
    """Every sample of the family `name` in an exposition, as (labels, value), in text order."""
    return [
        (dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def _by_gpu(text: str, name: str) -> dict[str, float]:
    return {labels["gpu"]: value for labels, value in _samples(text, name)}


def _loaded_machine() -> FakeNvml:
    nvml = FakeNvml.h100_hgx()
    nvml.load(
        0,
        memory_used_bytes=5 * GIB,
        utilization_percent=87,
        memory_busy_percent=40,
        processes=(
            FakeProcess(pid=101, used_bytes=3 * GIB),  # pod A
            FakeProcess(pid=102, used_bytes=None),  # pod A: NVML cannot say
            FakeProcess(pid=301, used_bytes=GIB),  # the host's own
            FakeProcess(pid=401, used_bytes=GIB),  # gone before /proc was read
        ),
    )
    nvml.load(3, memory_used_bytes=2 * GIB, processes=(FakeProcess(pid=201, used_bytes=2 * GIB),))
    return nvml


def test_a_scrape_reports_every_gpu_and_each_pods_memory(tmp_path: Path) -> None:
    nvml = _loaded_machine()
    proc = _proc(
        tmp_path,
        {
            101: CGROUPS["v2 systemd containerd"][0],
            102: CGROUPS["v2 systemd containerd"][0],
            201: CGROUPS["v1 cgroupfs containerd"][0],
            301: CGROUPS["host process"][0],
        },
    )
    resolver = Resolver()

    text = _scrape(GpuCollector("gpu-1", nvml=nvml, proc_root=proc, resolve_pods=resolver))

    model = "NVIDIA-H100-80GB-HBM3"
    gpu0 = {"node": "gpu-1", "gpu": "0", "uuid": nvml.gpus[0].uuid, "model": model}
    gpu3 = {"node": "gpu-1", "gpu": "3", "uuid": nvml.gpus[3].uuid, "model": model}
    assert _samples(text, "aistack_gpu_nvml_up") == [({"node": "gpu-1"}, 1.0)]
    totals = _samples(text, "aistack_gpu_memory_total_bytes")
    assert totals[0][0] == gpu0
    assert {value for _, value in totals} == {85520809984}
    assert len(totals) == 8
    assert _by_gpu(text, "aistack_gpu_memory_used_bytes") == {
        "0": 5 * GIB,
        "3": 2 * GIB,
        **{str(i): 0 for i in (1, 2, 4, 5, 6, 7)},
    }
    assert _by_gpu(text, "aistack_gpu_utilization_ratio")["0"] == 0.87
    assert _by_gpu(text, "aistack_gpu_memory_busy_ratio")["0"] == 0.4
    assert _by_gpu(text, "aistack_gpu_utilization_ratio")["3"] == 0.0
    pod_a = {"namespace": "team-vision", "pod": "train-0", "pod_uid": UID_A}
    pod_b = {"namespace": "", "pod": "", "pod_uid": UID_B}  # not on this node's list
    assert _samples(text, "aistack_gpu_pod_memory_used_bytes") == [
        (gpu0 | pod_a, 3 * GIB),  # pid 102 counts no bytes
        (gpu3 | pod_b, 2 * GIB),
    ]
    assert _samples(text, "aistack_gpu_pod_processes") == [(gpu0 | pod_a, 2), (gpu3 | pod_b, 1)]
    assert resolver.asked == [{UID_A, UID_B}]  # once per scrape, for every pod seen


def test_each_scrape_reads_nvml_afresh_and_shuts_it_down(tmp_path: Path) -> None:
    nvml = FakeNvml.a100_pcie()
    collector = GpuCollector("n", nvml=nvml, proc_root=tmp_path)

    first = _scrape(collector)
    nvml.load(1, utilization_percent=55)
    second = _scrape(collector)

    assert _by_gpu(first, "aistack_gpu_utilization_ratio")["1"] == 0.0
    assert _by_gpu(second, "aistack_gpu_utilization_ratio")["1"] == 0.55
    assert nvml.calls.count("nvmlInit") == 2
    assert nvml.calls[-1] == "nvmlShutdown"
    assert not nvml.initialised


def test_registering_the_collector_reads_no_nvml() -> None:
    nvml = FakeNvml.h100_hgx()

    CollectorRegistry().register(GpuCollector("n", nvml=nvml))

    assert nvml.calls == []


def test_without_a_driver_only_nvml_up_zero_is_reported() -> None:
    nvml = FakeNvml.no_driver()

    text = _scrape(GpuCollector("n", nvml=nvml))

    samples = [
        (sample.name, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]
    assert samples == [("aistack_gpu_nvml_up", 0.0)]


def test_the_real_pynvml_without_a_driver_reports_nvml_down() -> None:
    text = _scrape(GpuCollector("n"))

    assert _samples(text, "aistack_gpu_nvml_up") == [({"node": "n"}, 0.0)]


def test_a_gpu_that_fails_is_left_out_and_an_unsupported_value_alone(tmp_path: Path) -> None:
    nvml = FakeNvml.a100_pcie()
    nvml.failures[("nvmlDeviceGetMemoryInfo", 2)] = NVMLError_GpuIsLost
    nvml.failures[("nvmlDeviceGetUtilizationRates", 1)] = NVMLError_NotSupported
    nvml.failures[("nvmlDeviceGetComputeRunningProcesses", 0)] = NVMLError_NotSupported

    text = _scrape(GpuCollector("n", nvml=nvml, proc_root=tmp_path))

    assert list(_by_gpu(text, "aistack_gpu_memory_total_bytes")) == ["0", "1", "3"]
    assert list(_by_gpu(text, "aistack_gpu_utilization_ratio")) == ["0", "3"]
    assert _samples(text, "aistack_gpu_nvml_up") == [({"node": "n"}, 1.0)]
    assert not nvml.initialised


def test_without_a_resolver_pods_are_named_by_uid(tmp_path: Path) -> None:
    nvml = FakeNvml.gh200().load(0, processes=(FakeProcess(pid=7, used_bytes=GIB),))
    proc = _proc(tmp_path, {7: CGROUPS["v2 cgroupfs"][0]})

    text = _scrape(GpuCollector("n", nvml=nvml, proc_root=proc))

    ((labels, value),) = _samples(text, "aistack_gpu_pod_memory_used_bytes")
    assert (labels["namespace"], labels["pod"], labels["pod_uid"], value) == ("", "", UID_A, GIB)


def test_no_pod_processes_ask_the_resolver_nothing(tmp_path: Path) -> None:
    resolver = Resolver()

    _scrape(GpuCollector("n", nvml=FakeNvml.h100_hgx(), proc_root=tmp_path, resolve_pods=resolver))

    assert resolver.asked == []
