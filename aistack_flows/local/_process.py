"""Start, watch, stop and re-adopt the processes of local steps.

Each step runs under a small wrapper (`_wrapper.py`, one Python process per step) that leads a
new session and process group, so the step outlives a runner killed with `kill -9`; a runner
that restarts finds it again from its `ProcessRef` (stored in its database) and reads how it
ended from the exit record the wrapper writes. Everything of one step lives in its directory:

- `spec.json`: what to run (written by `start`);
- `step.log`: stdout and stderr, interleaved, plus the wrapper's own notes (`[aistack] ...`);
- `stdout`: stdout alone, the step's `outputs.result`;
- `exit.json`: the exit record, written atomically when the step has ended;
- `wrapper.log`: the wrapper's own stdout and stderr (empty unless the wrapper crashed).

A graceful stop is: `signal_group(ref, SIGTERM)`; give the step its grace period, calling `poll`
until it returns an `Exit`; if it does not, `signal_group(ref, SIGKILL)` and `poll` again until
the wrapper has recorded the kill (a moment). A runner that watches many steps does this in its
own loop; `stop` is the same sequence, blocking, for tests and for the runner's shutdown.

The runner is the wrapper's parent (until it restarts), so it must reap it: `poll` does, once
the step has ended. None of these functions raise for a step that has already ended.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aistack_flows.local import _wrapper
from aistack_flows.local._cgroups import Cgroups

__all__ = [
    "EXIT_FILE",
    "LOG_FILE",
    "SPEC_FILE",
    "STDOUT_FILE",
    "WRAPPER_LOG_FILE",
    "Exit",
    "Launch",
    "ProcessRef",
    "alive",
    "poll",
    "read_log",
    "read_stdout",
    "reap",
    "signal_group",
    "start",
    "stop",
]

SPEC_FILE = "spec.json"
LOG_FILE = "step.log"
STDOUT_FILE = "stdout"
EXIT_FILE = "exit.json"
WRAPPER_LOG_FILE = "wrapper.log"

LOST_MESSAGE = "the step's process ended without a record (killed with its runner?)"
"""`Exit.error` for a step whose wrapper vanished without writing its exit record."""

_WRAPPER = Path(_wrapper.__file__).resolve()
_POLL_SECONDS = 0.05
# After SIGKILL the wrapper records the kill within milliseconds; past this it is not coming.
_KILL_WAIT_SECONDS = 10.0
# SIGKILL can reach a process forked while the group was being listed only on a later pass;
# processes killed by SIGKILL fork no more, so a few passes find them all.
_KILL_PASSES = 5
_LOG_BLOCK_BYTES = 65536
_TRUNCATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


@dataclass(frozen=True, slots=True)
class Launch:
    """What to run as one step, and where its files go.

    Attributes:
        argv: the command; `argv[0]` is looked up on the PATH of `env`.
        cwd: the step's working directory.
        env: the complete environment of the step (nothing is inherited from the runner).
        directory: the step's own directory (created); see the module's docstring.
        cpu_milli: CPU limit in thousandths of a CPU; 0 for none.
        memory_mib: memory limit in MiB; 0 for none.
    """

    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str] = field(repr=False)
    directory: Path
    cpu_milli: int = 0
    memory_mib: int = 0


@dataclass(frozen=True, slots=True)
class ProcessRef:
    """A running step's wrapper, identified across restarts of the runner.

    Attributes:
        pid: the wrapper's pid, also its process group and session.
        start_ticks: when it started (field 22 of `/proc/<pid>/stat`, clock ticks since boot),
            so that a pid reused by another process is not mistaken for the wrapper.
    """

    pid: int
    start_ticks: int

    def to_json(self) -> dict[str, int]:
        """This reference as a JSON object, for the runner's database."""
        return {"pid": self.pid, "start_ticks": self.start_ticks}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRef:
        """The reference that `to_json` gave."""
        return cls(pid=int(data["pid"]), start_ticks=int(data["start_ticks"]))


