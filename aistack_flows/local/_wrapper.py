"""Run one step as a child process, tee its output, and record how it ended.

Run by `aistack_flows.local._process.start` as `python -I -S _wrapper.py <spec.json>`, so it
uses the standard library only and imports nothing from the project, not even `site` (a start
costs the bare interpreter's start-up: every step pays it). The spec is a JSON object:

    {"argv": [...], "cwd": "...", "env": {...}, "log": "...", "stdout": "...",
     "exit_file": "...", "cgroup": "..." or null}

The wrapper leads its own session and process group; the step runs in that same group, so a
signal to the group reaches the step and everything the step forks. The wrapper ignores
SIGTERM, SIGINT and SIGHUP so that it outlives a graceful stop of the group and records the
step's end; it cannot ignore SIGKILL, which is why the runner sends SIGKILL to the group's other
members only (`_process.signal_group`). The runner starts the wrapper with those three signals
blocked: one sent before the step exists is still pending when the step has started, and is
then forwarded to it, so a stop right after a start is never lost.

The step's stdout goes to the `stdout` file (the step's `outputs.result`) and to the `log`; its
stderr goes to the `log` only. Each chunk is written whole, under one lock, so the log keeps the
two streams' lines in the order they were read, as a terminal would show them.

When the step has ended, the exit record is written atomically to `exit_file`:

    {"exit_code": int | null, "signal": int | null, "error": str | null,
     "started": float, "finished": float}      # seconds since the epoch

`error` says why the step did not run: its command was not found (exit code 127) or not
executable (126), its working directory is missing, or its cgroup could not be joined. That
last one fails the step instead of running it without limits: the runner admitted the step on
the strength of those limits, and a step that outgrows its memory unlimited can take the whole
machine down with it. Every error is written to the log too.

The wrapper exits 0 when the step ran or was refused. A failure of its own is recorded as an
error too, its traceback in the wrapper's stderr; only a spec that cannot be read or a log that
cannot be opened leave no record (the runner then reports the step lost).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

# Importing `typing` would cost a tenth of the wrapper's start-up; mypy reads any constant named
# TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
"""What a graceful stop sends the group: the step gets them, the wrapper ignores them."""

# Python ignores SIGPIPE and SIGXFSZ in itself; the step starts with every default back, as
# subprocess's `restore_signals` would give it.
_DEFAULT_IN_STEP = STOP_SIGNALS | {signal.SIGPIPE, signal.SIGXFSZ}
_CHUNK_BYTES = 65536
# After the step ends, how long its output may still flow: a background process it left behind
# may hold the pipes open for ever, and the record must not wait for it.
_DRAIN_SECONDS = 5.0
_NOT_FOUND_EXIT_CODE = 127
_NOT_EXECUTABLE_EXIT_CODE = 126


class _Tee:
    """Where the step's output goes: the log (both streams) and the stdout file (stdout)."""

    def __init__(self, log_fd: int, stdout_fd: int) -> None:
        self._log_fd = log_fd
        self._stdout_fd = stdout_fd
        self._lock = threading.Lock()

    def stdout(self, chunk: bytes) -> None:
        with self._lock:
            _write_all(self._stdout_fd, chunk)
            _write_all(self._log_fd, chunk)

    def stderr(self, chunk: bytes) -> None:
        with self._lock:
            _write_all(self._log_fd, chunk)

    def note(self, message: str) -> None:
        """A line of the wrapper's own in the log, marked as such."""
        self.stderr(f"[aistack] {message}\n".encode())


def main(argv: list[str]) -> int:
    """Run the step that the spec file `argv[1]` describes; 0 once its record is written."""
    # Blocked already when the runner started us; blocking again covers a start by hand.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    if len(argv) != 2:
        sys.stderr.write("usage: python -I -S _wrapper.py SPEC.json\n")
        return 2
    with open(argv[1], encoding="utf-8") as file:
        spec = json.load(file)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    log_fd = os.open(spec["log"], flags, 0o644)
    stdout_fd = os.open(spec["stdout"], flags, 0o644)
    tee = _Tee(log_fd, stdout_fd)
    try:
        record = _run(spec, tee)
    except Exception as err:
        # A spec it cannot use, or a bug: the runner still gets a record; the traceback goes to
        # the wrapper's own stderr.
        record = _record(None, None, f"the step's wrapper failed: {err!r}", time.time())
        tee.note(record["error"])
        _write_record(spec["exit_file"], record)
        raise
    if record["error"]:
        tee.note(record["error"])
    _write_record(spec["exit_file"], record)
    return 0


