"""Local runner benchmarks: what `aistack run` adds to the steps it runs; skipped unless asked.

Run with `pytest tests/benchmarks/test_local_runner.py --benchmarks -s` (or `scripts/bench`).
Each case runs a pipeline the way a user does, `aistack run FILE --simulate-gpus 4xH100-80GB
--no-live` in a subprocess on a state directory of its own, and the same work started directly
from this process, side by side:

- **chain**: 20 one-GPU steps one after another, each printing the time its code starts. The
  gap from a step's process end (its exit record) to the next step's code running is the cost
  of one step's turn; started directly with `subprocess.run`, the same gap is the interpreter's
  start-up alone. The runner's gap is also split by its own times (see `_chain_rows`). No
  target: the figures show where a step's turn goes.
- **fan-out**: 500 steps of 0.5 s, eight at a time (by the workflow's `parallelism`, or by the
  GPU slices that fit on the simulated GPUs), against a `ThreadPoolExecutor(8)` of
  `subprocess.run`. `aistack` itself takes seconds to start (it imports Hera and the Kubernetes
  models), so the wall time is reported raw and without that start-up (launch to the run's
  submission, its `created_at`); the target, under 10% overhead, is judged on the latter.
  The table also shows how long a freed slot stays empty before the next step's process
  starts (from the exit records), which is where the overhead is.

Figures are wall-clock: the work is other processes, so this process's CPU time
(`targets.Timing`) says nothing. They are printed and written to `out/benchmarks/local.json`;
docs/benchmarks.md ("Local runner") records them with the machine. A case that misses its
target fails, after its figures are printed and recorded.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aistack_flows.local import Node, RunRow, Store

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out" / "benchmarks" / "local.json"
AISTACK = str(Path(sys.executable).parent / "aistack")
GPUS = "4xH100-80GB"
EXIT_RECORD = "exit.json"
"""The wrapper's record in each pod's directory: exact process start and end (`_process`)."""

CHAIN_STEPS = 20
FAN_OUT_STEPS = 500
FAN_OUT_PARALLELISM = 8
STEP_SECONDS = 0.5
FAN_OUT_TARGET = 0.10
"""The fan-out's overhead over the same commands started directly, start-up of `aistack` aside."""

STAMP = "import time\nprint(time.time())\n"
"""The chain's step: the time its code starts, as its `outputs.result`."""
SLEEP = f"import time; time.sleep({STEP_SECONDS})"

CHAIN = """
    from hera.workflows import DAG, Workflow, script
    import aistack_flows as af

    @script(image="python:3.12-slim", annotations=af.gpus(1))
    def stamp() -> None:
        import time
        print(time.time())

    with Workflow(generate_name="chain-", entrypoint="main", labels={af.QUEUE_LABEL: "bench"}) as w:
        with DAG(name="main"):
            steps = [stamp(name=f"a{i}") for i in range(1, STEPS + 1)]
            for before, after in zip(steps, steps[1:]):
                before >> after
"""

FAN_OUT = """
    from hera.workflows import DAG, Container, Workflow
    import aistack_flows as af

    with Workflow(generate_name="fan-out-", entrypoint="main", labels={af.QUEUE_LABEL: "bench"},
                  parallelism=PARALLELISM) as w:
        sleep = Container(name="sleep", image="python:3.12-slim",
                          command=["python", "-c", SLEEP], annotations=ANNOTATIONS)
        with DAG(name="main"):
            sleep(name="work", with_sequence={"count": str(STEPS)})
"""


@dataclass(frozen=True)
class FanOut:
    """A fan-out case: what bounds its parallelism."""

    name: str
    bound: str
    """For the table: what keeps it at eight steps at a time."""
    annotations: str
    """Python for the step's annotations: `{}` (a CPU step) or an `af.gpu_slice(...)`."""
    parallelism: int | None
    """The workflow's `spec.parallelism`."""


FAN_OUTS = [
    FanOut("cpu", "spec.parallelism 8", "{}", FAN_OUT_PARALLELISM),
    # Two 32 GiB / 50% slices fit on each of the 4 simulated 80 GB GPUs: eight at a time.
    FanOut(
        "gpu-slices",
        "4 GPUs x 2 slices",
        "af.gpu_slice(memory_gib=32, compute_percent=50)",
        None,
    ),
]


