"""NVIDIA MPS control daemons, one per shared GPU, and what a slice's process is given.

A GPU that hosts slices gets its own MPS control daemon (`nvidia-cuda-mps-control -d`) with
`CUDA_VISIBLE_DEVICES=<uuid>` and a private directory `<root>/<uuid>/` holding `pipe/` (the
daemon's sockets and pid file) and `log/` (`control.log`, `server.log`). Never the default
`/tmp/nvidia-mps`: libnvidia-container mounts that directory into every GPU container when it
exists, so a daemon there would capture all GPU pods of the node
(NVIDIA/libnvidia-container:src/nvc_info.c; aws/amazon-ecs-ami#771). One daemon per GPU keeps
a fatal fault, which MPS delivers to every client of a server, to one GPU.

What is set where (docs.nvidia.com/deploy/mps, "Appendix: Tools and Interface Reference"):
- A slice's process gets `client_environment(...)`: the pipe directory, its GPU and its own
  caps (`CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`, `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`).
- The daemon gets defaults (`set_default_active_thread_percentage`,
  `set_default_device_pinned_mem_limit 0 <M>M`) that cap a client whose environment lacks the
  caps. A running MPS server keeps the defaults it started with, so changed defaults are also
  sent to every running server (`set_active_thread_percentage <pid>`,
  `set_device_pinned_mem_limit <pid> 0 <M>M`); clients already connected keep theirs.
- A client's environment can only lower the daemon's setting, never raise it: NVIDIA states so
  for the thread percentage (docs.nvidia.com/deploy/topics/topic_5_2_5.html). Defaults at the
  smallest slice would therefore cap every slice of the GPU at the smallest one; `ensure` is
  given the defaults to set, and `daemon_defaults` computes them as the largest slice of the
  GPU, the tightest defaults that cap no slice below its own share. Whether the memory limit
  behaves the same is not documented as plainly (scripts/gpu-sharing-check measures both).

All state lives in the directories: an agent that restarts finds its daemons there (the pid
file, else the process table) and adopts them. `MpsDaemons` is not thread-safe; one agent loop
owns it. Every failure is an `MpsError` whose message names the GPU, what failed and what to do.

HAMi-core, the other mechanism, needs no daemon: `hami_core_environment` gives its variables.

Which mechanism a slice gets is a setting per pool (`Mechanism`); the service writes it on the
slice's pod (`translate.allocation_annotations`), the node agent keeps the daemons of an `mps`
node, and the local runner keeps those of the slices it runs. A shared module: it imports no
driver and nothing outside the standard library, so every driver and scripts/gpu-sharing-check
can use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

__all__ = [
    "CONTROL_BINARY",
    "DEFAULT_MPS_ROOT",
    "MECHANISMS",
    "PID_FILE",
    "Action",
    "GpuSharing",
    "Mechanism",
    "MpsDaemon",
    "MpsDaemons",
    "MpsError",
    "Runner",
    "Share",
    "daemon_defaults",
    "hami_core_environment",
    "pipe_directory",
]

Mechanism = Literal["mps", "hami-core", "none"]
"""How the slices of a pool are held to their caps on the device (docs/gpu-sharing.md)."""

MECHANISMS: Final[tuple[Mechanism, ...]] = ("mps", "hami-core", "none")

DEFAULT_MPS_ROOT: Final = "/run/aistack/mps"
"""Where a node's daemons keep their directories unless configured otherwise: on tmpfs, short
enough for the socket paths, and never libnvidia-container's `/tmp/nvidia-mps`."""


@dataclass(frozen=True, slots=True)
class GpuSharing:
    """Which mechanism enforces the slices of each pool, and where MPS daemons live.

    Attributes:
        default: The mechanism of a pool not named in `pools`.
        pools: The mechanism of each named pool.
        mps_root: The directory of the nodes' MPS daemons (`MpsDaemons.root`); the service
            derives each slice's pipe directory from it, so it must be the agents' setting.
    """

    default: Mechanism = "none"
    pools: Mapping[str, Mechanism] = field(default_factory=dict)
    mps_root: str = DEFAULT_MPS_ROOT

    def __post_init__(self) -> None:
        """Refuse an unknown mechanism or a relative root, naming it."""
        for where, mechanism in (("default", self.default), *self.pools.items()):
            if mechanism not in MECHANISMS:
                raise ValueError(
                    f"GPU sharing of {where}: {mechanism!r} is not one of {', '.join(MECHANISMS)}"
                )
        if not self.mps_root.startswith("/"):
            raise ValueError(f"the MPS root must be an absolute path, not {self.mps_root!r}")

    def mechanism(self, pool: str) -> Mechanism:
        """The mechanism that enforces the slices of `pool`."""
        return self.pools.get(pool, self.default)

    @property
    def uses_mps(self) -> bool:
        """Whether any pool's slices may run under MPS (their pods then mount the daemons)."""
        return "mps" in (self.default, *self.pools.values())


