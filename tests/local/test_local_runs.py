"""The local runner end to end: `aistack run` as a user runs it, real processes, simulated GPUs.

Every test runs the `aistack` command in a subprocess on a state directory of its own, and reads
what happened back through the commands a user has (`status`, `logs`, `explain --local`) or the
state database itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aistack_flows.local import PodRow, Store

ROOT = Path(__file__).parents[2]
AISTACK = str(Path(sys.executable).parent / "aistack")
GPUS = ["--simulate-gpus", "4xH100-80GB"]


def aistack(
    *args: str, state: Path, timeout: float = 90, check: int | None = 0
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(  # noqa: PLW1510 (the status is checked below, with the output)
        [AISTACK, *args, "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if check is not None:
        assert done.returncode == check, done.stdout + done.stderr
    return done


def start(*args: str, state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [AISTACK, *args, "--state", str(state), "--no-live"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )


def wait_for(what: str, ready: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while _OPENED:
        _OPENED.pop().close()


_OPENED: list[Store] = []


def opened(state: Path) -> Store:
    """A store closed when the test ends."""
    store = Store(state)
    _OPENED.append(store)
    return store


def pods(state: Path) -> list[PodRow]:
    store = Store(state)
    try:
        return store.pods()
    finally:
        store.close()


def only_run(state: Path) -> str:
    store = Store(state)
    try:
        (run,) = store.runs()
        return run.name
    finally:
        store.close()


def pipeline(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_the_example_pipeline_runs_here_and_the_commands_report_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = aistack("run", "examples/pipeline.py", *GPUS, "--no-live", state=state, timeout=120)
    assert "image python:3.12-slim is not used" in done.stdout
    run = only_run(state)
    status = json.loads(aistack("status", run, "--local", "-o", "json", state=state).stdout)
    assert status["phase"] == "Succeeded"
    assert [s["step"] for s in status["steps"]] == ["build", "train", "evaluate", "deploy"]
    assert all(s["phase"] == "Succeeded" for s in status["steps"])
    assert "mean squared error" in aistack("logs", run, "evaluate", "--local", state=state).stdout
    assert "serving: f(2.0)" in aistack("logs", run, "deploy", "--local", state=state).stdout
    explained = aistack("explain", run, "--local", state=state).stdout
    assert "queue research" in explained
    assert "started on GPU" in explained
    assert "(simulated)" in explained
    listed = aistack("list", "--local", state=state).stdout
    assert run in listed
    assert "Succeeded" in listed
    release = list((state / "runs" / run / "artifacts").rglob("server.json"))
    assert len(release) == 1


BORROWER = """
    from hera.workflows import DAG, Workflow, script
    from hera.workflows import models as m
    import aistack_flows as af

    @script(
        image="python:3.12-slim",
        annotations=af.gpus(1, checkpoint="/ckpt"),
        volume_mounts=[m.VolumeMount(name="ckpt", mount_path="/ckpt")],
    )
    def work(shard: int, steps: int = 60) -> None:
        import os, signal, time
        from pathlib import Path
        state = Path(os.environ["AISTACK_CHECKPOINT_DIR"]) / "progress"
        state.parent.mkdir(parents=True, exist_ok=True)
        done = int(state.read_text()) if state.exists() else 0
        print(f"attempt {os.environ['AISTACK_ATTEMPT']} starts at {done}", flush=True)
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        while done < steps:
            if stop:
                state.write_text(str(done))
                print(f"stopped, saved at {done}", flush=True)
                raise SystemExit(143)
            time.sleep(0.1)
            done += 1
            state.write_text(str(done))
        print(f"finished at {done}", flush=True)

    with Workflow(
        generate_name="borrower-", entrypoint="main", labels={af.QUEUE_LABEL: "team-a"},
        volume_claim_templates=[m.PersistentVolumeClaim(metadata=m.ObjectMeta(name="ckpt"))],
    ) as w:
        with DAG(name="main"):
            work(with_items=[0, 1, 2, 3], arguments={"shard": "{{item}}"})
