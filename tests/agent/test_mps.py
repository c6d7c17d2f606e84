"""MPS daemons for real processes: `MpsDaemons` against the fake control binary.

`fake_mps_control.py` is linked into a directory on PATH as `nvidia-cuda-mps-control`: its
daemons are real background processes on real Unix sockets, and it records every command with
the environment it saw, so the tests assert what was sent for which GPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes.client import CoreV1Api
from prometheus_client import CollectorRegistry, generate_latest

from scheduler_service import pod_contract as keys
from scheduler_service.agent import AgentCollector, MpsKeeper, NodeAgent
from scheduler_service.gpu_discovery import discover, simulated
from scheduler_service.gpu_sharing import (
    PID_FILE,
    GpuSharing,
    MpsDaemon,
    MpsDaemons,
    MpsError,
    Share,
    daemon_defaults,
    hami_core_environment,
)
from tests.agent.fake_kube import FakeCoreApi, gpu_node_object, pod_object
from tests.gpus.fake_nvml import FakeNvml
from tests.mps_fake import FakeMps, alive, fake_mps, wait_gone

# Real-looking uuids: 40 bytes, as NVML writes them, so socket paths are as long as on a node.
GPU_A = "GPU-0c5f7a9e-1111-2222-3333-444455556666"
GPU_B = "GPU-7d3e2b10-aaaa-bbbb-cccc-ddddeeeeffff"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeMps]:
    with fake_mps(tmp_path) as made:
        yield made


def pid_of(daemon: MpsDaemon) -> int:
    assert daemon.pid is not None, daemon
    return daemon.pid


def daemon_pids(fake: FakeMps) -> list[int]:
    return [entry["daemon"] for entry in fake.records() if "daemon" in entry]


# -- daemons ---------------------------------------------------------------------------------------


def test_one_daemon_per_gpu_in_its_own_directory_with_its_defaults(fake: FakeMps) -> None:
    daemons = fake.daemons()

    started = daemons.ensure({GPU_B: Share(8192, 50), GPU_A: Share(4096, 30)})

    assert [(d.uuid, d.action, d.defaults, d.servers) for d in started] == [
        (GPU_A, "started", Share(4096, 30), ()),
        (GPU_B, "started", Share(8192, 50), ()),
    ]
    assert sorted(d.pid for d in started if d.pid is not None) == sorted(daemon_pids(fake))
    for daemon in started:
        assert alive(pid_of(daemon))
        pipe = fake.root / daemon.uuid / "pipe"
        assert (pipe / PID_FILE).read_text().strip() == str(daemon.pid)
        assert (
            "Starting control daemon" in (fake.root / daemon.uuid / "log/control.log").read_text()
        )
    assert fake.commands(GPU_A) == [
        "get_server_list",  # is one running? (no: the fake answers "no daemon")
        "-d",
        "get_server_list",  # does the new one answer?
        "set_default_active_thread_percentage 30",
        "set_default_device_pinned_mem_limit 0 4096M",
    ]
    assert fake.commands(GPU_B)[-2:] == [
        "set_default_active_thread_percentage 50",
        "set_default_device_pinned_mem_limit 0 8192M",
    ]
    # Each GPU's commands went to its own private directory, never the default /tmp/nvidia-mps.
    for entry in fake.records():
        if "command" in entry:
            uuid = entry["env"]["CUDA_VISIBLE_DEVICES"]
            assert entry["env"]["CUDA_MPS_PIPE_DIRECTORY"] == str(fake.root / uuid / "pipe")
            assert entry["env"]["CUDA_MPS_LOG_DIRECTORY"] == str(fake.root / uuid / "log")
    daemons.stop_all()


def test_defaults_are_the_largest_slice_because_a_client_can_only_lower_them() -> None:
    slices = [Share(4096, 30), Share(10240, 20), Share(2048, 70)]

    assert daemon_defaults(slices) == Share(10240, 70)
    assert daemon_defaults([Share(2048, 10)]) == Share(2048, 10)
    with pytest.raises(ValueError, match="without slices"):
        daemon_defaults([])


def test_defaults_are_sent_again_only_when_they_change(fake: FakeMps) -> None:
    daemons = fake.daemons()
    (first,) = daemons.ensure({GPU_A: Share(4096, 30)})

    (kept,) = daemons.ensure({GPU_A: Share(4096, 30)})
    assert (kept.action, kept.pid) == ("kept", first.pid)
    assert fake.commands(GPU_A)[-1] == "get_server_list"

    # A client connected meanwhile, so the daemon runs a server that keeps its own settings.
    assert fake.control(GPU_A, "start_server -uid 0").returncode == 0
    (updated,) = daemons.ensure({GPU_A: Share(6144, 40)})

    assert (updated.action, updated.pid, updated.servers) == ("updated", first.pid, (5_000_000,))
    assert fake.commands(GPU_A)[-5:] == [
        "get_server_list",
        "set_default_active_thread_percentage 40",
        "set_default_device_pinned_mem_limit 0 6144M",
        "set_active_thread_percentage 5000000 40",
        "set_device_pinned_mem_limit 5000000 0 6144M",
    ]
    assert fake.control(GPU_A, "get_default_device_pinned_mem_limit 0").stdout == "6144M\n"
    assert fake.control(GPU_A, "get_active_thread_percentage 5000000").stdout == "40.0\n"
    daemons.stop_all()


def test_the_daemon_of_a_gpu_without_slices_is_quit(fake: FakeMps) -> None:
    daemons = fake.daemons()
    a, b = daemons.ensure({GPU_A: Share(4096, 30), GPU_B: Share(4096, 30)})

    (left,) = daemons.ensure({GPU_A: Share(4096, 30)})

    assert (left.uuid, left.action, left.pid) == (GPU_A, "kept", a.pid)
    assert fake.commands(GPU_B)[-1] == "quit"
    assert not alive(pid_of(b))
    assert not (fake.root / GPU_B / "pipe").exists()
    assert (fake.root / GPU_B / "log/control.log").exists()  # kept for whoever reads it later
    assert alive(pid_of(a))

    daemons.ensure({})
    assert not alive(pid_of(a))
    assert fake.commands(GPU_A)[-1] == "quit"


def test_a_daemon_that_died_is_started_again_with_its_defaults(fake: FakeMps) -> None:
    daemons = fake.daemons()
    (first,) = daemons.ensure({GPU_A: Share(4096, 30)})
    os.kill(pid_of(first), signal.SIGKILL)
    wait_gone(pid_of(first))

    (again,) = daemons.ensure({GPU_A: Share(4096, 30)})

    assert again.action == "restarted"
    assert pid_of(again) != first.pid
    assert alive(pid_of(again))
    assert fake.commands(GPU_A)[-5:] == [
        "get_server_list",
        "-d",
        "get_server_list",
        "set_default_active_thread_percentage 30",
        "set_default_device_pinned_mem_limit 0 4096M",
    ]
    daemons.stop_all()


def test_a_new_agent_adopts_the_daemons_it_finds_and_quits_those_not_wanted(
    fake: FakeMps,
) -> None:
    a, b = fake.daemons().ensure({GPU_A: Share(4096, 30), GPU_B: Share(2048, 20)})
    # Without its pid file, a daemon is found in the process table by its pipe directory.
    (fake.root / GPU_A / "pipe" / PID_FILE).unlink()

    restarted_agent = fake.daemons()
    (adopted,) = restarted_agent.ensure({GPU_A: Share(4096, 30)})

    # It cannot know what the earlier agent set, so it sends the defaults once more.
    assert (adopted.action, adopted.pid) == ("updated", a.pid)
    assert sorted(daemon_pids(fake)) == sorted([pid_of(a), pid_of(b)])  # none started
    assert not alive(pid_of(b))
    restarted_agent.stop_all()
    assert not alive(pid_of(a))


def test_every_gpu_is_tried_and_each_failure_says_what_to_do(fake: FakeMps) -> None:
    fake.root.mkdir(exist_ok=True)
    (fake.root / GPU_B).write_text("a file where the GPU's directory should be")
    daemons = fake.daemons()

    with pytest.raises(MpsError) as raised:
        daemons.ensure({GPU_A: Share(4096, 30), GPU_B: Share(4096, 30)})

    assert list(raised.value.failures) == [GPU_B]
    assert "cannot create" in raised.value.failures[GPU_B]
    assert "make it writable" in str(raised.value)
    (a,) = daemons.ensure({GPU_A: Share(4096, 30)})  # GPU A was started all the same
    assert a.action == "kept"
    daemons.stop_all()


def test_a_daemon_that_does_not_answer_is_reported_not_doubled(fake: FakeMps) -> None:
    daemons = fake.daemons(timeout_seconds=0.5)
    (first,) = daemons.ensure({GPU_A: Share(4096, 30)})
    os.kill(pid_of(first), signal.SIGSTOP)
    try:
        with pytest.raises(MpsError, match=r"did not finish within 0\.5 s") as raised:
            daemons.ensure({GPU_A: Share(4096, 30)})
        assert "control.log" in raised.value.failures[GPU_A]
        assert daemon_pids(fake) == [first.pid]
    finally:
        os.kill(pid_of(first), signal.SIGCONT)
    daemons.stop_all()
    assert not alive(pid_of(first))


def test_stop_all_leaves_nothing_running(fake: FakeMps) -> None:
    daemons = fake.daemons()
    started = daemons.ensure({GPU_A: Share(4096, 30), GPU_B: Share(4096, 30)})

    daemons.stop_all()
    daemons.stop_all()  # idempotent

    assert not any(d.pid is not None and alive(d.pid) for d in started)
    assert fake.daemons().ensure({}) == ()


# -- availability ----------------------------------------------------------------------------------


def test_available_says_why_not(fake: FakeMps, tmp_path: Path) -> None:
    assert fake.daemons().available() == ""

    without = MpsDaemons(fake.root, environ={"PATH": str(tmp_path / "empty")})
    assert "nvidia-cuda-mps-control is not on PATH" in without.available()
    assert "enforcement hami-core or none" in without.available()
    with pytest.raises(MpsError, match="not on PATH"):
        without.ensure({GPU_A: Share(4096, 30)})

    deep = MpsDaemons(tmp_path / ("d" * 80), environ=fake.environ)
    assert "too long" in deep.available()
    with pytest.raises(MpsError, match="longer than the 107 bytes"):
        deep.ensure({GPU_A: Share(4096, 30)})


def test_the_fake_answers_like_the_real_binary_without_a_daemon(fake: FakeMps) -> None:
    no_daemon = fake.control(GPU_A, "get_server_list")
    assert (no_daemon.returncode, no_daemon.stdout) == (
        1,
        "Cannot find MPS control daemon process\n",
    )

    daemons = fake.daemons()
    daemons.ensure({GPU_A: Share(4096, 30)})
    unknown = fake.control(GPU_A, "make_it_faster")
    assert unknown.returncode == 1
    assert "Unrecognized command" in unknown.stdout
    # The daemon sees only its own GPU, as device 0.
    assert (
        "Invalid device 1" in fake.control(GPU_A, "set_default_device_pinned_mem_limit 1 1G").stdout
    )
    again = subprocess.run(
        ["nvidia-cuda-mps-control", "-d"],
        env={
            **fake.environ,
            "CUDA_MPS_PIPE_DIRECTORY": str(fake.root / GPU_A / "pipe"),
            "CUDA_MPS_LOG_DIRECTORY": str(fake.root / GPU_A / "log"),
        },
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert (again.returncode, again.stdout) == (
        1,
        "An instance of this daemon is already running\n",
    )
    daemons.stop_all()


# -- what a slice gets -----------------------------------------------------------------------------


def test_client_environment_names_the_gpu_the_pipe_and_the_caps(fake: FakeMps) -> None:
    daemons = fake.daemons()

    assert daemons.client_environment(GPU_A, 10240, 30) == {
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "30",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=10240M",
        "CUDA_MPS_PIPE_DIRECTORY": str(fake.root / GPU_A / "pipe"),
        "CUDA_VISIBLE_DEVICES": GPU_A,
    }
    with pytest.raises(ValueError, match="compute_percent must be 1-100"):
        daemons.client_environment(GPU_A, 10240, 0)
    with pytest.raises(ValueError, match="not a GPU uuid"):
        daemons.client_environment("../GPU-x", 10240, 30)


def test_hami_core_environment_is_what_hami_device_plugin_sets() -> None:
    assert hami_core_environment(10240, 30) == {
        "CUDA_DEVICE_MEMORY_LIMIT": "10240m",
        "CUDA_DEVICE_SM_LIMIT": "30",
    }
    with pytest.raises(ValueError, match="memory_mib must be at least 1"):
        hami_core_environment(0, 30)


def test_reprs_read_well(fake: FakeMps) -> None:
    assert repr(MpsDaemons(Path("/run/mps"))) == (
        "MpsDaemons(root=PosixPath('/run/mps'), control='nvidia-cuda-mps-control')"
    )
    assert repr(MpsDaemon(GPU_A, 42, Share(4096, 30), "kept")) == (
        f"MpsDaemon(uuid='{GPU_A}', pid=42, defaults=Share(memory_mib=4096, "
        "compute_percent=30), action='kept', servers=())"
    )


# -- the agent's loop: a daemon per GPU of an MPS node -------------------------------------------


def mps_slice_pod(name: str, gpu: str, memory_mib: int, compute: int, phase: str) -> dict[str, Any]:
    """A slice pod on node gpu-1 as the service leaves it under MPS."""
    pod = pod_object("team", name, f"uid-{name}", "gpu-1")
    pod["metadata"]["annotations"] = {
        keys.GPU_SHARING_ANNOTATION: "mps",
        keys.MPS_GPU_ANNOTATION: gpu,
        keys.MEMORY_LIMIT_ANNOTATION: f"0={memory_mib}M",
        keys.COMPUTE_LIMIT_ANNOTATION: str(compute),
    }
    pod["status"] = {"phase": phase}
    return pod


def test_the_agent_keeps_a_daemon_on_every_gpu_outside_mig_with_its_largest_slice(
    fake: FakeMps,
) -> None:
    nvml = FakeNvml.a100_hgx4_mig()  # MIG on GPUs 0 and 1: MPS slices only on 2 and 3
    gpus = [gpu.uuid for gpu in discover(nvml).gpus]
    api = FakeCoreApi(
        nodes={"gpu-1": gpu_node_object("gpu-1")},
        pods=[
            mps_slice_pod("small", gpus[2], 4096, 20, "Running"),
            mps_slice_pod("large", gpus[2], 16384, 50, "Pending"),
            mps_slice_pod("done", gpus[2], 40000, 90, "Succeeded"),
            pod_object("team", "unmanaged", "uid-u", "gpu-1"),
        ],
    )
    sharing = GpuSharing(default="hami-core", pools={"NVIDIA-A100-SXM4-80GB": "mps"})
    keeper = MpsKeeper(fake.daemons(), sharing)
    agent = NodeAgent("gpu-1", cast(CoreV1Api, api), nvml=nvml, mps=keeper)

    agent.sync()

    assert [(d.uuid, d.action, d.defaults) for d in keeper.last] == sorted(
        [
            (gpus[2], "started", Share(16384, 50)),  # the largest live slice, not the ended one
            (gpus[3], "started", Share(81920, 100)),  # no slice yet: the whole GPU
        ]
    )
    assert keeper.failures == {}
    metrics = generate_latest(_registry(agent)).decode()
    assert 'aistack_agent_mps_daemons{node="gpu-1"} 2.0' in metrics
    assert 'aistack_agent_mps_failing_gpus{node="gpu-1"} 0.0' in metrics

    # The large slice ends: its GPU's defaults fall back to the small one's.
    api.pods[1]["status"]["phase"] = "Failed"
    agent.sync()
    assert {d.uuid: (d.action, d.defaults) for d in keeper.last}[gpus[2]] == (
        "updated",
        Share(4096, 20),
    )
    # The small slice ends too, but the pods cannot be listed: the defaults stay as they were.
    api.pods[0]["status"]["phase"] = "Succeeded"
    keeper.pass_(discover(nvml), None, api.nodes["gpu-1"]["metadata"]["labels"])
    assert {d.uuid: (d.action, d.defaults) for d in keeper.last}[gpus[2]] == (
        "kept",
        Share(4096, 20),
    )


def test_an_agent_without_the_control_binary_says_slices_are_not_capped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemons = MpsDaemons(tmp_path / "mps", environ={"PATH": str(tmp_path / "empty")})
    keeper = MpsKeeper(daemons, GpuSharing(default="mps"))
    keeper.pass_(discover(FakeNvml.a100_pcie()), [], {})
    assert len(keeper.failures) == 4
    assert all("control binary" in why for why in keeper.failures.values())
    assert "slices on this node are not capped" in caplog.text


def test_simulated_and_incomplete_machines_change_no_daemon(fake: FakeMps) -> None:
    keeper = MpsKeeper(fake.daemons(), GpuSharing(default="mps"))
    keeper.pass_(simulated("2xH100-80GB"), [], {})
    assert keeper.last == ()
    assert fake.records() == []


def _registry(agent: NodeAgent) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    return registry


def test_a_node_whose_pool_leaves_mps_has_its_daemons_stopped(fake: FakeMps) -> None:
    nvml = FakeNvml.a100_pcie()
    keeper = MpsKeeper(fake.daemons(), GpuSharing(pools={"a100": "mps"}))
    keeper.pass_(discover(nvml), [], {keys.POOL_LABEL: "a100"})
    started = keeper.last
    assert len(started) == 4

    keeper.pass_(discover(nvml), [], {keys.POOL_LABEL: "a100-shared"})  # relabelled

    assert len(keeper.last) == 0
    assert not any(fake.root.glob("*/pipe"))
    assert not any(alive(pid_of(daemon)) for daemon in started)
