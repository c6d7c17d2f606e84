"""The fake `nvidia-cuda-mps-control` on PATH, for tests of MPS daemons (agent and local runner).

`tests/agent/fake_mps_control.py` is linked into a directory on PATH as
`nvidia-cuda-mps-control`: its daemons are real background processes on real Unix sockets, and
it records every command with the environment it saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler_service.gpu_sharing import MpsDaemons

FAKE = Path(__file__).parent / "agent" / "fake_mps_control.py"


@dataclass
class FakeMps:
    """The fake binary on PATH, a short MPS root, and what the fake recorded."""

    root: Path
    bin: Path
    record: Path
    environ: dict[str, str]

    def daemons(self, **options: Any) -> MpsDaemons:
        return MpsDaemons(self.root, environ=self.environ, **options)

    def records(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def commands(self, uuid: str) -> list[str]:
        """The commands sent for one GPU, in order (`-d` included), as the fake saw them."""
        return [
            entry["command"]
            for entry in self.records()
            if "command" in entry and entry["env"].get("CUDA_VISIBLE_DEVICES") == uuid
        ]

    def control(self, uuid: str, command: str) -> subprocess.CompletedProcess[str]:
        """`echo COMMAND | nvidia-cuda-mps-control` for the GPU, as a person at the node would."""
        return subprocess.run(
            ["nvidia-cuda-mps-control"],
            input=f"{command}\n",
            env={
                **self.environ,
                "CUDA_VISIBLE_DEVICES": uuid,
                "CUDA_MPS_PIPE_DIRECTORY": str(self.root / uuid / "pipe"),
                "CUDA_MPS_LOG_DIRECTORY": str(self.root / uuid / "log"),
            },
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in "ZX"


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 5
    while alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still runs"
        time.sleep(0.01)


@contextlib.contextmanager
def fake_mps(tmp_path: Path) -> Iterator[FakeMps]:
    """The fake on PATH (in `tmp_path`/bin) with a short root in /tmp.

    On exit every daemon it started is killed and the root removed.
    """
    # Not under tmp_path: a Unix socket path holds at most 107 bytes, and pytest's directories
    # plus a 40-byte uuid would pass that, as a long root does on a node.
    root = Path(tempfile.mkdtemp(prefix="mps-", dir="/tmp"))
    bin_directory = tmp_path / "bin"
    bin_directory.mkdir()
    (bin_directory / "nvidia-cuda-mps-control").symlink_to(FAKE)
    # The fake's `#!/usr/bin/env python3` finds this interpreter first, without site-packages
    # (the fake needs only the standard library): a version manager's shim and the site import
    # would add a tenth of a second to each of the tests' many commands.
    interpreter = bin_directory / "python3"
    interpreter.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    interpreter.chmod(0o755)
    record = tmp_path / "commands.jsonl"
    environ = {
        "PATH": f"{bin_directory}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "FAKE_MPS_RECORD": str(record),
        "FAKE_MPS_LIFETIME_SECONDS": "60",
    }
    fake = FakeMps(root=root, bin=bin_directory, record=record, environ=environ)
    try:
        yield fake
    finally:
        # Whatever a test left running: every daemon the fake started, by the pid it recorded.
        for entry in fake.records():
            pid = entry.get("daemon")
            if isinstance(pid, int) and alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_gone(pid)
        shutil.rmtree(root, ignore_errors=True)