@dataclass(frozen=True, slots=True)
class Exit:
    """How a step ended.

    Attributes:
        exit_code: the step's exit code; None when a signal ended it or it never ran.
        signal: the signal that ended the step, if one did.
        error: why the step could not run, or why its end is unknown; None otherwise.
        started: when the step started (seconds since the epoch).
        finished: when it ended, or when its end was found lost.
    """

    exit_code: int | None
    signal: int | None
    error: str | None
    started: float
    finished: float

    @property
    def succeeded(self) -> bool:
        """The step ran and exited with code 0."""
        return self.error is None and self.exit_code == 0

    def describe(self) -> str:
        """For a user: "exit code 1", "killed by SIGKILL", "command not found: foo"."""
        if self.error is not None:
            return self.error
        if self.signal is not None:
            try:
                return f"killed by {signal.Signals(self.signal).name}"
            except ValueError:
                return f"killed by signal {self.signal}"
        return f"exit code {self.exit_code}"

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Exit:
        """The exit that the wrapper's record (`exit.json`) describes."""
        return cls(
            exit_code=record["exit_code"],
            signal=record["signal"],
            error=record.get("error"),
            started=float(record["started"]),
            finished=float(record["finished"]),
        )


def start(launch: Launch, *, cgroups: Cgroups | None = None) -> ProcessRef:
    """Start the step's wrapper, which starts the step; returns as soon as the wrapper runs.

    With `cgroups` and a limit asked, the step's cgroup is made first and the wrapper joins it
    before it starts the step (it fails the step, with a record, if it cannot). Without
    `cgroups` the step runs without limits: the runner has told the user why, once.

    Starting again in a directory that was used replaces that attempt's files.

    Raises:
        OSError: the directory or the step's cgroup cannot be made, or the wrapper not started.
    """
    directory = launch.directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / EXIT_FILE).unlink(missing_ok=True)
    cgroup = None
    if cgroups is not None and (launch.cpu_milli > 0 or launch.memory_mib > 0):
        cgroup = cgroups.create(
            _cgroup_name(directory), cpu_milli=launch.cpu_milli, memory_mib=launch.memory_mib
        )
    spec = {
        "argv": list(launch.argv),
        "cwd": str(launch.cwd.resolve()),
        "env": dict(launch.env),
        "log": str(directory / LOG_FILE),
        "stdout": str(directory / STDOUT_FILE),
        "exit_file": str(directory / EXIT_FILE),
        "cgroup": None if cgroup is None else str(cgroup),
    }
    (directory / SPEC_FILE).write_text(json.dumps(spec, indent=1), encoding="utf-8")
    # posix_spawn, not subprocess: no Popen object whose garbage collection would reap the
    # wrapper behind our back, and the stop signals can be blocked in the new process alone.
    pid = os.posix_spawn(
        sys.executable,
        [sys.executable, "-I", "-S", str(_WRAPPER), str(directory / SPEC_FILE)],
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(directory / WRAPPER_LOG_FILE), _TRUNCATE, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
        setsigmask=_wrapper.STOP_SIGNALS,
    )
    stat = _stat(pid)
    if stat is None:  # only if the runner lets the kernel reap its children (SIGCHLD ignored)
        raise ProcessLookupError(f"the step's wrapper (pid {pid}) ended as soon as it started")
    return ProcessRef(pid=pid, start_ticks=stat.start_ticks)


def alive(ref: ProcessRef) -> bool:
    """The wrapper still runs: its pid exists, started when `ref` says, and is not a zombie."""
    stat = _stat(ref.pid)
    return stat is not None and stat.start_ticks == ref.start_ticks and stat.state not in "ZX"


def reap(ref: ProcessRef) -> None:
    """Collect the wrapper's exit status if it is this process's child, so no zombie is left.

    Does nothing while it runs, and for a wrapper started by an earlier runner (init reaps
    those).
    """
    stat = _stat(ref.pid)
    if stat is None or stat.start_ticks != ref.start_ticks:
        return  # gone, or the pid is another process's now: not ours to reap
    try:
        os.waitpid(ref.pid, os.WNOHANG)
    except ChildProcessError:
        return


def poll(ref: ProcessRef, directory: Path) -> Exit | None:
    """None while the step runs; then how it ended (its wrapper reaped, its cgroup removed).

    An `Exit` is returned only once the wrapper has exited, not merely written its record, so
    that its cgroup is empty and can go. A wrapper gone without a record (killed by someone, or
    crashed before it could write one) gives an `Exit` whose error is `LOST_MESSAGE`, plus the
    last line of `wrapper.log` if it has one. Idempotent once the step has ended.
    """
    if alive(ref):
        return None
    reap(ref)
    record = _read_json(directory / EXIT_FILE)
    ended = Exit.from_record(record) if record is not None else _lost(directory)
    spec = _read_json(directory / SPEC_FILE)
    if spec is not None and spec.get("cgroup"):
        # A cgroup that cannot go holds no process and limits nothing: how the step ended is
        # what matters to the caller.
        with contextlib.suppress(OSError):
            Cgroups.remove(Path(spec["cgroup"]))
    return ended


