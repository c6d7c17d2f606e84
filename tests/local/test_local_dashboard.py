"""The local runner's dashboard: `aistack run --dashboard` in a real browser.

The runner is the `aistack` command in a subprocess, on simulated GPUs, running real step
processes that wait for a file of the test's (`$GATES/<step>`), so the test decides when each
step ends. Debian's Chromium, driven by Playwright, looks at the pages it serves on 127.0.0.1;
the numbers on them are checked against what `aistack status --local` says.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from aistack_flows.local import Store
from tests.browser import LIVE_MS, Console, chromium, screenshot

ROOT = Path(__file__).parents[2]
AISTACK = str(Path(sys.executable).parent / "aistack")
GPUS = ["--simulate-gpus", "4xH100-80GB"]

WATCHED = """\
    from hera.workflows import DAG, Workflow, script

    import aistack_flows as af


    @script(image="python:3.12-slim", annotations=af.gpus(4))
    def hold() -> None:
        import os, time
        from pathlib import Path
        while not (Path(os.environ["GATES"]) / "hold").exists():
            time.sleep(0.1)


    @script(image="python:3.12-slim", annotations=af.gpu_slice(memory_gib=20, compute_percent=30))
    def infer() -> None:
        import os, time
        from pathlib import Path
        while not (Path(os.environ["GATES"]) / "infer").exists():
            time.sleep(0.1)


    queue = {af.QUEUE_LABEL: "team-a"}
    with Workflow(generate_name="watched-", entrypoint="main", labels=queue) as w:
        with DAG(name="main"):
            hold()
            infer()
"""


def wait_for(what: str, ready: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


def pod_count(state: Path) -> int:
    store = Store(state)
    try:
        return len(store.pods())
    finally:
        store.close()


def pod_of(state: Path, step: str) -> tuple[str, str]:
    """The run and the pod of the step named `step` (its first attempt)."""
    store = Store(state)
    try:
        (run,) = store.runs()
        nodes = store.nodes(run.name)
        (pod,) = [p for p in store.pods(run.name) if nodes[p.node].name == f"{step}(0)"]
        return run.name, pod.name
    finally:
        store.close()


def step_status(state: Path, run: str, step: str) -> dict[str, str]:
    done = subprocess.run(
        [AISTACK, "status", run, "--local", "-o", "json", "--state", str(state)],
        capture_output=True,
        text=True,
        check=True,
    )
    (found,) = [s for s in json.loads(done.stdout)["steps"] if s["step"] == step]
    return dict(found)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path, Path]]:
    """`aistack run --dashboard 0` of the watched pipeline: the process, its URL, state, gates."""
    state, gates = tmp_path / "state", tmp_path / "gates"
    gates.mkdir()
    pipeline = tmp_path / "watched.py"
    pipeline.write_text(textwrap.dedent(WATCHED))
    process = subprocess.Popen(
        [AISTACK, "run", str(pipeline), *GPUS, "--dashboard=0", "--no-live", f"--state={state}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "GATES": str(gates)},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        found = re.match(r"dashboard: (http://127\.0\.0\.1:\d+/) ", first)
        assert found, f"the runner's first line names no dashboard: {first!r}"
        yield process, found[1], state, gates
    finally:
        for step in ("hold", "infer"):
            (gates / step).touch()
        process.kill()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def go_live(page: Page, url: str) -> None:
    response = page.goto(url)
    assert response is not None
    assert response.status == 200, f"{url}: {response.status} {page.inner_text('main')[:300]}"
    page.wait_for_selector("#live-state.on", timeout=LIVE_MS)


def test_the_runners_dashboard_shows_its_gpus_and_why_a_step_waits_and_follows_it_live(
    runner: tuple[subprocess.Popen[str], str, Path, Path],
) -> None:
    process, url, state, gates = runner
    wait_for("both steps to have pods", lambda: pod_count(state) == 2)
    run, hold = pod_of(state, "hold")
    _, infer = pod_of(state, "infer")
    wait_for(
        "the slice to be told why it waits",
        lambda: step_status(state, run, "infer")["message"].startswith("waiting: "),
    )
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        console = Console(page)

        go_live(page, url)
        row = 'tr[data-pool="NVIDIA-H100-80GB-HBM3"]'
        assert page.inner_text(f"{row} [data-field=allocated]").strip() == "4"
        screenshot(page, "local-overview")

        go_live(page, f"{url}pods/{run}/{infer}")
        waiting = step_status(state, run, "infer")["message"].removeprefix("waiting: ")
        assert page.inner_text("[data-field=summary]").strip() == f"pending in {waiting}"
        assert page.inner_text("[data-field=reason-code]").strip() == "InsufficientCapacity"
        screenshot(page, "local-waiting")

        go_live(page, f"{url}nodes")
        page.evaluate("window.aistackNotReloaded = true")
        assert page.query_selector(f'li.holder[data-pod="{hold}"]') is not None
        assert page.query_selector(f'li.holder[data-pod="{infer}"]') is None
        (gates / "hold").touch()
        holder = page.wait_for_selector(f'li.holder[data-pod="{infer}"]', timeout=LIVE_MS)
        assert holder is not None
        assert "20 GiB, 30 %" in holder.inner_text()
        assert page.query_selector(f'li.holder[data-pod="{hold}"]') is None
        assert page.evaluate("window.aistackNotReloaded") is True
        screenshot(page, "local-nodes")
        assert console.errors == []

    (gates / "infer").touch()
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    with pytest.raises(urllib.error.URLError):  # the pages end with the runner
        urllib.request.urlopen(url, timeout=5)


def test_a_dashboard_port_in_use_refuses_the_run_before_anything_is_added(tmp_path: Path) -> None:
    state = tmp_path / "state"
    pipeline = tmp_path / "watched.py"
    pipeline.write_text(textwrap.dedent(WATCHED))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [AISTACK, "run", str(pipeline), *GPUS, f"--dashboard={port}", f"--state={state}"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--dashboard {port}: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "give another port, or 0 for any free one" in done.stderr
    store = Store(state)
    try:
        assert store.runs() == []
    finally:
        store.close()


@pytest.mark.parametrize("port", ["http", "-1", "65536"])
def test_a_bad_dashboard_port_is_a_usage_error(tmp_path: Path, port: str) -> None:
    state = tmp_path / "state"
    done = subprocess.run(
        [AISTACK, "run", "examples/pipeline.py", *GPUS, f"--dashboard={port}", f"--state={state}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--dashboard: " in done.stderr
    assert not state.exists()