@dataclass(frozen=True)
class Launched:
    """One `aistack run` as a user runs it, and what its state directory holds after."""

    launched_at: float
    """Epoch seconds just before the command was started."""
    wall_seconds: float
    """Launch to exit."""
    run: RunRow
    pods: list[Node]
    """The run's pod nodes, in creation order."""
    records: list[dict[str, Any]]
    """Each pod's exit record (`started`, `finished`: epoch seconds), in the same order."""

    @property
    def startup_seconds(self) -> float:
        """Launch to the run's submission: interpreter, imports, loading the pipeline."""
        return self.run.created_at - self.launched_at


def aistack_run(pipeline: Path, state: Path) -> Launched:
    """Run `pipeline` with `aistack run`; fails unless the run and every step succeeded."""
    launched_at, start = time.time(), time.perf_counter()
    command = [AISTACK, "run", str(pipeline), "--simulate-gpus", GPUS, "--no-live"]
    done = subprocess.run(
        [*command, "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )
    wall_seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stdout + done.stderr
    store = Store(state)
    try:
        (run,) = store.runs()
        pods = [node for node in store.nodes(run.name).values() if node.type == "Pod"]
    finally:
        store.close()
    assert run.phase == "Succeeded", run.message
    assert all(pod.phase == "Succeeded" for pod in pods)
    records = [_record_of(pod) for pod in pods]
    return Launched(launched_at, wall_seconds, run, pods, records)


def _record_of(pod: Node) -> dict[str, Any]:
    assert pod.pod is not None
    record: dict[str, Any] = json.loads((Path(pod.pod.directory) / EXIT_RECORD).read_text())
    return record


def help_seconds() -> float:
    """The median of three `aistack --help`: the command's start-up, nothing run."""
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([AISTACK, "--help"], capture_output=True, check=True, timeout=60)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def write(path: Path, source: str, **values: object) -> Path:
    """A pipeline file: `source` with the constants it names (`STEPS`, ...) set after its imports.

    The imports are `source`'s first paragraph; the constants may use them (`af.gpu_slice`).
    """
    constants = "".join(f"{name} = {value}\n" for name, value in values.items())
    body = textwrap.dedent(source)
    imports, rest = body.split("\n\n", 1)
    path.write_text(f"{imports}\n\n{constants}{rest}")
    return path


# -- the chain --------------------------------------------------------------------------------


@pytest.mark.benchmark
@pytest.mark.timeout(600)
def test_chain_of_one_gpu_steps_scheduling_overhead_per_step(tmp_path: Path) -> None:
    pipeline = write(tmp_path / "chain.py", CHAIN, STEPS=CHAIN_STEPS)
    launched = aistack_run(pipeline, tmp_path / "state")
    assert len(launched.pods) == CHAIN_STEPS
    direct = _direct_chain(tmp_path / "stamp.py", CHAIN_STEPS)

    rows = _chain_rows(launched, direct)
    print(
        f"\nchain of {CHAIN_STEPS} one-GPU steps ({_machine()}); aistack run took "
        f"{launched.wall_seconds:.2f} s, {launched.startup_seconds:.2f} s of it to submit the run"
    )
    print(f"  {'gap':<64} {'median':>8} {'p95':>8}")
    for name, values in rows.items():
        median, p95 = _median_p95(values)
        shown = f"  {name}" if name.startswith("of which") else name
        print(f"  {shown:<64} {median * 1000:6.1f} ms {p95 * 1000:6.1f} ms")
    overhead = statistics.median(rows[_RUNNER_GAP]) - statistics.median(rows[_DIRECT_GAP])
    print(f"  the runner's overhead per step (difference of the medians): {overhead * 1000:.1f} ms")
    figures: dict[str, Any] = {
        name: dict(zip(("median_seconds", "p95_seconds"), _median_p95(values), strict=True))
        for name, values in rows.items()
    }
    _record_results(
        f"chain-{CHAIN_STEPS}",
        figures
        | {
            "overhead_per_step_seconds": overhead,
            "wall_seconds": launched.wall_seconds,
            "startup_seconds": launched.startup_seconds,
        },
    )


_RUNNER_GAP = "aistack run: previous step's end -> next step's code runs"
_DIRECT_GAP = "direct subprocess.run: previous end -> next step's code runs"


def _chain_rows(
    launched: Launched, direct: Sequence[tuple[float, float]]
) -> dict[str, list[float]]:
    """Each step's gap after the one before it, by measure, in seconds.

    A step's code runs at the time it printed (`outputs.result`); its process starts and ends
    when its exit record says (the wrapper's `posix_spawn` and `waitpid`); the runner saw it end
    at its node's `finished_at` and started the next step's wrapper at that node's `started_at`.
    Directly, a step ends when `subprocess.run` returns.
    """
    pods, records = launched.pods, launched.records
    order = sorted(range(len(pods)), key=lambda i: records[i]["started"])
    pods, records = [pods[i] for i in order], [records[i] for i in order]
    code_ran = [float(pod.outputs["result"]) for pod in pods]
    seen_ended = [_known(pod.finished_at) for pod in pods]
    wrapper_started = [_known(pod.started_at) for pod in pods]
    pairs = [(i - 1, i) for i in range(1, len(pods))]
    return {
        _RUNNER_GAP: [code_ran[b] - records[a]["finished"] for a, b in pairs],
        _DIRECT_GAP: [ran - ended for (_, ended), (ran, _) in itertools.pairwise(direct)],
        "aistack run: previous end -> next process start (exit records)": [
            records[b]["started"] - records[a]["finished"] for a, b in pairs
        ],
        "of which: end -> the runner sees it (node finished_at)": [
            seen_ended[a] - records[a]["finished"] for a, b in pairs
        ],
        "of which: the runner sees it -> starts the next wrapper": [
            wrapper_started[b] - seen_ended[a] for a, b in pairs
        ],
        "of which: wrapper started -> it starts the step": [
            records[b]["started"] - wrapper_started[b] for a, b in pairs
        ],
        "submission (run created_at) -> first step's process starts": [
            records[0]["started"] - launched.run.created_at
        ],
    }


def _known(seconds: float | None) -> float:
    assert seconds is not None, "a succeeded step has its start and end"
    return seconds


def _direct_chain(script: Path, steps: int) -> list[tuple[float, float]]:
    """The chain's steps one after another with `subprocess.run`: (code ran, process ended)."""
    script.write_text(STAMP)
    times = []
    for _ in range(steps):
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=60
        )
        times.append((float(done.stdout), time.time()))
    return times


# -- the fan-out ------------------------------------------------------------------------------


@pytest.mark.benchmark
@pytest.mark.timeout(900)
def test_fan_out_of_500_steps_eight_at_a_time(tmp_path: Path) -> None:
    startup = help_seconds()
    direct_seconds, direct = _direct_fan_out(FAN_OUT_STEPS, FAN_OUT_PARALLELISM)
    ideal = FAN_OUT_STEPS / FAN_OUT_PARALLELISM * STEP_SECONDS
    print(
        f"\nfan-out of {FAN_OUT_STEPS} steps of {STEP_SECONDS} s, {FAN_OUT_PARALLELISM} at a "
        f"time ({_machine()}); sleeping alone would take {ideal:.2f} s; "
        f"`aistack --help` takes {startup:.2f} s"
    )
    print(
        _FAN_OUT_ROW.format(
            "case", "bound by", "wall", "start-up", "adjusted", "+ raw", "+ adjusted",
            "idle slot med / p95", "at once", "target",
        )
    )  # fmt: skip
    idle = _median_p95(_idle_slot_seconds(direct, FAN_OUT_PARALLELISM))
    most = _most_at_once(direct)
    print(
        _FAN_OUT_ROW.format(
            "direct", f"ThreadPoolExecutor({FAN_OUT_PARALLELISM})", f"{direct_seconds:.2f} s",
            "", "", "", "", _ms(idle), most, "",
        )
    )  # fmt: skip
    missed = []
    for case in FAN_OUTS:
        pipeline = write(
            tmp_path / f"{case.name}.py",
            FAN_OUT,
            STEPS=FAN_OUT_STEPS,
            PARALLELISM=case.parallelism,
            SLEEP=repr(SLEEP),
            ANNOTATIONS=case.annotations,
        )
        launched = aistack_run(pipeline, tmp_path / case.name)
        assert len(launched.pods) == FAN_OUT_STEPS
        most = _most_at_once(launched.records)
        assert most <= FAN_OUT_PARALLELISM
        adjusted = launched.wall_seconds - launched.startup_seconds
        raw_overhead = launched.wall_seconds / direct_seconds - 1
        overhead = adjusted / direct_seconds - 1
        idle = _median_p95(_idle_slot_seconds(launched.records, FAN_OUT_PARALLELISM))
        verdict = "met" if overhead <= FAN_OUT_TARGET else "MISSED"
        print(
            _FAN_OUT_ROW.format(
                case.name, case.bound, f"{launched.wall_seconds:.2f} s",
                f"{launched.startup_seconds:.2f} s", f"{adjusted:.2f} s", f"{raw_overhead:.1%}",
                f"{overhead:.1%}", _ms(idle), most, f"< {FAN_OUT_TARGET:.0%}: {verdict}",
            )
        )  # fmt: skip
        _record_results(
            f"fan-out-{FAN_OUT_STEPS}-{case.name}",
            {
                "wall_seconds": launched.wall_seconds,
                "startup_seconds": launched.startup_seconds,
                "adjusted_seconds": adjusted,
                "direct_seconds": direct_seconds,
                "help_seconds": startup,
                "overhead_raw": raw_overhead,
                "overhead_adjusted": overhead,
                "idle_slot_median_seconds": idle[0],
                "idle_slot_p95_seconds": idle[1],
                "target_overhead": FAN_OUT_TARGET,
                "most_at_once": most,
            },
        )
        if verdict == "MISSED":
            missed.append(f"{case.name}: overhead {overhead:.1%}, target {FAN_OUT_TARGET:.0%}")
    assert not missed, "missed: " + "; ".join(missed)


_FAN_OUT_ROW = "  {:<10} {:<21} {:>8} {:>8} {:>8} {:>7} {:>10} {:>19} {:>7}  {}"


def _direct_fan_out(steps: int, parallelism: int) -> tuple[float, list[dict[str, float]]]:
    """The fan-out's commands run directly, `parallelism` at a time: seconds, and each's times.

    Each command's times are taken as the wrapper takes them: just before the process is
    started, and when waiting for it returns.
    """
    command = [sys.executable, "-c", SLEEP]

    def run(_: int) -> dict[str, float]:
        started = time.time()
        subprocess.run(command, check=True, timeout=60)
        return {"started": started, "finished": time.time()}

    start = time.perf_counter()
    with ThreadPoolExecutor(parallelism) as pool:
        records = list(pool.map(run, range(steps)))
    return time.perf_counter() - start, records


def _idle_slot_seconds(records: Sequence[dict[str, Any]], parallelism: int) -> list[float]:
    """How long each freed slot stayed empty: from an end to the next process start.

    With at most `parallelism` processes at a time, the n-th start (in time order) waits for
    the (n - parallelism)-th end; the first `parallelism` starts wait for nothing.
    """
    starts = sorted(r["started"] for r in records)
    ends = sorted(r["finished"] for r in records)
    return [starts[n] - ends[n - parallelism] for n in range(parallelism, len(starts))]


def _most_at_once(records: Sequence[dict[str, Any]]) -> int:
    """The most steps whose processes ran at the same time."""
    # An end (-1) sorts before a start (+1) at the same instant.
    changes = sorted([(r["started"], 1) for r in records] + [(r["finished"], -1) for r in records])
    running = most = 0
    for _, change in changes:
        running += change
        most = max(most, running)
    return most


# -- reporting --------------------------------------------------------------------------------


def _ms(median_p95: tuple[float, float]) -> str:
    return f"{median_p95[0] * 1000:.1f} / {median_p95[1] * 1000:.1f} ms"


def _median_p95(values: Sequence[float]) -> tuple[float, float]:
    if len(values) == 1:
        return values[0], values[0]
    return statistics.median(values), statistics.quantiles(values, n=20, method="inclusive")[18]


def _machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{platform.machine()}, {os.cpu_count()} cores, load {load}"


def _record_results(key: str, figures: dict[str, Any]) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results[key] = figures | {
        "python": platform.python_version(),
        "machine": _machine(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    OUT.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
