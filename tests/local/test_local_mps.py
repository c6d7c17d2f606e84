"""The local runner caps slices with MPS: `aistack run --gpu-sharing mps` with the fake daemon.

The fake `nvidia-cuda-mps-control` (tests/mps_fake.py) is first on PATH: its daemons are real
processes on real sockets, and it records every command. The steps are real processes that
print the environment MPS reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mps_fake import FakeMps, alive, fake_mps

ROOT = Path(__file__).parents[2]
AISTACK = str(Path(sys.executable).parent / "aistack")
GPU = "SIM-GPU-0-H100-80GB"

PIPELINE = """\
    from hera.workflows import DAG, Workflow, script

    import aistack_flows as af


    @script(image="python:3.12-slim", annotations=af.gpu_slice(memory_gib=8, compute_percent=30))
    def small() -> None:
        import json, os, time
        time.sleep(1.5)
        print(json.dumps({k: v for k, v in os.environ.items() if "MPS" in k or "CUDA" in k}))


    @script(image="python:3.12-slim", annotations=af.gpu_slice(memory_gib=16, compute_percent=50))
    def large() -> None:
        import json, os, time
        time.sleep(1.5)
        print(json.dumps({k: v for k, v in os.environ.items() if "MPS" in k or "CUDA" in k}))


    with Workflow(generate_name="capped-", entrypoint="main", labels={af.QUEUE_LABEL: "q"}) as w:
        with DAG(name="main"):
            small()
            large()
"""


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeMps]:
    with fake_mps(tmp_path) as made:
        yield made


def run(
    tmp_path: Path, state: Path, environ: dict[str, str], *options: str
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "capped.py"
    path.write_text(textwrap.dedent(PIPELINE))
    return subprocess.run(
        [AISTACK, "run", str(path), "--simulate-gpus", "1xH100-80GB", "--no-live", *options],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **environ, "AISTACK_STATE": str(state)},
        check=False,
    )


def mps_root(state: Path) -> Path:
    """Where the runner of `state` keeps its daemons (one directory per state)."""
    digest = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"aistack-mps-{digest}"


def step_environment(state: Path, step: str) -> dict[str, str]:
    (log,) = (state / "runs").glob(f"*/pods/*-{step}-*/step.log")
    printed: dict[str, str] = json.loads(log.read_text().strip().splitlines()[-1])
    return printed


def test_each_slice_is_a_client_of_its_gpu_s_daemon_capped_at_its_share(
    tmp_path: Path, fake: FakeMps
) -> None:
    state = tmp_path / "state"
    done = run(tmp_path, state, fake.environ, "--gpu-sharing", "mps")
    assert done.returncode == 0, done.stdout + done.stderr
    root = mps_root(state)
    assert f"slices are capped by MPS (daemons in {root})" in done.stdout

    pipe = str(root / GPU / "pipe")
    small = step_environment(state, "small")
    assert {
        "CUDA_VISIBLE_DEVICES": GPU,
        "CUDA_MPS_PIPE_DIRECTORY": pipe,
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=8192M",
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "30",
    }.items() <= small.items()
    large = step_environment(state, "large")
    assert (large["CUDA_MPS_PIPE_DIRECTORY"], large["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"]) == (
        pipe,
        "50",
    )
    # One daemon for the GPU, started before the first slice; its defaults followed the
    # largest running slice, and it was stopped when the last slice ended.
    commands = fake.commands(GPU)
    assert commands.count("-d") == 1
    assert "set_default_active_thread_percentage 50" in commands
    assert "set_default_device_pinned_mem_limit 0 16384M" in commands
    assert commands[-1] == "quit"
    assert not (root / GPU / "pipe").exists()
    daemons = [entry["daemon"] for entry in fake.records() if "daemon" in entry]
    assert daemons
    assert not any(alive(pid) for pid in daemons)


def test_mps_asked_for_where_it_cannot_run_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    empty = tmp_path / "empty"
    empty.mkdir()
    path = f"{empty}{os.pathsep}{Path(sys.executable).parent}"
    done = run(tmp_path, state, {"PATH": path}, "--gpu-sharing", "mps")
    assert done.returncode == 2
    assert "--gpu-sharing mps: the MPS control binary nvidia-cuda-mps-control is not on PATH" in (
        done.stderr
    )


def test_simulated_gpus_and_none_leave_slices_uncapped(tmp_path: Path, fake: FakeMps) -> None:
    state = tmp_path / "state"
    done = run(tmp_path, state, fake.environ)  # auto: simulated GPUs are never capped
    assert done.returncode == 0, done.stdout + done.stderr
    assert "capped by MPS" not in done.stdout
    assert "CUDA_MPS_PIPE_DIRECTORY" not in step_environment(state, "small")
    assert fake.records() == []