CONTROL_BINARY: Final = "nvidia-cuda-mps-control"
"""The control binary the driver's utilities install (on PATH on a GPU node)."""

PID_FILE: Final = "nvidia-cuda-mps-control.pid"
"""Where the control daemon writes its pid, inside its pipe directory (MPS guide, appendix)."""

_SOCKET: Final = "control"
"""The control daemon's socket inside the pipe directory ("using socket <pipe>/control")."""

_SOCKET_PATH_BYTES: Final = 107
"""The longest path a Unix socket can bind on Linux (sun_path is 108 bytes with its NUL). A
longer pipe directory makes the real daemon start, fail to bind and exit, after which every
command answers only that it cannot find the daemon."""

_UUID_BYTES: Final = len("GPU-00000000-0000-0000-0000-000000000000")
_NOT_RUNNING: Final = "cannot find mps control daemon"
_POLL_SECONDS: Final = 0.05
_START_OUTPUT: Final = "start.out"
_FOREIGN_MPS_VARIABLES: Final = (
    "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
    "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT",
    "CUDA_MPS_CLIENT_PRIORITY",
)

Runner = Callable[..., subprocess.CompletedProcess[str]]
"""`subprocess.run` or a stand-in: called with an argv and `subprocess.run`'s keywords."""

Action = Literal["started", "restarted", "updated", "kept"]
"""What `ensure` did for one GPU: started a daemon, started one again after it died, sent new
defaults to a running one, or found it running with the right defaults."""


class MpsError(RuntimeError):
    """An MPS daemon could not be started, configured or stopped.

    Attributes:
        failures: The reason per GPU uuid, each a sentence that says what to do.
    """

    def __init__(self, failures: Mapping[str, str]) -> None:
        """One error for every GPU that failed; the message lists them all."""
        self.failures: Mapping[str, str] = MappingProxyType(dict(failures))
        super().__init__("; ".join(f"GPU {uuid}: {why}" for uuid, why in sorted(failures.items())))


@dataclass(frozen=True, slots=True)
class Share:
    """A memory cap and a compute cap on one GPU.

    Attributes:
        memory_mib: Device memory a process may allocate through CUDA, in MiB (at least 1).
        compute_percent: The share of the GPU's SMs its kernels may occupy, 1-100.
    """

    memory_mib: int
    compute_percent: int

    def __post_init__(self) -> None:
        """Refuse caps MPS cannot express."""
        if self.memory_mib < 1:
            raise ValueError(f"memory_mib must be at least 1, not {self.memory_mib}")
        if not 1 <= self.compute_percent <= 100:
            raise ValueError(f"compute_percent must be 1-100, not {self.compute_percent}")


def daemon_defaults(slices: Iterable[Share]) -> Share:
    """The defaults for the daemon of a GPU that hosts these slices: the largest of each cap.

    A client's environment can only lower the daemon's setting (see the module), so anything
    tighter would cap the larger slices below their share; this still caps a process that lost
    its environment at what the largest slice of that GPU was given, not at the whole GPU.

    Raises:
        ValueError: `slices` is empty: a GPU without slices needs no daemon.
    """
    shares = list(slices)
    if not shares:
        raise ValueError("a GPU without slices has no MPS daemon, so no defaults")
    return Share(
        memory_mib=max(share.memory_mib for share in shares),
        compute_percent=max(share.compute_percent for share in shares),
    )


