"""How GPU slices are enforced on a real NVIDIA H100 or H200: MPS caps, their cost, their limits.

Run it through `scripts/gpu-sharing-check`, on a machine with the NVIDIA driver, CUDA and
PyTorch (no Kubernetes), as root; the wrapper stops every MPS daemon when it ends, whatever
happens. It prints one line per check (PASS, FAIL, INFO or SKIP), then indented details:

- MPS: can MPS run here at all: the control binary, a daemon in a private pipe directory, a
  CUDA client that connects through it.
- 1. NVML discovery, by the product's `scheduler_service.gpu_discovery.discover()`.
- 2. A 10 GiB memory cap: 12 GiB must fail with CUDA's out-of-memory error, 9 GiB must fit;
  what `torch.cuda.mem_get_info()` reports inside the cap.
- 2b. Whose cap wins when a client's environment asks for more than the daemon's defaults
  (decides what `daemon_defaults` must be).
- 3. Two clients at 30 % and 70 % compute, the same matmul loop at once: their throughput ratio
  against 30:70 (target: within 5 points).
- 4. The cost of enforcement: a launch-bound loop of tiny kernels and a large matmul, in MPS at
  100 % against no MPS (target: under 1 % each).
- 5. As many concurrent slices as MPS allows (48 per GPU on Volta and later per NVIDIA), each a
  small inference loop: how many ran, and the memory each process's CUDA context takes.

Where MPS cannot run it says why and still measures what it can: 1, and 3 and 4 without MPS as
a baseline. It never changes the GPU's compute mode or MIG mode.

The daemons are started and stopped by the product's code (`MpsDaemons`), loaded from
scheduler_service/gpu_sharing.py by its path: it needs only the standard library, and loading it
alone spares the machine's python3 the project's dependencies. Every measurement runs in a child
process (`gpu_sharing_check.py client KIND OPTIONS`), because MPS takes a process's caps from
its environment when it creates its CUDA context.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import IO, Any

REPOSITORY = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
GIB = 1024 * MIB
MATMUL_SIZE = 8192
STARTUP_SECONDS = 300.0
"""How long a client may take to import torch and create its context (48 start at once)."""

# -- clients: child processes that import torch ----------------------------------------------------


def run_client(kind: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """One measurement in this process; what a client prints after "RESULT "."""
    import torch  # noqa: PLC0415 - only clients need torch; the parent runs without it

    torch.cuda.init()
    properties = torch.cuda.get_device_properties(0)
    free, total = torch.cuda.mem_get_info()
    seen = {
        "device": properties.name,
        "sms": properties.multi_processor_count,
        "free_mib": free // MIB,
        "total_mib": total // MIB,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "pid": os.getpid(),
    }
    if kind == "hello":
        torch.ones(1, device="cuda").sum().item()
        return seen
    if kind == "memory":
        tries = [allocate(torch, gib * GIB) for gib in options["tries_gib"]]
        return {**seen, "tries": tries, **allocate_in_steps(torch, options)}
    if kind == "caps":
        steps = allocate_in_steps(torch, options)
        return {**seen, **steps, **matmul_loop(torch, options, ready=None)}
    if kind == "matmul":
        return {**seen, **matmul_loop(torch, options, ready=sys.stdin)}
    if kind == "launch":
        return {**seen, **launch_loop(torch, options)}
    if kind == "inference":
        return {**seen, **inference_loop(torch)}
    raise ValueError(f"unknown client kind {kind!r}")


def allocate(torch: Any, size: int) -> dict[str, Any]:
    """Allocate `size` bytes on the device and free them: whether it worked, and CUDA's error."""
    try:
        block = torch.empty(size, dtype=torch.uint8, device="cuda")
    except RuntimeError as error:  # torch.OutOfMemoryError is a RuntimeError
        torch.cuda.empty_cache()
        return {"bytes": size, "ok": False, "error": first_line(error)}
    del block
    torch.cuda.empty_cache()
    return {"bytes": size, "ok": True, "error": ""}


