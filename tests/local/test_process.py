"""Steps' processes for real: small shell and Python commands under the wrapper."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from aistack_flows.local import _wrapper
from aistack_flows.local._cgroups import Cgroups
from aistack_flows.local._process import (
    LOST_MESSAGE,
    Exit,
    Launch,
    ProcessRef,
    alive,
    poll,
    read_log,
    read_stdout,
    signal_group,
    start,
    stop,
)

ENV = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}
# Generous: the machines that run these tests are small and busy.
TIMEOUT_SECONDS = 15.0

# A Python step that stops cleanly on SIGTERM, once it has said it is ready for it.
TRAPS_SIGTERM = """
import pathlib, signal, sys, time
def on_term(signum, frame):
    pathlib.Path("terminated").write_text("yes")
    sys.exit(143)
signal.signal(signal.SIGTERM, on_term)
pathlib.Path("ready").write_text("")
time.sleep(60)
"""


class Steps:
    """Starts steps in `tmp_path`; the fixture kills whatever is left when the test ends."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[ProcessRef] = []

    def start(
        self,
        *argv: str,
        env: Mapping[str, str] = ENV,
        cwd: Path | None = None,
        name: str = "step",
        cpu_milli: int = 0,
        memory_mib: int = 0,
        cgroups: Cgroups | None = None,
    ) -> tuple[ProcessRef, Path]:
        directory = self.tmp_path / name
        launch = Launch(
            argv=argv,
            cwd=cwd or self.tmp_path,
            env=env,
            directory=directory,
            cpu_milli=cpu_milli,
            memory_mib=memory_mib,
        )
        ref = start(launch, cgroups=cgroups)
        self.started.append(ref)
        return ref, directory

    def kill_all(self) -> None:
        for ref in self.started:
            if alive(ref):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(ref.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(ref.pid, 0)


@pytest.fixture
def steps(tmp_path: Path) -> Iterator[Steps]:
    made = Steps(tmp_path)
    yield made
    made.kill_all()


def wait(ref: ProcessRef, directory: Path) -> Exit:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while (ended := poll(ref, directory)) is None:
        assert time.monotonic() < deadline, f"the step in {directory} did not end"
        time.sleep(0.01)
    return ended


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def state_of(pid: int) -> str | None:
    """The state letter of `pid` ("Z" for a zombie), None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2]


def test_a_step_that_exits_0_succeeds(steps: Steps) -> None:
    ref, directory = steps.start("sh", "-c", "exit 0")

    ended = wait(ref, directory)

    assert ended.succeeded
    assert (ended.exit_code, ended.signal, ended.error) == (0, None, None)
    assert ended.describe() == "exit code 0"
    assert ended.started <= ended.finished


def test_the_exit_code_is_recorded(steps: Steps) -> None:
    ref, directory = steps.start("sh", "-c", "exit 3")

    ended = wait(ref, directory)

    assert not ended.succeeded
    assert (ended.exit_code, ended.signal, ended.error) == (3, None, None)
    assert ended.describe() == "exit code 3"


def test_stdout_is_the_result_and_the_log_has_both_streams_in_order(steps: Steps) -> None:
    ref, directory = steps.start(
        "sh", "-c", "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three"
    )

    assert wait(ref, directory).succeeded
    assert read_stdout(directory) == "one\nthree\n"
    assert read_log(directory) == "one\ntwo\nthree\n"
    assert read_log(directory, tail=2) == "two\nthree\n"


def test_a_command_that_does_not_exist(steps: Steps) -> None:
    ref, directory = steps.start("no-such-command-aistack", "--help")

    ended = wait(ref, directory)

    assert (ended.exit_code, ended.signal) == (127, None)
    assert ended.describe() == "command not found: no-such-command-aistack"
    assert read_log(directory) == "[aistack] command not found: no-such-command-aistack\n"
    assert not ended.succeeded


def test_a_step_without_a_command(steps: Steps) -> None:
    ref, directory = steps.start()

    ended = wait(ref, directory)

    assert (ended.exit_code, ended.error) == (127, "the step has no command")


def test_a_file_that_is_not_executable(steps: Steps, tmp_path: Path) -> None:
    (tmp_path / "script.sh").write_text("#!/bin/sh\necho ran\n")

    ref, directory = steps.start("./script.sh")

    ended = wait(ref, directory)
    assert ended.exit_code == 126
    assert ended.describe() == "cannot run ./script.sh: Permission denied"
    assert read_stdout(directory) == ""


def test_the_environment_and_the_working_directory_reach_the_step(
    steps: Steps, tmp_path: Path
) -> None:
    bin_directory = tmp_path / "bin"
    bin_directory.mkdir()
    greet = bin_directory / "greet"
    greet.write_text('#!/bin/sh\necho "$GREETING"; pwd; echo "${HOME-no HOME}"\n')
    greet.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    # Only what the launch says: the runner's HOME does not leak into the step.
    env = {"PATH": f"{bin_directory}:{ENV['PATH']}", "GREETING": "hello"}

    ref, directory = steps.start("greet", env=env, cwd=work)

    assert wait(ref, directory).succeeded
    assert read_stdout(directory) == f"hello\n{work}\nno HOME\n"


def test_a_missing_working_directory_fails_the_step(steps: Steps, tmp_path: Path) -> None:
    ref, directory = steps.start("true", cwd=tmp_path / "missing")

    ended = wait(ref, directory)

    assert ended.exit_code is None
    assert ended.error == f"working directory {tmp_path / 'missing'}: No such file or directory"


def test_sigterm_to_the_group_reaches_the_step_and_the_wrapper_records_its_exit(
    steps: Steps, tmp_path: Path
) -> None:
    ref, directory = steps.start(sys.executable, "-c", TRAPS_SIGTERM)
    wait_for(tmp_path / "ready")

    signal_group(ref, signal.SIGTERM)

    ended = wait(ref, directory)
    assert (ended.exit_code, ended.signal, ended.error) == (143, None, None)
    assert (tmp_path / "terminated").read_text() == "yes"


def test_a_stop_right_after_the_start_is_not_lost(steps: Steps) -> None:
    ref, directory = steps.start("sleep", "60")

    # The wrapper may not have started the step yet: it passes the signal on when it has.
    signal_group(ref, signal.SIGTERM)

    ended = wait(ref, directory)
    assert (ended.exit_code, ended.signal, ended.error) == (None, signal.SIGTERM, None)
    assert ended.describe() == "killed by SIGTERM"


def test_stop_waits_the_grace_then_kills_the_step_and_what_it_forked(
    steps: Steps, tmp_path: Path
) -> None:
    # The shell and its background sleep both ignore SIGTERM (an ignored signal is inherited).
    ref, directory = steps.start(
        "sh", "-c", "trap '' TERM; sleep 60 & echo $! > sleeper; touch ready; wait"
    )
    wait_for(tmp_path / "ready")
    sleeper = int((tmp_path / "sleeper").read_text())
    began = time.monotonic()

    ended = stop(ref, directory, 0.5)

    took = time.monotonic() - began
    assert (ended.exit_code, ended.signal, ended.error) == (None, signal.SIGKILL, None)
    assert ended.describe() == "killed by SIGKILL"
    # Not the wrapper's 5 s drain: the sleeper, which held the step's stdout, was killed too.
    assert 0.5 <= took < 4.0
    assert state_of(sleeper) in {None, "Z"}


def test_stop_returns_once_the_step_has_stopped_in_its_grace(steps: Steps, tmp_path: Path) -> None:
    ref, directory = steps.start(sys.executable, "-c", TRAPS_SIGTERM)
    wait_for(tmp_path / "ready")

    ended = stop(ref, directory, TIMEOUT_SECONDS)

    assert ended.exit_code == 143


def test_stop_of_a_step_that_has_ended_says_how_it_ended(steps: Steps) -> None:
    ref, directory = steps.start("sh", "-c", "exit 5")
    wait_for(directory / "exit.json")

    assert stop(ref, directory, 0.0).exit_code == 5


def test_a_restarted_runner_adopts_the_step_from_its_reference(
    steps: Steps, tmp_path: Path
) -> None:
    ref, directory = steps.start(
        "sh", "-c", "while [ ! -e go ]; do sleep 0.02; done; echo done; exit 4"
    )
    stored = json.dumps(ref.to_json())
    del ref

    adopted = ProcessRef.from_json(json.loads(stored))

    assert alive(adopted)
    assert poll(adopted, directory) is None
    (tmp_path / "go").write_text("")
    ended = wait(adopted, directory)
    assert ended.exit_code == 4
    assert read_stdout(directory) == "done\n"


def test_a_step_outlives_the_runner_that_started_it(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    runner = os.fork()
    if runner == 0:  # the runner: starts the step, then dies without a word
        try:
            ref = start(
                Launch(
                    argv=("sh", "-c", "while [ ! -e go ]; do sleep 0.02; done; exit 6"),
                    cwd=tmp_path,
                    env=ENV,
                    directory=tmp_path / "step",
                )
            )
            os.write(write_end, json.dumps(ref.to_json()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        adopted = ProcessRef.from_json(json.loads(pipe.read()))
    os.waitpid(runner, 0)

    try:
        assert alive(adopted)
        assert os.getsid(adopted.pid) == adopted.pid
        (tmp_path / "go").write_text("")
        assert wait(adopted, tmp_path / "step").exit_code == 6
    finally:
        signal_group(adopted, signal.SIGKILL)


def test_the_wrapper_leads_a_session_and_the_step_is_in_its_group(
    steps: Steps, tmp_path: Path
) -> None:
    script = (
        "import os, pathlib, time\n"
        "print(os.getpgid(0), os.getsid(0), flush=True)\n"
        "while not pathlib.Path('go').exists(): time.sleep(0.02)\n"
    )
    ref, directory = steps.start(sys.executable, "-c", script)

    assert os.getsid(ref.pid) == ref.pid
    assert os.getpgid(ref.pid) == ref.pid != os.getpgid(0)
    (tmp_path / "go").write_text("")
    assert wait(ref, directory).succeeded
    assert read_stdout(directory) == f"{ref.pid} {ref.pid}\n"


def test_a_reference_with_other_start_ticks_is_not_the_wrapper(
    steps: Steps, tmp_path: Path
) -> None:
    ref, directory = steps.start("sleep", "60")
    impostor = ProcessRef(pid=ref.pid, start_ticks=ref.start_ticks + 1)

    assert alive(ref)
    assert not alive(impostor)
    signal_group(impostor, signal.SIGTERM)
    assert alive(ref)
    ended = poll(impostor, tmp_path / "elsewhere")
    assert ended is not None
    assert ended.error == LOST_MESSAGE
    assert poll(ref, directory) is None


def test_poll_leaves_no_zombie(steps: Steps) -> None:
    ref, directory = steps.start("true")

    wait(ref, directory)

    assert state_of(ref.pid) is None
    with pytest.raises(ChildProcessError):
        os.waitpid(ref.pid, os.WNOHANG)


def test_a_wrapper_killed_without_a_record_is_reported_lost(steps: Steps) -> None:
    ref, directory = steps.start("sleep", "60")

    os.killpg(ref.pid, signal.SIGKILL)

    ended = wait(ref, directory)
    assert (ended.exit_code, ended.signal) == (None, None)
    assert ended.describe() == LOST_MESSAGE
    assert not ended.succeeded


def test_a_failure_of_the_wrapper_is_recorded(steps: Steps) -> None:
    ref, directory = steps.start("true", env={**ENV, "BROKEN": "a\x00b"})

    ended = wait(ref, directory)

    assert ended.error == "the step's wrapper failed: ValueError('embedded null byte')"
    assert read_log(directory) == f"[aistack] {ended.error}\n"
    assert "Traceback" in (directory / "wrapper.log").read_text()


def test_a_wrapper_that_fails_before_its_log_is_open_leaves_its_last_words(
    steps: Steps, tmp_path: Path
) -> None:
    (tmp_path / "step" / "step.log").mkdir(parents=True)

    ref, directory = steps.start("true")

    ended = wait(ref, directory)
    assert ended.error is not None
    assert ended.error.startswith(f"{LOST_MESSAGE}; wrapper.log: IsADirectoryError: ")


def test_a_step_with_limits_joins_its_cgroup(steps: Steps, tmp_path: Path) -> None:
    cgroups = Cgroups(tmp_path / "cgroup")
    cgroups.base.mkdir()

    ref, directory = steps.start("true", cpu_milli=500, memory_mib=64, cgroups=cgroups)

    assert wait(ref, directory).succeeded
    spec = json.loads((directory / "spec.json").read_text())
    cgroup = Path(spec["cgroup"])
    assert cgroup.parent == cgroups.base
    assert cgroup.name.startswith("aistack-step-step-")
    assert (cgroup / "cpu.max").read_text() == "50000 100000\n"
    assert (cgroup / "cgroup.procs").read_text() == f"{ref.pid}\n"


def test_a_step_without_limits_gets_no_cgroup(steps: Steps, tmp_path: Path) -> None:
    cgroups = Cgroups(tmp_path / "cgroup")
    cgroups.base.mkdir()

    ref, directory = steps.start("true", cgroups=cgroups)

    assert wait(ref, directory).succeeded
    assert json.loads((directory / "spec.json").read_text())["cgroup"] is None
    assert list(cgroups.base.iterdir()) == []


def test_the_wrapper_fails_a_step_whose_cgroup_cannot_be_joined(tmp_path: Path) -> None:
    gone = tmp_path / "aistack-step-gone"
    spec = {
        "argv": ["touch", "ran"],
        "cwd": str(tmp_path),
        "env": ENV,
        "log": str(tmp_path / "step.log"),
        "stdout": str(tmp_path / "stdout"),
        "exit_file": str(tmp_path / "exit.json"),
        "cgroup": str(gone),
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))

    subprocess.run(
        [sys.executable, "-I", _wrapper.__file__, str(tmp_path / "spec.json")],
        check=True,
        timeout=TIMEOUT_SECONDS,
    )

    ended = Exit.from_record(json.loads((tmp_path / "exit.json").read_text()))
    assert ended.exit_code is None
    assert ended.describe() == (
        f"could not join the step's cgroup {gone} (No such file or directory), so its CPU and "
        "memory limits could not be enforced; the step was not started"
    )
    assert read_log(tmp_path) == f"[aistack] {ended.describe()}\n"
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    ("ended", "described"),
    [
        (Exit(exit_code=0, signal=None, error=None, started=1, finished=2), "exit code 0"),
        (Exit(exit_code=None, signal=9, error=None, started=1, finished=2), "killed by SIGKILL"),
        (Exit(exit_code=None, signal=99, error=None, started=1, finished=2), "killed by signal 99"),
        (Exit(exit_code=127, signal=None, error="command not found: x", started=1, finished=2),
         "command not found: x"),
    ],
)  # fmt: skip
def test_describe(ended: Exit, described: str) -> None:
    assert ended.describe() == described


def test_an_exit_with_an_error_did_not_succeed() -> None:
    assert not Exit(exit_code=0, signal=None, error="lost", started=1, finished=2).succeeded


def test_a_reference_round_trips_through_json() -> None:
    ref = ProcessRef(pid=1234, start_ticks=987654)

    assert ProcessRef.from_json(json.loads(json.dumps(ref.to_json()))) == ref


@pytest.mark.parametrize(
    ("text", "tail", "expected"),
    [
        ("a\nb\nc\n", 2, "b\nc\n"),
        ("a\nb\nc", 2, "b\nc"),
        ("a\nb\nc\n", 5, "a\nb\nc\n"),
        ("a\nb\nc\n", 0, ""),
        ("a\nb\nc\n", None, "a\nb\nc\n"),
        ("".join(f"line {n}\n" for n in range(100_000)), 2, "line 99998\nline 99999\n"),
    ],
)
def test_read_log_tail(tmp_path: Path, text: str, tail: int | None, expected: str) -> None:
    (tmp_path / "step.log").write_text(text)

    assert read_log(tmp_path, tail=tail) == expected


def test_read_log_of_a_step_that_never_started(tmp_path: Path) -> None:
    assert read_log(tmp_path) == ""
    assert read_log(tmp_path, tail=3) == ""
