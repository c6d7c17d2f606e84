"""CPU and memory limits for local steps, through cgroup v2 where the machine delegates it.

cgroup v2 lets an unprivileged runner limit its steps only in a subtree delegated to it
(systemd: `Delegate=yes`; a container: the cgroup namespace it was given). `Cgroups.detect`
works in the runner's own cgroup, read from `/proc/self/cgroup` (the `0::/path` line):

- "No internal processes": a cgroup can hand the cpu and memory controllers to its children
  (`cgroup.subtree_control`) only while no process lives in it. So `detect` first moves every
  process of the runner's cgroup (the runner, and whatever shares its cgroup) into the leaf
  `<own>/aistack-runner`, then writes `+cpu +memory` into `<own>/cgroup.subtree_control`.
- Each step then gets a leaf `<own>/aistack-step-<name>` with `cpu.max` and `memory.max`; the
  step's wrapper joins it before it starts the step, so the step and everything it forks are
  limited (the wrapper, a few MiB, counts against the step's memory too).

Anything missing or not writable makes `detect` return `Unsupported` with the reason, which the
runner tells the user once; steps then run without limits. `detect` is idempotent: a runner
that restarts (or calls it twice) finds its leaf and its controllers already in place.

Every path starts from `root`, so tests run against a fake cgroupfs made of plain files.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CPU_PERIOD_MICROS", "RUNNER_LEAF", "STEP_PREFIX", "Cgroups", "Unsupported"]

RUNNER_LEAF = "aistack-runner"
"""The leaf cgroup the runner (and whatever shared its cgroup) is moved into."""

STEP_PREFIX = "aistack-step-"
"""A step's cgroup is `<runner's own cgroup>/aistack-step-<name>`."""

CPU_PERIOD_MICROS = 100_000
"""The period of `cpu.max`: a quota of `cpu_milli * 100` µs per period is `cpu_milli` CPUs/1000."""

# The kernel rejects a `cpu.max` quota under 1 ms per period.
_MIN_CPU_QUOTA_MICROS = 1_000
_NEEDED_CONTROLLERS = ("cpu", "memory")
_NOT_ENFORCED = "CPU and memory limits are not enforced: "
_RUNS_WITHOUT = "; steps run without them"


@dataclass(frozen=True)
class Unsupported:
    """This machine cannot limit steps' CPU and memory; `reason` says why, for the user."""

    reason: str


@dataclass(frozen=True)
class Cgroups:
    """A cgroup v2 subtree delegated to the runner, ready for one leaf cgroup per step.

    Attributes:
        base: the runner's own cgroup (its processes moved to `base/aistack-runner`, the cpu and
            memory controllers enabled for its children); steps' cgroups are made in it.
    """

    base: Path

    @classmethod
    def detect(
        cls,
        root: Path = Path("/sys/fs/cgroup"),
        *,
        proc_self_cgroup: Path = Path("/proc/self/cgroup"),
    ) -> Cgroups | Unsupported:
        """Prepare the runner's cgroup for steps' limits, or say why this machine cannot.

        Moves the processes of the runner's cgroup into a leaf and enables the cpu and memory
        controllers for its children (see the module's docstring). Idempotent.
        """
        if not (root / "cgroup.controllers").is_file():
            return Unsupported(
                f"{_NOT_ENFORCED}this machine mounts cgroup v1 at {root} (no cgroup.controllers)"
                f"{_RUNS_WITHOUT}"
            )
        relative = _own_cgroup(proc_self_cgroup)
        if relative is None:
            return Unsupported(
                f"{_NOT_ENFORCED}{proc_self_cgroup} names no cgroup v2 (no '0::' line)"
                f"{_RUNS_WITHOUT}"
            )
        own = root / relative.lstrip("/")
        # A runner already in its leaf (a second call; a runner started in it) works one level up.
        base = own.parent if own.name == RUNNER_LEAF else own
        available = _words(base / "cgroup.controllers")
        missing = [name for name in _NEEDED_CONTROLLERS if name not in available]
        if missing:
            noun = "controller is" if len(missing) == 1 else "controllers are"
            return Unsupported(
                f"{_NOT_ENFORCED}the {' and '.join(missing)} {noun} not available in "
                f"{base} (available: {' '.join(sorted(available)) or 'none'}){_RUNS_WITHOUT}"
            )
        enabled = _words(base / "cgroup.subtree_control")
        if all(name in enabled for name in _NEEDED_CONTROLLERS):
            return cls(base)
        try:
            leaf = base / RUNNER_LEAF
            leaf.mkdir(exist_ok=True)
            for pid in _words(base / "cgroup.procs"):
                try:
                    _append(leaf / "cgroup.procs", pid)
                except ProcessLookupError:
                    continue  # it ended since the list was read
            _append(base / "cgroup.subtree_control", " ".join(f"+{n}" for n in _NEEDED_CONTROLLERS))
        except OSError as err:
            return Unsupported(
                f"{_NOT_ENFORCED}cgroup v2 is not delegated to this user (cannot write "
                f"{err.filename or base}: {err.strerror or err}){_RUNS_WITHOUT}"
            )
        return cls(base)

    def create(self, name: str, *, cpu_milli: int, memory_mib: int) -> Path:
        """Make (or reuse) the leaf cgroup of step `name` with its limits written; its path.

        `cpu_milli` (thousandths of a CPU) becomes `cpu.max`, at least 1 ms per 100 ms period;
        `memory_mib` becomes `memory.max`, and then `memory.swap.max` is 0 where the machine has
        swap accounting, so the limit cannot be escaped by swapping. 0 means no limit.

        Raises:
            ValueError: `name` is empty or holds a `/`.
            OSError: the cgroup cannot be made or written.
        """
        if not name or "/" in name:
            raise ValueError(f"a step's cgroup name must be a non-empty path segment: {name!r}")
        path = self.base / f"{STEP_PREFIX}{name}"
        path.mkdir(exist_ok=True)
        if cpu_milli > 0:
            quota = str(max(cpu_milli * CPU_PERIOD_MICROS // 1000, _MIN_CPU_QUOTA_MICROS))
        else:
            quota = "max"
        (path / "cpu.max").write_text(f"{quota} {CPU_PERIOD_MICROS}\n")
        (path / "memory.max").write_text(f"{memory_mib * 2**20}\n" if memory_mib > 0 else "max\n")
        swap = path / "memory.swap.max"
        if memory_mib > 0 and swap.exists():
            swap.write_text("0\n")
        return path

    @staticmethod
    def remove(path: Path) -> None:
        """Remove a step's cgroup once it is empty; one still busy, or already gone, is left.

        A static method so that a runner that only knows the path (from a step's spec, after a
        restart) can call `Cgroups.remove(path)`.
        """
        try:
            path.rmdir()
        except FileNotFoundError:
            return
        except OSError as err:
            # EBUSY: a straggler of the step still lives in it. ENOTEMPTY: a fake cgroupfs of
            # plain files (a real one removes a cgroup's control files with it).
            if err.errno not in {errno.EBUSY, errno.ENOTEMPTY}:
                raise


def _own_cgroup(proc_self_cgroup: Path) -> str | None:
    """The runner's cgroup v2 path (`/user.slice/...`) from `/proc/self/cgroup`, if it has one."""
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            return path
    return None


def _words(path: Path) -> list[str]:
    """The whitespace-separated words of a cgroup file; none where it cannot be read."""
    try:
        return path.read_text().split()
    except OSError:
        return []


def _append(path: Path, text: str) -> None:
    """Write one value into a cgroup control file, as `echo text >> file` does.

    Appending (not truncating) matters only for the fake cgroupfs of tests, where it keeps every
    pid written to `cgroup.procs`; the kernel takes each write as one value either way.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)