def allocate_in_steps(torch: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """Allocate `step_mib` blocks until CUDA refuses or `bound_mib` is reached: the real cap."""
    step, bound = int(options["step_mib"]), int(options["bound_mib"])
    blocks: list[Any] = []
    error = ""
    while len(blocks) * step + step <= bound:
        try:
            blocks.append(torch.empty(step * MIB, dtype=torch.uint8, device="cuda"))
        except RuntimeError as refused:
            error = first_line(refused)
            break
    allocated = len(blocks) * step
    blocks.clear()
    torch.cuda.empty_cache()
    return {"allocated_mib": allocated, "step_error": error}


def matmul_loop(torch: Any, options: Mapping[str, Any], ready: IO[str] | None) -> dict[str, Any]:
    """Square bf16 matmuls for `seconds`; with `ready`, say READY and wait for its "go" line."""
    size, seconds = int(options.get("size", MATMUL_SIZE)), float(options["seconds"])
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    c = torch.empty_like(a)
    for _ in range(3):
        torch.matmul(a, b, out=c)
    torch.cuda.synchronize()
    if ready is not None:
        print("READY", flush=True)
        ready.readline()
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            torch.matmul(a, b, out=c)
        torch.cuda.synchronize()
        count += 10
    elapsed = time.perf_counter() - start
    return {
        "iterations": count,
        "seconds": elapsed,
        "per_second": count / elapsed,
        "tflops": 2 * size**3 * count / elapsed / 1e12,
    }


def launch_loop(torch: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """Tiny kernels back to back: microseconds per launch, the median of `repeats` runs."""
    launches, repeats = int(options["launches"]), int(options["repeats"])
    x = torch.zeros(1, device="cuda")
    for _ in range(1000):
        x.add_(1)
    torch.cuda.synchronize()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(launches):
            x.add_(1)
        torch.cuda.synchronize()
        runs.append((time.perf_counter() - start) / launches * 1e6)
    return {"microseconds": statistics.median(runs), "runs": runs}


def inference_loop(torch: Any) -> dict[str, Any]:
    """A small MLP on a small batch; READY once warm, then on until stdin closes."""
    model = (
        torch.nn.Sequential(
            torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 1024)
        )
        .cuda()
        .half()
    )
    batch = torch.randn(64, 1024, device="cuda", dtype=torch.half)
    with torch.inference_mode():
        for _ in range(5):
            model(batch)
        torch.cuda.synchronize()
        print("READY", flush=True)
        stop = threading.Event()

        def wait_for_eof() -> None:
            sys.stdin.read()
            stop.set()

        threading.Thread(target=wait_for_eof, daemon=True).start()
        count = 0
        while not stop.is_set():
            model(batch)
            torch.cuda.synchronize()
            count += 1
            time.sleep(0.005)
    return {"iterations": count}


def first_line(error: BaseException) -> str:
    """The error's type and the first line of its message: what a report line can hold."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def client_main(kind: str, options_json: str) -> int:
    """A client's whole life: one RESULT line, with "error" when it failed."""
    try:
        result = run_client(kind, json.loads(options_json))
    except Exception as error:
        print("RESULT " + json.dumps({"error": first_line(error)}), flush=True)
        return 1
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- the parent: starts clients, reads their results --------------------------------------------


class Client:
    """A client process; its output goes to a file that READY and RESULT are read from."""

    running: list[Client] = []  # noqa: RUF012 - every client alive, for the final cleanup

    def __init__(self, kind: str, options: Mapping[str, Any], env: Mapping[str, str], log: Path):
        """Start it; it runs until its RESULT (or, for `inference`, until `finish`)."""
        self.kind = kind
        self.log = log
        with log.open("w") as sink:
            self.process = subprocess.Popen(
                [sys.executable, __file__, "client", kind, json.dumps(options)],
                stdin=subprocess.PIPE,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=dict(env),
                text=True,
            )
        Client.running.append(self)

    def output(self) -> list[str]:
        """What it printed so far, stdout and stderr interleaved."""
        return self.log.read_text(errors="replace").splitlines()

    def ready(self) -> bool:
        """It said READY: warmed up and waiting (`matmul`) or looping (`inference`)."""
        return "READY" in self.output()

    def wait_ready(self, timeout: float) -> bool:
        """READY said within `timeout`; False when it ended or took too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.1)
        return self.ready()

    def go(self) -> None:
        """Start a waiting `matmul` client's timed loop."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def finish(self, timeout: float) -> dict[str, Any]:
        """Close its stdin, wait for its RESULT; a client that hangs is killed."""
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self in Client.running:
            Client.running.remove(self)
        for line in reversed(self.output()):
            if line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
                return result
        tail = " | ".join(self.output()[-3:]) or "no output"
        return {"error": f"exit {self.process.returncode} without a result: {tail}"}

    @classmethod
    def kill_all(cls) -> None:
        """Kill every client still alive: the cleanup when the checks end or are stopped."""
        for client in list(cls.running):
            with contextlib.suppress(OSError):
                client.process.kill()
            client.process.wait()
        cls.running.clear()


@dataclass
class Report:
    """One line per check, details indented under it; counts what passed and failed."""

    counts: dict[str, int] = field(default_factory=dict)

    def line(self, label: str, status: str, text: str, details: Iterable[str] = ()) -> None:
        """Print one check's line and its details."""
        self.counts[status] = self.counts.get(status, 0) + 1
        print(f"{label:<4} {status:<4}  {text}", flush=True)
        for detail in details:
            print(f"{'':<11}{detail}", flush=True)

    def summary(self) -> str:
        """E.g. "2 FAIL, 1 INFO, 5 PASS"."""
        return ", ".join(f"{count} {status}" for status, count in sorted(self.counts.items()))


@dataclass
class Machine:
    """What the checks share: the GPU under test, the daemons, where clients write."""

    args: argparse.Namespace
    work: Path
    mps: ModuleType
    daemons: Any  # MpsDaemons, from the module loaded by path
    uuid: str
    index: int
    total_mib: int
    report: Report
    clients: int = 0

    def mps_env(self, memory_mib: int, compute_percent: int) -> dict[str, str]:
        """A slice's environment, from the product's `client_environment`."""
        client = self.daemons.client_environment(self.uuid, memory_mib, compute_percent)
        return {**plain_environment(), **client}

    def plain_env(self) -> dict[str, str]:
        """The same GPU without MPS (see `without_daemon`)."""
        # An empty pipe directory: the client finds no daemon there, not even one that may run in
        # the default /tmp/nvidia-mps, so it runs without MPS for sure.
        empty = self.work / "no-mps"
        empty.mkdir(exist_ok=True)
        return {
            **plain_environment(),
            "CUDA_VISIBLE_DEVICES": self.uuid,
            "CUDA_MPS_PIPE_DIRECTORY": str(empty),
        }

    def start(self, kind: str, options: Mapping[str, Any], env: Mapping[str, str]) -> Client:
        """Start a client; its log is clients/NNN-KIND.log in the work directory."""
        self.clients += 1
        log = self.work / "clients" / f"{self.clients:03d}-{kind}.log"
        log.parent.mkdir(exist_ok=True)
        return Client(kind, options, env, log)

    def measure(
        self, kind: str, options: Mapping[str, Any], env: Mapping[str, str], timeout: float
    ) -> dict[str, Any]:
        """Run a client to its end: its result, or {"error": ...}."""
        return self.start(kind, options, env).finish(timeout)

    def without_daemon(self) -> None:
        """Stop the daemon before a client without MPS runs.

        In the Exclusive_Process compute mode an MPS server would keep that client off the GPU;
        in any mode, a baseline should not share the GPU with it.
        """
        self.daemons.stop_all()

    def fresh_daemon(self, share: Any) -> tuple[Any, ...]:
        """A new daemon with these defaults: a running server would keep the old ones."""
        self.daemons.stop_all()
        return tuple(self.daemons.ensure({self.uuid: share}))

    def server_log(self) -> str:
        """The last lines of the daemon's logs, for a failure's details."""
        lines: list[str] = []
        for name in ("control.log", "server.log"):
            path = self.daemons.log_directory(self.uuid) / name
            with contextlib.suppress(OSError):
                lines += [f"{name}: {line}" for line in path.read_text().splitlines()[-3:]]
        return " | ".join(lines) or "no MPS log"


def plain_environment() -> dict[str, str]:
    """This process's environment without any GPU or MPS choice of its own."""
    return {
        **{
            name: value
            for name, value in os.environ.items()
            if not name.startswith("CUDA_MPS_") and name != "CUDA_VISIBLE_DEVICES"
        },
        "PYTHONUNBUFFERED": "1",
    }


def load_mps() -> ModuleType:
    """scheduler_service/gpu_sharing.py, without importing the package around it."""
    path = REPOSITORY / "scheduler_service" / "gpu_sharing.py"
    spec = importlib.util.spec_from_file_location("aistack_gpu_sharing", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while they are built
    spec.loader.exec_module(module)
    return module


def nvml_reader() -> Any:
    """`pynvml`, initialised, or None where it is missing (the checks say so)."""
    try:
        import pynvml  # noqa: PLC0415 - optional: discovery says so itself when missing

        pynvml.nvmlInit()
    except Exception:
        return None
    return pynvml


def timed(report: Report, label: str) -> Callable[[Callable[[], None]], None]:
    """Run a check; an unexpected error is its FAIL line, and the next check still runs."""

    def run(check: Callable[[], None]) -> None:
        start = time.monotonic()
        try:
            check()
        except Exception as error:
            report.line(label, "FAIL", f"the check itself failed: {first_line(error)}")
        print(f"{'':<11}({time.monotonic() - start:.0f} s)", flush=True)

    return run


# -- the checks ----------------------------------------------------------------------------------


def check_mps_runs(machine: Machine, mig: bool, nvml: Any) -> bool:
    """MPS: the control binary, a daemon in a private directory, a client through it."""
    reason = machine.daemons.available()
    label = "MPS"
    if reason:
        machine.report.line(label, "FAIL", f"MPS cannot run here: {reason}")
        return False
    if mig:
        machine.report.line(
            label, "SKIP", f"MIG is on for GPU {machine.index}; it stays on, and MPS is not tried"
        )
        return False
    details = [f"compute mode: {compute_mode(nvml, machine.index)} (not changed)"]
    if Path("/tmp/nvidia-mps/control").exists():
        details.append("a daemon also listens in the default /tmp/nvidia-mps; it is left alone")
    try:
        (daemon,) = machine.fresh_daemon(machine.mps.Share(machine.total_mib, 100))
    except machine.mps.MpsError as error:
        machine.report.line(label, "FAIL", f"no daemon: {error}", tuple(details))
        return False
    hello = machine.measure(
        "hello", {}, machine.mps_env(machine.total_mib, 100), timeout=STARTUP_SECONDS
    )
    (again,) = machine.daemons.ensure({machine.uuid: machine.mps.Share(machine.total_mib, 100)})
    where = f"daemon pid {daemon.pid} in {machine.daemons.pipe_directory(machine.uuid)}"
    if "error" in hello:
        details.append(machine.server_log())
        machine.report.line(
            label, "FAIL", f"{where}, but a CUDA client failed: {hello['error']}", tuple(details)
        )
        return False
    if not again.servers:
        machine.report.line(
            label,
            "FAIL",
            f"{where}; a CUDA client ran, but no MPS server started: it did not go through MPS",
            tuple(details),
        )
        return False
    machine.report.line(
        label,
        "PASS",
        f"can run here: {where}; a CUDA client connected (MPS server pid {again.servers[0]})",
        tuple(details),
    )
    return True


def compute_mode(nvml: Any, index: int) -> str:
    """The GPU's compute mode as nvidia-smi names it; read, never set."""
    if nvml is None:
        return "unknown (no NVML)"
    try:
        mode = nvml.nvmlDeviceGetComputeMode(nvml.nvmlDeviceGetHandleByIndex(index))
    except Exception as error:
        return f"unknown ({error})"
    names = {0: "Default", 1: "Exclusive_Thread", 2: "Prohibited", 3: "Exclusive_Process"}
    return names.get(int(mode), str(mode))


def check_memory_cap(machine: Machine) -> None:
    """2. A client capped at 10 GiB: 12 GiB refused as out of memory, 9 GiB allocated."""
    machine.fresh_daemon(machine.mps.Share(machine.total_mib, 100))
    env = machine.mps_env(10 * 1024, 100)
    result = machine.measure(
        "memory",
        {"tries_gib": [12, 9], "step_mib": 256, "bound_mib": 14 * 1024},
        env,
        timeout=STARTUP_SECONDS,
    )
    cap = f"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT={env['CUDA_MPS_PINNED_DEVICE_MEM_LIMIT']}"
    if "error" in result:
        machine.report.line("2.", "FAIL", f"memory cap 10 GiB ({cap}): {result['error']}")
        return
    twelve, nine = result["tries"]
    refused = not twelve["ok"] and "out of memory" in twelve["error"].lower()
    verdict = "PASS" if refused and nine["ok"] else "FAIL"
    steps = result["allocated_mib"]
    after = f"refused: {result['step_error']}" if result["step_error"] else "reached the bound"
    machine.report.line(
        "2.",
        verdict,
        f"memory cap 10 GiB ({cap}): 12 GiB "
        + (f"refused ({twelve['error']})" if not twelve["ok"] else "ALLOCATED")
        + "; 9 GiB "
        + ("allocated" if nine["ok"] else f"refused ({nine['error']})"),
        (
            f"in 256 MiB steps: {steps} MiB allocated, then {after}",
            f"torch.cuda.mem_get_info() inside the cap: free {result['free_mib']} MiB of "
            f"{result['total_mib']} MiB",
        ),
    )


def check_defaults_against_env(machine: Machine) -> None:
    """Does a client's env raise its caps above the daemon's defaults, or only lower them?"""
    share = machine.mps.Share
    seconds = machine.args.short_seconds
    options = {"step_mib": 256, "bound_mib": 12 * 1024, "seconds": seconds}
    runs = {
        "defaults 4 GiB/30 %, env 8 GiB/70 %": (share(4096, 30), 8192, 70),
        "defaults none, env 8 GiB/30 %": (share(machine.total_mib, 100), 8192, 30),
        "defaults none, env 8 GiB/70 %": (share(machine.total_mib, 100), 8192, 70),
    }
    results: dict[str, dict[str, Any]] = {}
    for name, (defaults, memory_mib, percent) in runs.items():
        machine.fresh_daemon(defaults)
        results[name] = machine.measure(
            "caps", options, machine.mps_env(memory_mib, percent), timeout=STARTUP_SECONDS
        )
    failed = [f"{name}: {result['error']}" for name, result in results.items() if "error" in result]
    if failed:
        machine.report.line("2b.", "FAIL", "defaults against env: " + "; ".join(failed))
        return
    mixed, low, high = results.values()
    memory = (
        "the daemon's default wins"
        if mixed["allocated_mib"] <= 4096
        else "the client's env raises it"
    )
    nearer_low = abs(mixed["tflops"] - low["tflops"]) < abs(mixed["tflops"] - high["tflops"])
    compute = "the daemon's default wins" if nearer_low else "the client's env raises it"
    agrees = memory == compute == "the daemon's default wins"
    machine.report.line(
        "2b.",
        "INFO",
        f"a client asking for more than the daemon's defaults: memory: {memory}; compute: "
        f"{compute}"
        + (
            " (as daemon_defaults assumes: defaults at the largest slice)"
            if agrees
            else " (daemon_defaults could be tighter where the env wins)"
        ),
        tuple(
            f"{name}: {result['allocated_mib']} MiB allocatable, {result['tflops']:.0f} TFLOP/s, "
            f"{result['sms']} SMs reported"
            for name, result in results.items()
        ),
    )


def check_split(machine: Machine, mps: bool) -> None:
    """3. Clients at 30 % and 70 % running the same matmul loop at once."""
    seconds = machine.args.seconds
    options = {"seconds": seconds, "size": MATMUL_SIZE}
    if mps:
        slices = [machine.mps.Share(16384, 30), machine.mps.Share(16384, 70)]
        machine.fresh_daemon(machine.mps.daemon_defaults(slices))
        envs = [machine.mps_env(16384, 30), machine.mps_env(16384, 70)]
    else:
        machine.without_daemon()
        envs = [machine.plain_env(), machine.plain_env()]
    clients = [machine.start("matmul", options, env) for env in envs]
    if not all(client.wait_ready(STARTUP_SECONDS) for client in clients):
        results = [client.finish(30) for client in clients]
        errors = "; ".join(result.get("error", "not ready") for result in results)
        machine.report.line("3.", "FAIL", f"the two matmul clients did not start: {errors}")
        return
    for client in clients:
        client.go()
    low, high = (client.finish(seconds + 120) for client in clients)
    if "error" in low or "error" in high:
        machine.report.line("3.", "FAIL", f"matmul: {low.get('error')}; {high.get('error')}")
        return
    share = 100 * low["per_second"] / (low["per_second"] + high["per_second"])
    rates = (
        f"{low['per_second']:.1f} and {high['per_second']:.1f} matmuls/s "
        f"({low['tflops']:.0f} + {high['tflops']:.0f} TFLOP/s), bf16 {MATMUL_SIZE}^3"
    )
    if not mps:
        machine.report.line(
            "3.",
            "INFO",
            f"without MPS (time-slicing, no caps: the baseline): two equal processes for "
            f"{seconds:g} s got {share:.1f} % : {100 - share:.1f} % of the matmuls",
            (rates,),
        )
        return
    machine.report.line(
        "3.",
        "PASS" if abs(share - 30) <= 5 else "FAIL",
        f"30 % and 70 % clients at once for {seconds:g} s: {share:.1f} % : {100 - share:.1f} % "
        "of the matmuls (target 30 : 70 within 5 points)",
        (rates, f"each client reported {low['sms']} SMs"),
    )


def check_overhead(machine: Machine, mps: bool) -> None:
    """4. Tiny kernels and a large matmul, in MPS at 100 % against no MPS."""
    workloads = {
        "4a.": ("launch", {"launches": 20000, "repeats": 5}),
        "4b.": ("matmul", {"seconds": machine.args.short_seconds, "size": MATMUL_SIZE}),
    }
    for label, (kind, options) in workloads.items():
        without: list[dict[str, Any]] = []
        inside: list[dict[str, Any]] = []
        # Alternate, so that clocks warming up or a neighbour's load hit both sides alike.
        for _ in range(machine.args.repeats):
            machine.without_daemon()
            without.append(machine.measure(kind, options, machine.plain_env(), STARTUP_SECONDS))
            if mps:
                machine.fresh_daemon(machine.mps.Share(machine.total_mib, 100))
                env = machine.mps_env(machine.total_mib, 100)
                inside.append(machine.measure(kind, options, env, STARTUP_SECONDS))
        errors = [result["error"] for result in without + inside if "error" in result]
        if errors:
            machine.report.line(label, "FAIL", f"{kind}: {errors[0]}")
            continue
        key = "microseconds" if kind == "launch" else "tflops"
        base = statistics.median(result[key] for result in without)
        runs = f"{machine.args.repeats} runs each, medians"
        if kind == "launch":
            what = f"launch-bound loop ({options['launches']} tiny kernels)"
            shown = f"{base:.2f} µs per kernel without MPS"
        else:
            what = f"large matmul (bf16 {MATMUL_SIZE}^3 for {options['seconds']:g} s)"
            shown = f"{base:.0f} TFLOP/s without MPS"
        if not mps:
            machine.report.line(label, "INFO", f"{what}: {shown} (no MPS to compare)", (runs,))
            continue
        value = statistics.median(result[key] for result in inside)
        # Overhead as time lost: more microseconds per launch, or fewer TFLOP/s.
        overhead = 100 * (value / base - 1 if kind == "launch" else base / value - 1)
        unit = "µs per kernel" if kind == "launch" else "TFLOP/s"
        machine.report.line(
            label,
            "PASS" if overhead < 1 else "FAIL",
            f"{what}: {value:.2f} {unit} in MPS at 100 % against {base:.2f} without: "
            f"{overhead:+.2f} % (target < 1 %)",
            (runs,),
        )


def check_max_clients(machine: Machine, nvml: Any) -> None:
    """5. Start clients in batches until one fails or `--max-clients` run; memory of each."""
    slice_share = machine.mps.Share(2048, 5)
    machine.fresh_daemon(machine.mps.daemon_defaults([slice_share]))
    env = machine.mps_env(slice_share.memory_mib, slice_share.compute_percent)
    used_before = device_used_mib(nvml, machine.index)
    running: list[Client] = []
    failure = ""
    while len(running) < machine.args.max_clients and not failure:
        size = min(machine.args.batch, machine.args.max_clients - len(running))
        batch = [machine.start("inference", {}, env) for _ in range(size)]
        for client in batch:
            if client.wait_ready(STARTUP_SECONDS):
                running.append(client)
                continue
            result = client.finish(30)
            failure = failure or f"client {len(running) + 1} failed: {result.get('error')}"
    used_after = device_used_mib(nvml, machine.index)
    per_process = process_memory_mib(nvml, machine.index, {c.process.pid for c in running})
    finished = [client.finish(60) for client in running]
    broken = [result["error"] for result in finished if "error" in result]
    count = len(running)
    details = [failure or f"no client failed up to --max-clients {machine.args.max_clients}"]
    if per_process:
        details.append(
            f"memory per client process (NVML, per pid; CUDA context + a small MLP): median "
            f"{statistics.median(per_process):.0f} MiB (min {min(per_process)}, max "
            f"{max(per_process)}) for {len(per_process)} of {count} processes"
        )
    else:
        details.append("NVML gave no per-process memory for the clients")
    if used_before is not None and used_after is not None and count:
        details.append(
            f"device memory used per client: {(used_after - used_before) / count:.0f} MiB "
            f"({used_before} MiB before, {used_after} MiB with {count} clients)"
        )
    if broken:
        details.append(f"{len(broken)} clients failed while running: {broken[0]}")
    machine.report.line(
        "5.",
        # 48 is NVIDIA's figure; where none failed up to the bound, the bound is what was shown.
        "PASS" if (count >= 48 or not failure) and not broken else "FAIL",
        f"{count} concurrent MPS clients ran a small inference loop, each capped at "
        f"{slice_share.memory_mib} MiB and {slice_share.compute_percent} % "
        "(NVIDIA documents 48 per GPU on Volta and later)",
        tuple(details),
    )


def device_used_mib(nvml: Any, index: int) -> int | None:
    """The GPU's used memory as NVML reports it, or None."""
    if nvml is None:
        return None
    try:
        return int(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index)).used) // MIB
    except Exception:
        return None


