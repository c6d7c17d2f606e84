#!/usr/bin/env python3
"""A stand-in for `nvidia-cuda-mps-control`, for tests on machines without an NVIDIA driver.

Tests link it into a directory on PATH as `nvidia-cuda-mps-control`. Like the real binary:

- `-d` starts the control daemon in the background and returns: a process that listens on the
  Unix socket `$CUDA_MPS_PIPE_DIRECTORY/control`, writes its pid to
  `$CUDA_MPS_PIPE_DIRECTORY/nvidia-cuda-mps-control.pid` and logs to
  `$CUDA_MPS_LOG_DIRECTORY/control.log`. A second `-d` for a directory whose daemon answers
  fails with "An instance of this daemon is already running".
- Without arguments it reads commands from stdin, one a line, sends each to the daemon and
  prints the reply. With no daemon listening it prints "Cannot find MPS control daemon process"
  and exits 1. A command the daemon refuses prints the reason, and the exit status is 1.

Commands: `get_server_list` (server pids, one a line; empty until a server exists),
`start_server -uid <uid>` (a fake server, with a pid above any real one), `quit`, and the
get/set pairs `*_default_active_thread_percentage`, `*_default_device_pinned_mem_limit <dev>`,
`*_active_thread_percentage <pid>` and `*_device_pinned_mem_limit <pid> <dev>`. Values are
checked as the MPS guide describes them (a percentage 0-100; an integer with M or G; a device
index below the number of devices in `CUDA_VISIBLE_DEVICES`; a server pid that exists).

For the tests' eyes only:
- Every invocation appends one JSON line per command to `$FAKE_MPS_RECORD` (if set): the
  command, the MPS variables of its environment, and how it ended. The daemon appends
  `{"daemon": pid, ...}` when it starts, so a fixture can kill whatever is left.
- It refuses to run without `CUDA_MPS_PIPE_DIRECTORY` and `CUDA_MPS_LOG_DIRECTORY`, so that a
  test never touches the host's default `/tmp/nvidia-mps`.
- The daemon exits by itself after `$FAKE_MPS_LIFETIME_SECONDS` (60 by default), so that a test
  that dies leaves nothing running for long.
"""

from __future__ import annotations

# Imports are few and cheap on purpose (no pathlib, no typing): tests run this file many times.
import contextlib
import json
import os
import re
import socket
import sys
import time

PID_FILE = "nvidia-cuda-mps-control.pid"
NOT_RUNNING = "Cannot find MPS control daemon process"
RECORDED = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_MPS_PIPE_DIRECTORY",
    "CUDA_MPS_LOG_DIRECTORY",
    "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
    "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT",
)
# Above the largest pid Linux hands out (4194304), so a fake server pid is never a process.
FIRST_SERVER_PID = 5_000_000
LIMIT = re.compile(r"^[0-9]+[MG]$")
CLIENT_TIMEOUT_SECONDS = 30.0


def main(argv: list[str]) -> int:
    """Dispatch as the real binary does: `-d` daemonises, no argument reads commands."""
    missing = [
        name
        for name in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")
        if not os.environ.get(name)
    ]
    if missing:
        print(f"fake nvidia-cuda-mps-control: set {' and '.join(missing)}", file=sys.stderr)
        return 2
    if argv == ["-d"]:
        return start_daemon()
    if argv == ["--serve"]:
        return Daemon().serve()
    if argv:
        print(f"fake nvidia-cuda-mps-control: unknown arguments {argv}", file=sys.stderr)
        return 2
    return client(sys.stdin.read().splitlines())


def pipe_directory() -> str:
    return os.environ["CUDA_MPS_PIPE_DIRECTORY"]


def log_directory() -> str:
    return os.environ["CUDA_MPS_LOG_DIRECTORY"]


def record(**fields: object) -> None:
    path = os.environ.get("FAKE_MPS_RECORD")
    if not path:
        return
    fields["env"] = {name: os.environ[name] for name in RECORDED if name in os.environ}
    with open(path, "a", encoding="utf-8") as sink:
        sink.write(json.dumps(fields) + "\n")


# -- the client ------------------------------------------------------------------------------------