"""

OWNER = """
    from hera.workflows import DAG, Workflow, script
    import aistack_flows as af

    @script(image="python:3.12-slim", annotations=af.gpus(2))
    def own() -> None:
        import os, time
        print("owner has", os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
        time.sleep(1)

    queue = {af.QUEUE_LABEL: "team-b"}
    with Workflow(generate_name="owner-", entrypoint="main", labels=queue) as w:
        with DAG(name="main"):
            own()
"""

QUEUES = """
    stopGraceSeconds: 10
    queues:
      - {name: team-a, quota: 2}
      - {name: team-b, quota: 2}
"""


def test_an_owner_takes_back_borrowed_gpus_and_the_reclaimed_steps_resume(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "queues.yaml"
    config.write_text(textwrap.dedent(QUEUES))
    borrower = start("run", str(pipeline(tmp_path, "borrower", BORROWER)), *GPUS,
                     "--config", str(config), state=state)  # fmt: skip
    try:
        wait_for(
            "4 borrower steps running", lambda: sum(p.state == "running" for p in pods(state)) == 4
        )
        owner = aistack("run", str(pipeline(tmp_path, "owner", OWNER)), *GPUS,
                        "--config", str(config), "--no-live", state=state)  # fmt: skip
        assert "another runner" in owner.stdout  # it followed; the first runner scheduled it
        output, _ = borrower.communicate(timeout=90)
        assert borrower.returncode == 0, output
    finally:
        borrower.kill()
        borrower.communicate()
    store = opened(state)
    runs = {r.source.rpartition("/")[2]: r for r in store.runs()}
    assert {name: r.phase for name, r in runs.items()} == {
        "borrower.py": "Succeeded",
        "owner.py": "Succeeded",
    }
    borrowed = runs["borrower.py"].name
    reclaims = [e for _, e in store.events(borrowed) if e.kind == "Reclaimed"]
    assert len(reclaims) == 2  # exactly the two GPUs over team-a's quota
    assert all(e.message.startswith("aistack: reclaimed for ") for e in reclaims)
    log = aistack("logs", borrowed, "--local", state=state).stdout
    assert log.count("stopped, saved at") == 2
    resumed = [line for line in log.splitlines() if line.startswith("attempt 1 starts at")]
    assert len(resumed) == 2
    assert all(int(line.rpartition(" ")[2]) > 0 for line in resumed)  # progress kept
    assert log.count("finished at 60") == 4
    owner_log = aistack("logs", runs["owner.py"].name, "--local", state=state).stdout
    assert "owner has SIM-GPU-" in owner_log


GANG = """
    from hera.workflows import DAG, Workflow, script
    import aistack_flows as af

    @script(image="python:3.12-slim", annotations=af.gpus(1, kind="build"))
    def hold() -> None:
        import time
        time.sleep(2)

    @script(image="python:3.12-slim", annotations=af.gpus(2, gang=2))
    def ddp() -> None:
        import os
        print("rank", os.environ["AISTACK_GANG_RANK"], "of", os.environ["AISTACK_GANG_SIZE"],
              "master", os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"], flush=True)

    queue = {af.QUEUE_LABEL: "research"}
    with Workflow(generate_name="gang-", entrypoint="main", labels=queue) as w:
        with DAG(name="main"):
            hold()
            ddp()
"""


def test_a_gang_starts_only_when_all_its_gpus_are_free(tmp_path: Path) -> None:
    state = tmp_path / "state"
    aistack("run", str(pipeline(tmp_path, "gang", GANG)), *GPUS, "--no-live", state=state)
    store = opened(state)
    run = store.runs()[0].name
    nodes = store.nodes(run)
    hold = next(n for n in nodes.values() if n.type == "Pod" and n.template == "hold")
    members = [n for n in nodes.values() if n.type == "Pod" and n.template == "ddp"]
    assert len(members) == 2
    assert hold.finished_at is not None
    # 2 x 2 GPUs of 4 while hold has one: the gang waited, then both members started at once.
    assert all(m.started_at is not None and m.started_at >= hold.finished_at for m in members)
    assert len({m.started_at for m in members}) == 1
    log = aistack("logs", run, "ddp", "--local", state=state).stdout
    assert "rank 0 of 2 master 127.0.0.1" in log
    assert "rank 1 of 2 master 127.0.0.1" in log
    explained = aistack("explain", run, "--local", state=state).stdout
    assert "Submitted: workload" in explained
    assert "2 pods x 2 GPU(s)" in explained


CHAIN = """
    from hera.workflows import DAG, Workflow, script
    import aistack_flows as af

    @script(image="python:3.12-slim", annotations=af.gpus(1))
    def step(name: str, seconds: float, out: str) -> None:
        import os, time
        time.sleep(seconds)
        with open(f"{out}/{name}", "a") as record:
            record.write(f"{os.getpid()}\\n")

    with Workflow(generate_name="chain-", entrypoint="main", labels={af.QUEUE_LABEL: "research"},
                  arguments={"out": "/nowhere"}) as w:
        with DAG(name="main"):
            out = "{{workflow.parameters.out}}"
            a = step(name="a", arguments={"name": "a", "seconds": 0, "out": out})
            b = step(name="b", arguments={"name": "b", "seconds": 8, "out": out})
            c = step(name="c", arguments={"name": "c", "seconds": 0, "out": out})
            a >> b >> c
"""


def test_a_killed_runner_is_resumed_without_running_a_step_twice_or_leaving_a_process(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    runner = start("run", str(pipeline(tmp_path, "chain", CHAIN)), *GPUS,
                   "-p", f"out={out}", state=state)  # fmt: skip
    try:

        def running_b() -> list[PodRow]:
            return [p for p in pods(state) if p.state == "running" and ".b(" in p.node]

        wait_for("step b running", lambda: bool(running_b()))
        (b,) = running_b()
        runner.send_signal(signal.SIGKILL)
        runner.communicate(timeout=10)
    finally:
        runner.kill()
        runner.communicate()
    assert b.process is not None
    pid = b.process["pid"]
    os.kill(pid, 0)  # b's process outlived its runner
    aistack("run", "--resume", *GPUS, "--no-live", state=state)
    explained = aistack("explain", only_run(state), "--local", state=state).stdout
    assert "process still running after the runner restarted" in explained  # b was adopted
    for name in ("a", "b", "c"):
        assert len((out / name).read_text().splitlines()) == 1, name  # each ran exactly once
    assert json.loads(aistack("status", only_run(state), "--local", "-o", "json", state=state)
                      .stdout)["phase"] == "Succeeded"  # fmt: skip
    for pod in pods(state):
        assert pod.process is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pod.process["pid"], 0)


def test_refused_features_and_bad_input_say_what_is_wrong_and_start_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    resource = tmp_path / "resource.yaml"
    resource.write_text(
        textwrap.dedent("""
        apiVersion: argoproj.io/v1alpha1
        kind: Workflow
        metadata: {generateName: r-}
        spec:
          entrypoint: main
          templates:
          - name: main
            dag:
              tasks:
              - {name: make, template: make}
              - {name: ref, templateRef: {name: t, template: x}}
          - name: make
            resource: {action: create, manifest: "kind: ConfigMap"}
        """)
    )
    refused = aistack("run", str(resource), *GPUS, state=state, check=2)
    assert "a resource template creates Kubernetes objects" in refused.stderr
    assert "templateRef t/x lives on the cluster" in refused.stderr
    chain = pipeline(tmp_path, "chain", CHAIN)
    bad_parameter = aistack("run", str(chain), *GPUS, "-p", "size=3", state=state, check=2)
    assert "no parameter 'size' (it has: out)" in bad_parameter.stderr
    bad_gpus = aistack("run", str(chain), "--simulate-gpus", "0xH100-80GB", state=state, check=2)
    assert "4xH100-80GB" in bad_gpus.stderr
    config = tmp_path / "bad.yaml"
    config.write_text("queues: [{name: a, quota: lots}]\n")
    bad_config = aistack("run", str(chain), *GPUS, "--config", str(config), state=state, check=2)
    assert "quota must be a number" in bad_config.stderr
    if not Path("/dev/nvidia0").exists():
        no_gpus = aistack("run", str(chain), state=state, check=2)
        assert "--simulate-gpus" in no_gpus.stderr
    assert opened(state).runs() == []  # nothing was submitted


TOO_BIG = """
    from hera.workflows import DAG, Workflow, script
    import aistack_flows as af

    @script(image="python:3.12-slim", annotations=af.gpus(8))
    def big() -> None:
        pass

    with Workflow(generate_name="big-", entrypoint="main", labels={af.QUEUE_LABEL: "a"}) as w:
        with DAG(name="main"):
            big()
"""


def test_a_step_this_machine_could_never_hold_fails_at_once_with_the_reason(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    aistack("run", str(pipeline(tmp_path, "big", TOO_BIG)), *GPUS, "--no-live", state=state,
            check=1)  # fmt: skip
    status = aistack("status", only_run(state), "--local", state=state).stdout
    assert "it can never run here: the pod asks for 8 whole GPUs and the biggest node" in status


FROM_LIBRARY = """
    apiVersion: argoproj.io/v1alpha1
    kind: Workflow
    metadata: {generateName: lib-}
    spec:
      entrypoint: main
      templates:
      - name: main
        dag:
          tasks:
          - name: test
            templateRef: {name: aistack-build, template: build, clusterScope: true}
            arguments:
              parameters:
              - {name: queue, value: research}
              - {name: image, value: unused}
              - {name: command, value: 'echo built on $CUDA_MPS_ACTIVE_THREAD_PERCENTAGE%'}
              - {name: memory-gib, value: '2'}
              - {name: compute-percent, value: '15'}
"""


def test_a_template_ref_runs_the_library_template_given_with_templates(tmp_path: Path) -> None:
    state = tmp_path / "state"
    workflow = tmp_path / "lib.yaml"
    workflow.write_text(textwrap.dedent(FROM_LIBRARY))
    refused = aistack("run", str(workflow), *GPUS, state=state, check=2)
    assert "pass --templates DIR" in refused.stderr
    aistack("run", str(workflow), *GPUS, "--templates", "templates", "--no-live", state=state)
    run = only_run(state)
    assert aistack("logs", run, "test", "--local", state=state).stdout == "built on 15%\n"
    status = json.loads(aistack("status", run, "--local", "-o", "json", state=state).stdout)
    assert status["steps"][0]["queue"] == "research"