def process_memory_mib(nvml: Any, index: int, pids: set[int]) -> list[int]:
    """NVML's used memory of these pids, from both the compute and the MPS process lists."""
    if nvml is None:
        return []
    found: dict[int, int] = {}
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    for listing in (
        "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetMPSComputeRunningProcesses",
    ):
        with contextlib.suppress(Exception):
            for process in getattr(nvml, listing)(handle):
                used = process.usedGpuMemory
                if process.pid in pids and used is not None:
                    found[process.pid] = int(used) // MIB
    return sorted(found.values())


# -- main ----------------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line; the defaults take about five minutes on an H100."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="a short directory for daemons and client logs")
    parser.add_argument("--gpu", type=int, default=0, help="the NVML index of the GPU to test")
    parser.add_argument("--seconds", type=float, default=20.0, help="check 3's duration")
    parser.add_argument("--short-seconds", type=float, default=5.0, help="2b and 4b runs")
    parser.add_argument("--repeats", type=int, default=3, help="check 4's runs per side")
    parser.add_argument("--max-clients", type=int, default=64, help="check 5's upper bound")
    parser.add_argument("--batch", type=int, default=8, help="check 5's clients started at once")
    return parser.parse_args(argv)


@contextlib.contextmanager
def terminated_as_exit() -> Iterator[None]:
    """SIGTERM (a timeout, the wrapper) unwinds like Ctrl-C, so the cleanup below runs."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str]) -> int:
    """All checks; 1 if any failed. Daemons and clients are stopped however it ends."""
    args = parse(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="gsc.", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"gpu-sharing-check {time.strftime('%Y-%m-%d %H:%M:%S %z')} on {platform.node()}: "
        f"{platform.platform()}, python {platform.python_version()}, uid {os.geteuid()}",
        flush=True,
    )
    report = Report()
    sys.path.insert(0, str(REPOSITORY))
    from scheduler_service.gpu_discovery import discover  # noqa: PLC0415 - after the path

    mps = load_mps()
    found = discover()
    gpu = next((g for g in found.gpus if g.index == args.gpu), None)
    nvml = nvml_reader()
    daemons = mps.MpsDaemons(work / "mps", timeout_seconds=30.0)
    with terminated_as_exit():
        try:
            if gpu is None:
                report.line("MPS", "SKIP", f"no GPU {args.gpu} to try MPS on")
                report.line("1.", "FAIL", f"NVML discovery: no GPU {args.gpu}", found.describe())
            else:
                run_checks(
                    Machine(
                        args=args,
                        work=work,
                        mps=mps,
                        daemons=daemons,
                        uuid=gpu.uuid,
                        index=gpu.index,
                        total_mib=gpu.memory_mib,
                        report=report,
                    ),
                    found,
                    mig=gpu.mig_enabled,
                    nvml=nvml,
                )
        except SystemExit:
            report.line("end", "FAIL", "stopped by a signal before the checks were done")
            raise
        finally:
            Client.kill_all()
            try:
                daemons.stop_all()
            except mps.MpsError as error:
                report.line("end", "FAIL", f"a daemon did not stop: {error}")
    print(f"done: {report.summary()}", flush=True)
    return 1 if report.counts.get("FAIL") else 0


def run_checks(machine: Machine, found: Any, *, mig: bool, nvml: Any) -> None:
    """The checks in order; those that need MPS are skipped, with why, where it cannot run."""
    report = machine.report
    mps_runs = False

    def mps_check() -> None:
        nonlocal mps_runs
        mps_runs = check_mps_runs(machine, mig, nvml)

    timed(report, "MPS")(mps_check)
    timed(report, "1.")(lambda: check_discovery(machine, found))
    if mps_runs:
        timed(report, "2.")(lambda: check_memory_cap(machine))
        timed(report, "2b.")(lambda: check_defaults_against_env(machine))
    else:
        report.line("2.", "SKIP", "memory cap: needs MPS (see the MPS line)")
    timed(report, "3.")(lambda: check_split(machine, mps_runs))
    timed(report, "4.")(lambda: check_overhead(machine, mps_runs))
    if mps_runs:
        timed(report, "5.")(lambda: check_max_clients(machine, nvml))
    else:
        report.line("5.", "SKIP", "concurrent MPS clients: needs MPS (see the MPS line)")


def check_discovery(machine: Machine, found: Any) -> None:
    """1. What `discover()` read from NVML, and what PyTorch sees of the GPU."""
    machine.without_daemon()
    hello = machine.measure("hello", {}, machine.plain_env(), timeout=STARTUP_SECONDS)
    seen = (
        f"torch {hello['torch']} (CUDA {hello['cuda']}) sees {hello['device']}, "
        f"{hello['sms']} SMs, {hello['total_mib']} MiB"
        if "error" not in hello
        else f"PyTorch cannot use the GPU: {hello['error']}"
    )
    good = found.source == "nvml" and "error" not in hello
    machine.report.line(
        "1.",
        "PASS" if good else "FAIL",
        f"NVML discovery: {found.describe()[0]}",
        (*found.describe()[1:], seen),
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"] and len(sys.argv) == 4:
        sys.exit(client_main(sys.argv[2], sys.argv[3]))
    sys.exit(main(sys.argv[1:]))
