"""GPU discovery: what NVML reports on real machine shapes, simulated specs, and the JSON record.

NVML is the fake of `fake_nvml` except in one test, which calls the real `pynvml` on this
machine (no driver) and expects the same "none" answer a laptop gets.
"""

from __future__ import annotations

import ctypes
import json
import re
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_service.gpu_discovery import (
    MAX_SIMULATED_GPUS,
    SIMULATED_MODELS,
    DiscoveredGpu,
    GpuSpecError,
    Machine,
    discover,
    machine_from_json,
    machine_to_json,
    simulated,
)
from tests.gpus.fake_nvml import ErrorClass, FakeNvml

# -- real machine shapes --------------------------------------------------------------------------


def test_h100_hgx_board_reports_every_gpu_and_the_switch_fabric_links_all_of_them() -> None:
    nvml = FakeNvml.h100_hgx()

    machine = discover(nvml)

    assert machine.source == "nvml"
    assert (machine.driver_version, machine.cuda_version, machine.note) == ("550.54.15", "12.4", "")
    assert [gpu.index for gpu in machine.gpus] == list(range(8))
    assert [gpu.uuid for gpu in machine.gpus] == [fake.uuid for fake in nvml.gpus]
    for gpu in machine.gpus:
        assert gpu.model == "NVIDIA-H100-80GB-HBM3"
        assert gpu.memory_mib == 81559
        assert gpu.numa_node == 0  # x86: NVML does not report a GPU NUMA node
        assert gpu.nvlink_peers == tuple(other for other in range(8) if other != gpu.index)
        assert not gpu.mig_enabled
        assert not gpu.simulated


def test_pcie_cards_without_nvlink_have_no_peers_and_the_link_scan_stops_at_link_0() -> None:
    nvml = FakeNvml.a100_pcie()

    machine = discover(nvml)

    assert [(gpu.model, gpu.memory_mib, gpu.nvlink_peers) for gpu in machine.gpus] == [
        ("NVIDIA-A100-PCIE-40GB", 40536, ())
    ] * 4
    assert machine.cuda_version == "12.2"
    assert nvml.calls.count("nvmlDeviceGetNvLinkState") == 4


def test_directly_linked_gpus_are_peers_and_mig_mode_is_read_per_gpu() -> None:
    nvml = FakeNvml.a100_hgx4_mig()

    machine = discover(nvml)

    assert [gpu.nvlink_peers for gpu in machine.gpus] == [
        (1, 2, 3),
        (0, 2, 3),
        (0, 1, 3),
        (0, 1, 2),
    ]
    assert [gpu.mig_enabled for gpu in machine.gpus] == [True, True, False, False]
    assert {gpu.memory_mib for gpu in machine.gpus} == {81920}
    # An A100 has 12 links: the 13th answers Invalid Argument and ends the scan.
    assert nvml.calls.count("nvmlDeviceGetNvLinkState") == 4 * 13


def test_grace_hopper_reports_its_gpu_numa_node_mig_and_no_active_links() -> None:
    machine = discover(FakeNvml.gh200())

    assert machine.gpus == (
        DiscoveredGpu(
            index=0,
            uuid=FakeNvml.gh200().gpus[0].uuid,
            model="NVIDIA-GH200-480GB",
            memory_mib=97871,
            numa_node=1,
            mig_enabled=True,
        ),
    )


def test_bytes_from_old_bindings_read_the_same_as_str() -> None:
    as_bytes = FakeNvml.h100_hgx()
    as_bytes.strings_as_bytes = True

    assert discover(as_bytes) == discover(FakeNvml.h100_hgx())


def test_nvml_is_shut_down_after_a_discovery() -> None:
    nvml = FakeNvml.h100_hgx()

    discover(nvml)

    assert nvml.calls[0] == "nvmlInit"
    assert nvml.calls[-1] == "nvmlShutdown"
    assert not nvml.initialised


# -- no NVML --------------------------------------------------------------------------------------


def test_no_driver_gives_no_gpus_and_a_note_saying_why_and_what_to_do() -> None:
    nvml = FakeNvml.no_driver()

    machine = discover(nvml)

    assert machine.source == "none"
    assert machine.gpus == ()
    assert machine.note.startswith("no NVIDIA driver: NVML could not be loaded (")
    assert "libnvidia-ml.so.1: cannot open shared object file" in machine.note
    assert machine.note.endswith("pass --simulate-gpus 4xH100-80GB to run with simulated GPUs")
    assert nvml.calls == ["nvmlInit"]  # nothing to shut down after a failed init


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (FakeNvml.NVMLError_DriverNotLoaded, "the NVIDIA driver is installed but not loaded"),
        (FakeNvml.NVMLError_Unknown, "NVML could not be initialised (Unknown Error)"),
    ],
)
def test_any_init_failure_gives_no_gpus_with_the_reason(error: ErrorClass, says: str) -> None:
    nvml = FakeNvml.h100_hgx()
    nvml.init_error = error

    machine = discover(nvml)

    assert machine.source == "none"
    assert machine.note.startswith(says)
    assert "--simulate-gpus" in machine.note