def ask(command: str) -> dict[str, str] | None:
    """The daemon's answer to one command, or None when no daemon listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(CLIENT_TIMEOUT_SECONDS)
        try:
            connection.connect(os.path.join(pipe_directory(), "control"))
        except OSError:
            return None
        connection.sendall(json.dumps({"command": command}).encode() + b"\n")
        with connection.makefile("r", encoding="utf-8") as replies:
            line = replies.readline()
    if not line:
        return None
    answer: dict[str, str] = json.loads(line)
    return answer


def client(lines: list[str]) -> int:
    status = 0
    for line in (line.strip() for line in lines):
        if not line:
            continue
        answer = ask(line)
        if answer is None:
            record(command=line, outcome="no daemon")
            print(NOT_RUNNING)
            return 1
        record(command=line, outcome=answer["error"] or "ok")
        if answer["error"]:
            print(answer["error"])
            status = 1
        elif answer["reply"]:
            print(answer["reply"])
    return status


# -- starting the daemon ---------------------------------------------------------------------------


def start_daemon() -> int:
    import subprocess  # noqa: PLC0415 - only `-d` needs it; the client starts faster without

    pipe = pipe_directory()
    for directory in (pipe, log_directory()):
        if not os.path.isdir(directory):
            record(command="-d", outcome=f"no directory {directory}")
            print(f"Could not open directory {directory}")
            return 1
    if ask("get_server_list") is not None:
        record(command="-d", outcome="already running")
        print("An instance of this daemon is already running")
        return 1
    daemon = subprocess.Popen(
        [
            sys.executable,
            *(["-S"] if sys.flags.no_site else []),
            os.path.abspath(sys.argv[0]),
            "--serve",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            record(command="-d", outcome="daemon exited")
            print(f"the daemon exited at once; see {log_directory()}/control.log")
            return 1
        if os.path.exists(os.path.join(pipe, PID_FILE)) and ask("get_server_list") is not None:
            record(command="-d", outcome="ok")
            return 0
        time.sleep(0.01)
    record(command="-d", outcome="daemon not ready")
    return 1


# -- the daemon ------------------------------------------------------------------------------------


class Server:
    def __init__(self, uid: int, percentage: float, limits: dict[int, str]) -> None:
        self.uid = uid
        self.percentage = percentage
        self.limits = limits


class Daemon:
    def __init__(self) -> None:
        self.pipe = pipe_directory()
        self.log = os.path.join(log_directory(), "control.log")
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        self.devices = len(visible.split(",")) if visible else 1
        self.default_percentage = 100.0
        self.default_limits: dict[int, str] = {}
        self.servers: dict[int, Server] = {}
        self.running = True

    def write_log(self, text: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        with open(self.log, "a", encoding="utf-8") as sink:
            sink.write(f"[{stamp}.{int(now * 1000) % 1000:03d} Control {os.getpid():6d}] {text}\n")

    def serve(self) -> int:
        path = os.path.join(self.pipe, "control")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if os.path.exists(path):
                os.unlink(path)
            listener.bind(path)
        except OSError as error:
            self.write_log(f"Cannot bind {path}: {error}")
            return 1
        listener.listen(16)
        listener.settimeout(0.2)
        temporary = os.path.join(self.pipe, f".{PID_FILE}.tmp")
        with open(temporary, "w", encoding="utf-8") as sink:
            sink.write(f"{os.getpid()}\n")
        os.replace(temporary, os.path.join(self.pipe, PID_FILE))
        record(daemon=os.getpid())
        self.write_log(f"Starting control daemon using socket {path}")
        self.write_log(f"To connect CUDA applications, set env CUDA_MPS_PIPE_DIRECTORY={self.pipe}")
        deadline = time.monotonic() + float(os.environ.get("FAKE_MPS_LIFETIME_SECONDS", "60"))
        try:
            while self.running and time.monotonic() < deadline:
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                with connection:
                    self.answer(connection)
        finally:
            self.write_log("Shutting down")
            listener.close()
            for name in ("control", PID_FILE):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.pipe, name))
        return 0

    def answer(self, connection: socket.socket) -> None:
        connection.settimeout(5)
        try:
            with connection.makefile("r", encoding="utf-8") as requests:
                line = requests.readline()
        except OSError:
            return
        if not line:
            return
        command = json.loads(line)["command"]
        self.write_log("Accepting connection...")
        self.write_log(f"Cmd:{command}")
        try:
            reply, error = self.run(command.split()), None
        except ValueError as refused:
            reply, error = "", str(refused)
        try:
            connection.sendall(json.dumps({"reply": reply, "error": error}).encode() + b"\n")
        except OSError:
            self.write_log("UI closed before the reply")  # a client killed while it waited

    def run(self, words: list[str]) -> str:
        name, args = words[0], words[1:]
        if name == "get_server_list" and not args:
            return "\n".join(str(pid) for pid in self.servers)
        if name == "start_server" and len(args) == 2 and args[0] == "-uid":
            pid = FIRST_SERVER_PID + len(self.servers)
            self.servers[pid] = Server(
                int(args[1]), self.default_percentage, dict(self.default_limits)
            )
            self.write_log(f"Server {pid} has started")
            return ""
        if name == "quit" and not args:
            self.running = False
            return ""
        if name == "get_default_active_thread_percentage" and not args:
            return f"{self.default_percentage:.1f}"
        if name == "set_default_active_thread_percentage" and len(args) == 1:
            self.default_percentage = percentage(args[0])
            return ""
        if name == "get_default_device_pinned_mem_limit" and len(args) == 1:
            return self.default_limits.get(self.device(args[0]), "0")
        if name == "set_default_device_pinned_mem_limit" and len(args) == 2:
            self.default_limits[self.device(args[0])] = limit(args[1])
            return ""
        if name == "get_active_thread_percentage" and len(args) == 1:
            return f"{self.server(args[0]).percentage:.1f}"
        if name == "set_active_thread_percentage" and len(args) == 2:
            self.server(args[0]).percentage = percentage(args[1])
            return ""
        if name == "set_device_pinned_mem_limit" and len(args) == 3:
            self.server(args[0]).limits[self.device(args[1])] = limit(args[2])
            return ""
        raise ValueError(f"Unrecognized command or arguments: {' '.join(words)}")

    def device(self, text: str) -> int:
        if not text.isdigit() or int(text) >= self.devices:
            raise ValueError(f"Invalid device {text}: {self.devices} device(s) visible")
        return int(text)

    def server(self, text: str) -> Server:
        if not text.isdigit() or int(text) not in self.servers:
            raise ValueError(f"No server with pid {text}")
        return self.servers[int(text)]


def percentage(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 100:
        raise ValueError(f"Invalid active thread percentage {text}")
    return value


def limit(text: str) -> str:
    if not LIMIT.match(text):
        raise ValueError(f"Invalid memory limit {text}: write an integer and M or G, e.g. 4096M")
    return text


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