def _run(spec: dict[str, Any], tee: _Tee) -> dict[str, Any]:
    """Start the step, pass its output on, wait for it; its exit record."""
    started = time.time()

    def failed(error: str, exit_code: int | None = None) -> dict[str, Any]:
        return _record(exit_code, None, error, started)

    if spec.get("cgroup"):
        try:
            with open(os.path.join(spec["cgroup"], "cgroup.procs"), "a", encoding="ascii") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as err:
            return failed(
                f"could not join the step's cgroup {spec['cgroup']} ({err.strerror or err}), so "
                "its CPU and memory limits could not be enforced; the step was not started"
            )
    argv: list[str] = spec["argv"]
    env: dict[str, str] = spec["env"]
    if not argv:
        return failed("the step has no command", _NOT_FOUND_EXIT_CODE)
    try:
        os.chdir(spec["cwd"])
    except OSError as err:
        return failed(f"working directory {spec['cwd']}: {err.strerror or err}")
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    started = time.time()
    try:
        pid = os.posix_spawn(
            _executable(argv[0], env),
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, out_write, 1),
                (os.POSIX_SPAWN_DUP2, err_write, 2),
            ],
            setsigmask=(),
            setsigdef=_DEFAULT_IN_STEP,
        )
    except OSError as err:
        for fd in (out_read, err_read):
            os.close(fd)
        if isinstance(err, FileNotFoundError):
            return failed(f"command not found: {argv[0]}", _NOT_FOUND_EXIT_CODE)
        return failed(f"cannot run {argv[0]}: {err.strerror or err}", _NOT_EXECUTABLE_EXIT_CODE)
    finally:
        os.close(out_write)
        os.close(err_write)
    _ignore_stop_signals(forward_to=pid)
    pumps = [
        threading.Thread(target=_pump, args=(out_read, tee.stdout), daemon=True),
        threading.Thread(target=_pump, args=(err_read, tee.stderr), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    _, status = os.waitpid(pid, 0)
    finished = time.time()
    drain_until = time.monotonic() + _DRAIN_SECONDS
    for pump in pumps:
        pump.join(max(0.0, drain_until - time.monotonic()))
    if any(pump.is_alive() for pump in pumps):
        tee.note(
            "the step ended but a process it left behind holds its output open; "
            "what that process writes from now on is not recorded"
        )
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return _record(None, -code, None, started, finished)
    return _record(code, None, None, started, finished)


def _executable(name: str, env: dict[str, str]) -> str:
    """The file to run for `argv[0]`, searched on the step's PATH (not the wrapper's)."""
    if "/" in name:
        return name
    found = None
    for directory in os.get_exec_path(env):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            found = found or candidate  # as execvp: a later executable one wins, else EACCES
    if found is None:
        raise FileNotFoundError(name)
    return found


def _ignore_stop_signals(*, forward_to: int) -> None:
    """From now on ignore the stop signals; pass any that came before the step to the step."""
    early = signal.sigpending() & STOP_SIGNALS
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)  # also discards the pending ones
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    for signum in sorted(early):
        os.kill(forward_to, signum)


def _pump(fd: int, write: Callable[[bytes], None]) -> None:
    """Pass everything read from `fd` to `write`, until the writing end is closed."""
    while chunk := os.read(fd, _CHUNK_BYTES):
        write(chunk)
    os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _record(
    exit_code: int | None,
    signum: int | None,
    error: str | None,
    started: float,
    finished: float | None = None,
) -> dict[str, Any]:
    return {
        "exit_code": exit_code,
        "signal": signum,
        "error": error,
        "started": started,
        "finished": time.time() if finished is None else finished,
    }


def _write_record(path: str, record: dict[str, Any]) -> None:
    """Write the record whole or not at all: a temporary file, fsync, then rename over `path`."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(record, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