def test_missing_bindings_give_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError

    machine = discover()

    assert machine.source == "none"
    assert machine.note.startswith("the NVML bindings (nvidia-ml-py) are not installed")


def _driver_present() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_driver_present(), reason="this machine has an NVIDIA driver")
def test_the_real_pynvml_without_a_driver_gives_no_gpus() -> None:
    machine = discover()

    assert machine.source == "none"
    assert machine.note.startswith(
        "no NVIDIA driver: NVML could not be loaded (NVML Shared Library Not Found: "
        "libnvidia-ml.so.1"
    )


# -- failures on one device -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "function",
    [
        "nvmlDeviceGetNumaNodeId",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetNvLinkState",
        "nvmlDeviceGetNvLinkRemotePciInfo",
    ],
)
def test_an_optional_field_that_fails_keeps_the_device_with_defaults(function: str) -> None:
    nvml = FakeNvml.h100_hgx()
    nvml.failures[function, 3] = FakeNvml.NVMLError_Unknown

    machine = discover(nvml)

    assert [gpu.index for gpu in machine.gpus] == list(range(8))
    assert machine.note == ""
    gpu_3 = machine.gpus[3]
    assert (gpu_3.uuid, gpu_3.memory_mib, gpu_3.numa_node, gpu_3.mig_enabled) == (
        nvml.gpus[3].uuid,
        81559,
        0,
        False,
    )
    if function.startswith("nvmlDeviceGetNvLink"):
        # Its links unread, GPU 3 shows no peers, and no other GPU claims it as one.
        assert gpu_3.nvlink_peers == ()
        assert all(3 not in gpu.nvlink_peers for gpu in machine.gpus)


def test_bindings_without_an_optional_function_keep_the_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nvml = FakeNvml.gh200()

    def missing(handle: object) -> int:
        raise AttributeError("module 'pynvml' has no attribute 'nvmlDeviceGetNumaNodeId'")

    monkeypatch.setattr(nvml, "nvmlDeviceGetNumaNodeId", missing)

    assert [gpu.numa_node for gpu in discover(nvml).gpus] == [0]


def test_a_device_whose_identity_cannot_be_read_is_left_out_and_named() -> None:
    nvml = FakeNvml.h100_hgx()
    nvml.failures["nvmlDeviceGetUUID", 2] = FakeNvml.NVMLError_GpuIsLost

    machine = discover(nvml)

    assert [gpu.index for gpu in machine.gpus] == [0, 1, 3, 4, 5, 6, 7]
    assert machine.note == "GPU 2 left out: GPU is lost"
    assert machine.describe()[0] == (
        "7 GPUs from NVML (driver 550.54.15, CUDA 12.4); GPU 2 left out: GPU is lost"
    )
    # Only GPUs that were read are anyone's peers.
    assert machine.gpus[0].nvlink_peers == (1, 3, 4, 5, 6, 7)
    assert nvml.calls[-1] == "nvmlShutdown"


def test_a_failure_listing_devices_gives_no_gpus_and_shuts_nvml_down() -> None:
    nvml = FakeNvml.h100_hgx()
    nvml.failures["nvmlDeviceGetCount", -1] = FakeNvml.NVMLError_Unknown

    machine = discover(nvml)

    assert machine.source == "none"
    assert machine.note.startswith("NVML failed while listing devices: Unknown Error")
    assert nvml.calls[-1] == "nvmlShutdown"
    assert not nvml.initialised