def signal_group(ref: ProcessRef, sig: int) -> None:
    """Send `sig` to the step and everything it forked, if its wrapper still runs.

    SIGTERM, SIGINT and SIGHUP go to the whole process group at once (`killpg`); the wrapper
    ignores them. Any other signal, SIGKILL above all, goes to every member of the group but
    the wrapper, which must live to record the step's end.
    """
    if not alive(ref):
        return
    if sig in _wrapper.STOP_SIGNALS:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(ref.pid, sig)
        return
    for _ in range(_KILL_PASSES):
        members = [pid for pid in _group_members(ref.pid) if pid != ref.pid]
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        if sig != signal.SIGKILL:
            return  # only SIGKILL guarantees that the listed processes fork no more


def stop(
    ref: ProcessRef,
    directory: Path,
    grace_seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Exit:
    """Stop the step gracefully and wait for its end: SIGTERM, `grace_seconds`, then SIGKILL.

    Returns how it ended (at once if it already had). Blocking: for tests and for the runner's
    shutdown; a runner watching many steps runs the same sequence in its own loop.
    """
    signal_group(ref, signal.SIGTERM)
    deadline = clock() + grace_seconds
    while (ended := poll(ref, directory)) is None and clock() < deadline:
        sleep(_POLL_SECONDS)
    if ended is not None:
        return ended
    signal_group(ref, signal.SIGKILL)
    deadline = clock() + _KILL_WAIT_SECONDS
    while (ended := poll(ref, directory)) is None:
        if clock() >= deadline:
            # The wrapper itself does not end (stopped, or stuck in the kernel): end it too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(ref.pid, signal.SIGKILL)
            deadline = float("inf")
        sleep(_POLL_SECONDS)
    return ended


def read_log(directory: Path, *, tail: int | None = None) -> str:
    """The step's log (stdout and stderr interleaved), or its last `tail` lines; "" if none."""
    return _read_text(directory / LOG_FILE, tail)


def read_stdout(directory: Path) -> str:
    """The step's stdout alone (its `outputs.result`); "" if it wrote none."""
    return _read_text(directory / STDOUT_FILE, None)


@dataclass(frozen=True, slots=True)
class _Stat:
    state: str
    group: int
    start_ticks: int


def _stat(pid: int) -> _Stat | None:
    """The fields of `/proc/<pid>/stat` used here; None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2, the command name in parentheses, may itself hold spaces and parentheses.
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 of the file (state), so field n is fields[n - 3].
    return _Stat(state=fields[0], group=int(fields[2]), start_ticks=int(fields[19]))


def _group_members(group: int) -> list[int]:
    """The pids of the living processes in process group `group` (zombies left out)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat.group == group and stat.state not in "ZX":
                members.append(int(entry))
    return members


def _lost(directory: Path) -> Exit:
    """The exit of a step whose wrapper vanished without a record."""
    error = LOST_MESSAGE
    wrapper_lines = _read_text(directory / WRAPPER_LOG_FILE, 1).strip()
    if wrapper_lines:
        error = f"{error}; {WRAPPER_LOG_FILE}: {wrapper_lines}"
    try:
        started = (directory / SPEC_FILE).stat().st_mtime
    except FileNotFoundError:
        started = time.time()
    return Exit(exit_code=None, signal=None, error=error, started=started, finished=time.time())


def _cgroup_name(directory: Path) -> str:
    """A cgroup name for the step in `directory`: readable, and unique per directory."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", directory.name)[:40]
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:12]
    return f"{readable}-{digest}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return data


def _read_text(path: Path, tail: int | None) -> str:
    """The text of `path` ("" if missing), or its last `tail` lines, read from the end."""
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return ""
    with file:
        if tail is None:
            return file.read().decode(errors="replace")
        if tail <= 0:
            return ""
        end = file.seek(0, os.SEEK_END)
        data = b""
        position = end
        # Back until there are more newlines than lines wanted: the first line kept is whole.
        while position > 0 and data.count(b"\n") <= tail:
            step = min(_LOG_BLOCK_BYTES, position)
            position -= step
            file.seek(position)
            data = file.read(step) + data
    complete = data.endswith(b"\n")
    lines = data.split(b"\n")
    if complete:
        lines.pop()
    return (b"\n".join(lines[-tail:]) + (b"\n" if complete else b"")).decode(errors="replace")