@dataclass(frozen=True, slots=True)
class MpsDaemon:
    """One GPU's control daemon after `ensure`.

    Attributes:
        uuid: The GPU it serves.
        pid: The control daemon's pid, None where neither its pid file nor the process table
            names it.
        defaults: The defaults it was given.
        action: What `ensure` did.
        servers: Pids of its MPS servers (a server starts with the first client).
    """

    uuid: str
    pid: int | None
    defaults: Share
    action: Action
    servers: tuple[int, ...] = ()


class MpsDaemons:
    """The MPS control daemons of one node's shared GPUs, each in `<root>/<uuid>/`.

    Args:
        root: The directory that holds one directory per GPU; created when needed. Keep it
            short (a Unix socket path is at most 107 bytes) and never `/tmp/nvidia-mps`.
        control: The control binary, a name looked up on PATH or a path.
        run: `subprocess.run` or a stand-in with its signature, for every command.
        environ: The environment the control binary starts from (os.environ when None);
            variables of a slice's own caps are dropped from it.
        timeout_seconds: How long one control command, a start, or a stop may take.
    """

    def __init__(
        self,
        root: Path,
        *,
        control: str = CONTROL_BINARY,
        run: Runner = subprocess.run,
        environ: Mapping[str, str] | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        """Nothing runs until `ensure`."""
        self.root = root
        self.control = control
        self._run = run
        base = dict(os.environ if environ is None else environ)
        for name in _FOREIGN_MPS_VARIABLES:
            base.pop(name, None)
        self._environ: Mapping[str, str] = MappingProxyType(base)
        self._timeout_seconds = timeout_seconds
        self._applied: dict[str, Share] = {}

    def __repr__(self) -> str:
        """E.g. "MpsDaemons(root=PosixPath('/run/mps'), control='nvidia-cuda-mps-control')"."""
        return f"MpsDaemons(root={self.root!r}, control={self.control!r})"

    # -- where things are ------------------------------------------------------------------------

    def pipe_directory(self, uuid: str) -> Path:
        """`CUDA_MPS_PIPE_DIRECTORY` of the GPU's daemon: mounted into its slices' containers."""
        return pipe_directory(self.root, uuid)

    def log_directory(self, uuid: str) -> Path:
        """`CUDA_MPS_LOG_DIRECTORY` of the GPU's daemon: `control.log` and `server.log`."""
        return self.root / _checked_uuid(uuid) / "log"

    def available(self) -> str:
        """Empty if daemons can run here, else why not and what to do. Starts nothing."""
        path = self._environ.get("PATH", os.defpath)
        if shutil.which(self.control, path=path) is None:
            return (
                f"the MPS control binary {self.control} is not on PATH ({path}): install the "
                "NVIDIA driver's utilities on the node, run the agent's container with the "
                "NVIDIA runtime and NVIDIA_DRIVER_CAPABILITIES including compute, or choose "
                "enforcement hami-core or none for this pool"
            )
        longest = len(str(self.root / ("G" * _UUID_BYTES) / "pipe" / _SOCKET).encode())
        if longest > _SOCKET_PATH_BYTES:
            return (
                f"the MPS directory {self.root} is too long: a daemon's socket there would need "
                f"{longest} bytes, over the {_SOCKET_PATH_BYTES} a Unix socket path allows; "
                "configure a shorter directory"
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return f"cannot create the MPS directory {self.root} ({error}): make it writable"
        if not os.access(self.root, os.W_OK | os.X_OK):
            return f"the MPS directory {self.root} is not writable by this process: fix its owner"
        return ""

    # -- what a slice gets -----------------------------------------------------------------------

    def client_environment(
        self, uuid: str, memory_mib: int, compute_percent: int
    ) -> dict[str, str]:
        """The variables a slice's process needs to run as a capped client of the GPU's daemon.

        The container must also see the pipe directory at the same path and the daemon's
        `/dev/shm`; `CUDA_VISIBLE_DEVICES` names the GPU by uuid, so device 0 of the limit is
        that GPU whatever index it has on the node.
        """
        share = Share(memory_mib, compute_percent)
        return {
            "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(share.compute_percent),
            "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": f"0={share.memory_mib}M",
            "CUDA_MPS_PIPE_DIRECTORY": str(self.pipe_directory(uuid)),
            "CUDA_VISIBLE_DEVICES": uuid,
        }

    # -- daemons ---------------------------------------------------------------------------------

    def ensure(self, shares: Mapping[str, Share]) -> tuple[MpsDaemon, ...]:
        """Make the running daemons exactly those of `shares`, each with its defaults.

        Starts a daemon for a GPU that has none (again, if one died), sends defaults that
        changed (or were never sent by this object, as after an agent restart), and quits the
        daemons of GPUs under `root` that are not in `shares`. Idempotent; every GPU is tried
        even when another fails.

        Args:
            shares: The defaults per GPU uuid, for every GPU that hosts slices; see
                `daemon_defaults`.

        Returns:
            The GPUs' daemons, ordered by uuid.

        Raises:
            ValueError: A key is not a GPU uuid (nothing was done).
            MpsError: One or more GPUs failed; the others were handled.
        """
        for uuid in shares:
            _checked_uuid(uuid)
        daemons: list[MpsDaemon] = []
        failures: dict[str, str] = {}
        for uuid, share in sorted(shares.items()):
            try:
                daemons.append(self._ensure_one(uuid, share))
            except MpsError as error:
                failures.update(error.failures)
        for uuid in sorted(self._known_uuids() - shares.keys()):
            try:
                self.stop(uuid)
            except MpsError as error:
                failures.update(error.failures)
        if failures:
            raise MpsError(failures)
        return tuple(daemons)

    def stop(self, uuid: str) -> None:
        """Quit the GPU's daemon, wait until it has exited and remove its pipe directory.

        Nothing happens if none runs; the log directory stays for whoever reads it later.

        Raises:
            MpsError: It still runs after `quit` (its clients may hold it).
        """
        self._applied.pop(uuid, None)
        pid = self._pid(uuid)
        if not self._runs(uuid, pid):
            shutil.rmtree(self.pipe_directory(uuid), ignore_errors=True)
            return
        self._control(uuid, "quit")
        deadline = time.monotonic() + self._timeout_seconds
        while self._runs(uuid, pid):
            if time.monotonic() > deadline:
                kill = f"`kill {pid}`" if pid is not None else "kill it"
                raise MpsError(
                    {
                        uuid: f"the MPS control daemon (pid {pid}) still runs "
                        f"{self._timeout_seconds:g} s after quit; see "
                        f"{self.log_directory(uuid)}/control.log, stop the slices that use it "
                        f"and then {kill}"
                    }
                )
            time.sleep(_POLL_SECONDS)
        shutil.rmtree(self.pipe_directory(uuid), ignore_errors=True)

    def stop_all(self) -> None:
        """Quit every daemon under `root`, e.g. when the agent leaves a node.

        Raises:
            MpsError: Some still run; the others were stopped.
        """
        failures: dict[str, str] = {}
        for uuid in sorted(self._known_uuids()):
            try:
                self.stop(uuid)
            except MpsError as error:
                failures.update(error.failures)
        if failures:
            raise MpsError(failures)

    # -- one GPU ---------------------------------------------------------------------------------

    def _ensure_one(self, uuid: str, share: Share) -> MpsDaemon:
        # Ask the daemon first: it may answer although its pid cannot be found, and starting a
        # second one in the same directory would fail.
        servers = self._servers(uuid)
        pid = self._pid(uuid)
        action: Action
        if servers is not None:
            action = "kept" if self._applied.get(uuid) == share else "updated"
        elif pid is not None and _alive(pid):
            raise MpsError(
                {
                    uuid: f"the MPS control daemon (pid {pid}) runs but does not answer; see "
                    f"{self.log_directory(uuid)}/control.log, then `kill {pid}` and the agent "
                    "starts a new one"
                }
            )
        else:
            died = pid is not None or uuid in self._applied
            action = "restarted" if died else "started"
            self._remove_stale(uuid)
            pid = self._start(uuid)
            servers = ()
        if action != "kept":
            self._set_defaults(uuid, share, servers)
            self._applied[uuid] = share
        return MpsDaemon(uuid=uuid, pid=pid, defaults=share, action=action, servers=servers)

    def _start(self, uuid: str) -> int | None:
        pipe, log = self.pipe_directory(uuid), self.log_directory(uuid)
        socket = pipe / _SOCKET
        if len(str(socket).encode()) > _SOCKET_PATH_BYTES:
            raise MpsError(
                {
                    uuid: f"the socket path {socket} is longer than the {_SOCKET_PATH_BYTES} "
                    "bytes a Unix socket allows; configure a shorter MPS directory"
                }
            )
        try:
            for directory in (pipe, log):
                directory.mkdir(parents=True, exist_ok=True)
                # Clients run as other users inside containers: they must reach the sockets.
                directory.chmod(0o755)
        except OSError as error:
            raise MpsError(
                {uuid: f"cannot create {pipe.parent} ({error}): make it writable"}
            ) from None
        # The daemon forks into the background; its output goes to a file rather than a pipe, so
        # that a daemon that kept the pipe open could not hold this call until it exits.
        output = log / _START_OUTPUT
        with output.open("w") as sink:
            completed = self._invoke(
                uuid, "-d", [self.control, "-d"], stdin=subprocess.DEVNULL, stdout=sink
            )
        said = output.read_text(errors="replace").strip()
        if completed.returncode != 0:
            raise MpsError(
                {
                    uuid: f"`{self.control} -d` failed (exit {completed.returncode}: "
                    f"{said or 'no output'}); see {log}/control.log"
                }
            )
        deadline = time.monotonic() + self._timeout_seconds
        while self._servers(uuid) is None:
            if time.monotonic() > deadline:
                raise MpsError(
                    {
                        uuid: f"the MPS control daemon started by `{self.control} -d` does not "
                        f"answer after {self._timeout_seconds:g} s; see {log}/control.log"
                    }
                )
            time.sleep(_POLL_SECONDS)
        return self._pid(uuid)

    def _set_defaults(self, uuid: str, share: Share, servers: Iterable[int]) -> None:
        percent, limit = share.compute_percent, f"{share.memory_mib}M"
        self._control(uuid, f"set_default_active_thread_percentage {percent}")
        self._control(uuid, f"set_default_device_pinned_mem_limit 0 {limit}")
        # A running server ignores new defaults; its own settings apply to its next clients.
        for server in servers:
            self._control(uuid, f"set_active_thread_percentage {server} {percent}")
            self._control(uuid, f"set_device_pinned_mem_limit {server} 0 {limit}")

    def _runs(self, uuid: str, pid: int | None) -> bool:
        """The daemon runs: its process is alive or, where its pid is unknown, it answers."""
        return _alive(pid) if pid is not None else self._servers(uuid) is not None

    def _servers(self, uuid: str) -> tuple[int, ...] | None:
        """The MPS servers' pids, or None when no daemon answers (health check)."""
        completed = self._control(uuid, "get_server_list", check=False)
        if completed.returncode != 0 or _NOT_RUNNING in (completed.stdout or "").lower():
            return None
        return tuple(int(word) for word in (completed.stdout or "").split() if word.isdigit())

    def _control(
        self, uuid: str, command: str, *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`echo COMMAND | nvidia-cuda-mps-control` in the GPU's environment."""
        completed = self._invoke(
            uuid, command, [self.control], input=f"{command}\n", capture_output=True
        )
        said = " ".join(f"{completed.stdout or ''} {completed.stderr or ''}".split())
        if check and (completed.returncode != 0 or _NOT_RUNNING in said.lower()):
            raise MpsError(
                {
                    uuid: f"the MPS command `{command}` failed (exit {completed.returncode}: "
                    f"{said or 'no output'}); see {self.log_directory(uuid)}/control.log"
                }
            )
        return completed

    def _invoke(
        self, uuid: str, what: str, argv: list[str], **options: object
    ) -> subprocess.CompletedProcess[str]:
        try:
            return self._run(
                argv,
                env=self._environment(uuid),
                text=True,
                timeout=self._timeout_seconds,
                check=False,
                **options,
            )
        except FileNotFoundError:
            raise MpsError({uuid: self.available() or f"{self.control} cannot be run"}) from None
        except subprocess.TimeoutExpired:
            raise MpsError(
                {
                    uuid: f"`{what}` to the MPS control daemon did not finish within "
                    f"{self._timeout_seconds:g} s; see {self.log_directory(uuid)}/control.log"
                }
            ) from None

    def _environment(self, uuid: str) -> dict[str, str]:
        return {
            **self._environ,
            "CUDA_VISIBLE_DEVICES": uuid,
            "CUDA_MPS_PIPE_DIRECTORY": str(self.pipe_directory(uuid)),
            "CUDA_MPS_LOG_DIRECTORY": str(self.log_directory(uuid)),
        }

    # -- finding daemons -------------------------------------------------------------------------

    def _known_uuids(self) -> set[str]:
        """GPUs that may have a daemon: this object started one, or a pipe directory is left.

        `stop` removes the pipe directory, so one left behind is a daemon that runs (started by
        an earlier agent) or died; `stop` handles both.
        """
        found = set(self._applied)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            found.update(
                entry.name
                for entry in self.root.iterdir()
                if _is_uuid(entry.name) and (entry / "pipe").is_dir()
            )
        return found

    def _pid(self, uuid: str) -> int | None:
        """The control daemon's pid: its pid file, else a process started for this pipe dir."""
        pipe = self.pipe_directory(uuid)
        with contextlib.suppress(OSError, ValueError):
            return int((pipe / PID_FILE).read_text().strip())
        return _find_in_process_table(Path(self.control).name, pipe)

    def _remove_stale(self, uuid: str) -> None:
        """Remove a dead daemon's socket and pid file, so a new one starts clean."""
        pipe = self.pipe_directory(uuid)
        for name in (_SOCKET, PID_FILE):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                (pipe / name).unlink()


def pipe_directory(root: Path | str, uuid: str) -> Path:
    """`CUDA_MPS_PIPE_DIRECTORY` of the daemon of GPU `uuid` under `root`: `<root>/<uuid>/pipe`.

    Raises:
        ValueError: `uuid` cannot name a directory (see `MpsDaemons.ensure`).
    """
    return Path(root) / _checked_uuid(uuid) / "pipe"


# -- HAMi-core ------------------------------------------------------------------------------------


def hami_core_environment(memory_mib: int, compute_percent: int) -> dict[str, str]:
    """HAMi-core's caps for a process on one GPU: memory as "<MiB>m", SMs in percent.

    The names and formats are those HAMi's device plugin returns from `Allocate`
    (Project-HAMi/HAMi:pkg/device-plugin/nvidiadevice/nvinternal/plugin/server.go sets
    `CUDA_DEVICE_MEMORY_LIMIT_<i>` to "<MiB>m" and `CUDA_DEVICE_SM_LIMIT`); the unsuffixed
    memory variable applies to every device (Project-HAMi/HAMi-core, README), as KAI sets it
    (kai-scheduler/KAI-Scheduler:pkg/binder/plugins/hamicore/hami_core.go). The caps act only
    where `libvgpu.so` is preloaded into the process; a limit of 100 % means no SM limit.
    """
    share = Share(memory_mib, compute_percent)
    return {
        "CUDA_DEVICE_MEMORY_LIMIT": f"{share.memory_mib}m",
        "CUDA_DEVICE_SM_LIMIT": str(share.compute_percent),
    }


# -- processes ------------------------------------------------------------------------------------


def _is_uuid(name: str) -> bool:
    """A name that can be a GPU's directory: no path or list syntax, not too long."""
    return (
        0 < len(name) <= _UUID_BYTES + 16
        and name not in {".", ".."}
        and not any(c in name for c in "/,= \t\n")
    )


def _checked_uuid(uuid: str) -> str:
    if not _is_uuid(uuid):
        raise ValueError(f"not a GPU uuid: {uuid!r} (expected e.g. GPU-4b7c...)")
    return uuid


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a dead daemon its parent has not reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return _signal_zero(pid)
    # The state follows the command name, which is in parentheses and may contain spaces.
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def _signal_zero(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _find_in_process_table(name: str, pipe: Path) -> int | None:
    """A live process running `name` (or a script of that name) with this pipe directory.

    The fallback where the pid file is missing; as `ps` would, it reads /proc, and sees other
    users' processes only where this one may read their environment (the agent runs as root).
    """
    wanted = f"CUDA_MPS_PIPE_DIRECTORY={pipe}".encode()
    with contextlib.suppress(FileNotFoundError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                # The binary itself, or an interpreter running a script of that name.
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if not any(Path(os.fsdecode(arg)).name == name for arg in argv if arg):
                    continue
                if wanted in (entry / "environ").read_bytes().split(b"\0"):
                    pid = int(entry.name)
                    if _alive(pid):
                        return pid
            except OSError:
                continue
    return None