def test_a_bug_propagates_and_nvml_is_still_shut_down(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml.h100_hgx()

    def broken(handle: object) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr(nvml, "nvmlDeviceGetName", broken)

    with pytest.raises(RuntimeError, match="boom"):
        discover(nvml)
    assert nvml.calls[-1] == "nvmlShutdown"
    assert not nvml.initialised


def test_a_failed_shutdown_does_not_lose_the_answer() -> None:
    nvml = FakeNvml.a100_pcie()
    nvml.failures["nvmlShutdown", -1] = FakeNvml.NVMLError_Unknown

    assert len(discover(nvml).gpus) == 4


def test_versions_that_cannot_be_read_are_none() -> None:
    nvml = FakeNvml.a100_pcie()
    nvml.failures["nvmlSystemGetDriverVersion", -1] = FakeNvml.NVMLError_Unknown
    nvml.failures["nvmlSystemGetCudaDriverVersion", -1] = FakeNvml.NVMLError_NotSupported

    machine = discover(nvml)

    assert (machine.driver_version, machine.cuda_version) == (None, None)
    assert machine.describe()[0] == "4 GPUs from NVML (driver unknown)"


# -- simulated GPUs -------------------------------------------------------------------------------


def test_a_group_is_one_fully_nvlinked_board() -> None:
    machine = simulated("4xH100-80GB")

    assert machine.source == "simulated"
    assert machine.note == "simulated GPUs: nothing runs on a real device"
    assert machine.gpus == tuple(
        DiscoveredGpu(
            index=index,
            uuid=f"SIM-GPU-{index}-H100-80GB",
            model="NVIDIA-H100-80GB-HBM3",
            memory_mib=81559,
            nvlink_peers=tuple(peer for peer in range(4) if peer != index),
            simulated=True,
        )
        for index in range(4)
    )


def test_groups_are_not_linked_to_each_other_and_pcie_cards_not_at_all() -> None:
    machine = simulated("2xA100-40GB,2xL4")

    assert [(gpu.model, gpu.nvlink_peers) for gpu in machine.gpus] == [
        ("NVIDIA-A100-SXM4-40GB", (1,)),
        ("NVIDIA-A100-SXM4-40GB", (0,)),
        ("NVIDIA-L4", ()),
        ("NVIDIA-L4", ()),
    ]


@pytest.mark.parametrize(
    ("name", "product", "memory_mib"),
    [
        ("H100-80GB", "NVIDIA-H100-80GB-HBM3", 81559),
        ("H200", "NVIDIA-H200", 143771),
        ("A100-80GB", "NVIDIA-A100-SXM4-80GB", 81920),
        ("A100-40GB", "NVIDIA-A100-SXM4-40GB", 40536),
        ("L4", "NVIDIA-L4", 23034),
        ("L40S", "NVIDIA-L40S", 46068),
        ("T4", "Tesla-T4", 15360),
    ],
)
def test_known_models_carry_the_figures_real_devices_report(
    name: str, product: str, memory_mib: int
) -> None:
    (gpu,) = simulated(name).gpus

    assert (gpu.model, gpu.memory_mib) == (product, memory_mib)


@pytest.mark.parametrize(
    ("spec", "count", "model"),
    [
        ("L4", 1, "NVIDIA-L4"),
        (" 2 x h100-80gb ", 2, "NVIDIA-H100-80GB-HBM3"),
        ("3Xt4", 3, "Tesla-T4"),
        (f"{MAX_SIMULATED_GPUS}xL4", MAX_SIMULATED_GPUS, "NVIDIA-L4"),
    ],
)
def test_counts_default_to_one_and_names_ignore_case_and_spaces(
    spec: str, count: int, model: str
) -> None:
    machine = simulated(spec)

    assert [gpu.model for gpu in machine.gpus] == [model] * count


def test_any_name_with_a_size_is_a_generic_nvlinked_gpu_of_that_size() -> None:
    machine = simulated("2xB200-180GB")

    assert [(gpu.model, gpu.memory_mib, gpu.uuid) for gpu in machine.gpus] == [
        ("SIM-B200-180GB", 180 * 1024, "SIM-GPU-0-B200-180GB"),
        ("SIM-B200-180GB", 180 * 1024, "SIM-GPU-1-B200-180GB"),
    ]
    assert machine.gpus[0].nvlink_peers == (1,)


_EXAMPLE = "e.g. 4xH100-80GB or 2xA100-40GB,1xL4"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("", "the GPU spec is empty"),
        ("  ", "the GPU spec is empty"),
        ("0xH100-80GB", "GPU spec '0xH100-80GB' asks for 0 GPUs, at least 1 is needed"),
        ("2xL4,-1xT4", "group '-1xT4' of GPU spec '2xL4,-1xT4' asks for -1 GPUs"),
        ("4x", "GPU spec '4x' names no GPU model"),
        ("axb", "unknown GPU model 'AXB'; known models are H100-80GB, H200, A100-80GB, "),
        ("2xH100", "unknown GPU model 'H100'"),
        ("L4,,T4", "GPU spec 'L4,,T4' has an empty group"),
        ("L4,", "GPU spec 'L4,' has an empty group"),
        ("65xL4", "GPU spec '65xL4' asks for 65 GPUs, more than one machine has (at most 64)"),
        ("40xL4,30xT4", "asks for 70 GPUs"),
        ("X-0GB", "model 'X-0GB' has 0 GB, outside 1 to 4096 GB"),
    ],
)
def test_bad_specs_are_refused_with_what_is_wrong_and_an_example(spec: str, says: str) -> None:
    with pytest.raises(GpuSpecError) as refused:
        simulated(spec)

    assert says in str(refused.value)
    assert _EXAMPLE in str(refused.value)


_groups = st.lists(
    st.tuples(st.integers(min_value=1, max_value=8), st.sampled_from(sorted(SIMULATED_MODELS))),
    min_size=1,
    max_size=8,
)


@given(_groups)
def test_any_valid_spec_gives_a_consistent_machine(groups: list[tuple[int, str]]) -> None:
    spec = ",".join(f"{count}x{name}" for count, name in groups)

    machine = simulated(spec)

    assert machine == simulated(spec)  # stable
    assert [gpu.index for gpu in machine.gpus] == list(range(sum(c for c, _ in groups)))
    assert len({gpu.uuid for gpu in machine.gpus}) == len(machine.gpus)
    for gpu in machine.gpus:
        assert gpu.simulated
        assert gpu.index not in gpu.nvlink_peers
        assert all(gpu.index in machine.gpus[peer].nvlink_peers for peer in gpu.nvlink_peers)
        assert all(machine.gpus[peer].model == gpu.model for peer in gpu.nvlink_peers)


# -- JSON and describe ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "machine",
    [
        discover(FakeNvml.h100_hgx()),
        discover(FakeNvml.a100_hgx4_mig()),
        discover(FakeNvml.gh200()),
        discover(FakeNvml.no_driver()),
        simulated("2xA100-40GB,1xL4"),
    ],
    ids=["h100-hgx", "a100-mig", "gh200", "none", "simulated"],
)
def test_a_machine_survives_a_json_round_trip(machine: Machine) -> None:
    stored = json.dumps(machine_to_json(machine))

    assert machine_from_json(json.loads(stored)) == machine


def test_json_fields_with_defaults_may_be_absent() -> None:
    record: dict[str, Any] = {
        "source": "nvml",
        "gpus": [{"index": 0, "uuid": "GPU-1", "model": "NVIDIA-L4", "memory_mib": 23034}],
    }

    assert machine_from_json(record) == Machine(
        gpus=(DiscoveredGpu(index=0, uuid="GPU-1", model="NVIDIA-L4", memory_mib=23034),),
        source="nvml",
    )


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"source": "cloud"}, "machine.source: expected one of ('nvml', 'simulated', 'none')"),
        ({"gpus": None}, "machine.gpus: expected list, got None"),
        ({"cuda_version": 12.4}, "machine.cuda_version: expected a string or null"),
        ({"gpus": [{"uuid": "GPU-1"}]}, "machine.gpus[0].index is missing"),
        ({"gpus": [7]}, "machine.gpus[0]: expected an object"),
    ],
)
def test_a_bad_json_record_names_the_field(change: dict[str, Any], says: str) -> None:
    record = {**machine_to_json(simulated("L4")), **change}

    with pytest.raises(ValueError, match="^" + re.escape(says)):
        machine_from_json(record)


def test_a_json_true_is_not_a_memory_size() -> None:
    record = machine_to_json(simulated("L4"))
    record["gpus"][0]["memory_mib"] = True

    with pytest.raises(ValueError, match=r"machine\.gpus\[0\]\.memory_mib: expected int"):
        machine_from_json(record)


def test_describe_gives_a_header_and_one_line_per_gpu() -> None:
    assert simulated("2xH200,L4").describe() == [
        "3 GPUs (simulated GPUs: nothing runs on a real device)",
        "GPU 0  NVIDIA-H200  143771 MiB  SIM-GPU-0-H200  NUMA 0  NVLink 1  (simulated)",
        "GPU 1  NVIDIA-H200  143771 MiB  SIM-GPU-1-H200  NUMA 0  NVLink 0  (simulated)",
        "GPU 2  NVIDIA-L4  23034 MiB  SIM-GPU-2-L4  NUMA 0  NVLink -  (simulated)",
    ]


def test_describe_marks_mig_and_names_the_driver() -> None:
    nvml = FakeNvml.a100_hgx4_mig()

    lines = discover(nvml).describe()

    assert lines[0] == "4 GPUs from NVML (driver 535.161.08, CUDA 12.2)"
    assert lines[1] == (
        f"GPU 0  NVIDIA-A100-SXM4-80GB  81920 MiB  {nvml.gpus[0].uuid}  NUMA 0  NVLink 1,2,3  MIG"
    )


def test_describe_of_no_gpus_is_the_note() -> None:
    machine = discover(FakeNvml.no_driver())

    assert machine.describe() == [f"no GPUs: {machine.note}"]
