"""`aistack run`: submit pipelines to a state directory, then schedule it or follow it.

The first `aistack run` on a state directory takes the runner lock and schedules every run in
it until none is left; a second one, started meanwhile, adds its runs and follows them (the two
cooperate through the database; only the lock holder starts processes or hands out GPUs). When
the holder ends, a follower whose runs are not done takes the lock over. After a crash of the
holder (`kill -9`), `aistack run --resume` takes it over the same way: steps that finished
stay finished, steps still running are adopted, steps that waited wait again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import secrets
import select
import signal
import string
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

from aistack_flows._errors import PipelineError
from aistack_flows._load import LoadError, load_pipelines
from aistack_flows.local._cgroups import Cgroups, Unsupported
from aistack_flows.local._config import ConfigError, LocalConfig, load_config
from aistack_flows.local._runner import LocalRunner, StatusPages
from aistack_flows.local._store import PodRow, RunRow, Store, StoreError
from aistack_flows.local._support import UnsupportedError, calls, check
from aistack_flows.local._view import Screen, gpu_rows, run_lines
from scheduler_service.gpu_discovery import (
    GpuSpecError,
    Machine,
    discover,
    machine_from_json,
    machine_to_json,
    simulated,
)
from scheduler_service.gpu_sharing import MpsDaemons
from scheduler_service.translate import asks_for_gpus

__all__ = ["RunOptions", "default_state_directory", "run_pipelines", "submit_runs"]

_NAME_ALPHABET = string.ascii_lowercase + string.digits
_MAX_PARAMETERS = 256
_MAX_PARAMETER_BYTES = 256 * 1024


class RunRefusedError(ValueError):
    """What the user asked cannot be run; the message says why and what to do."""


def default_state_directory() -> Path:
    """`$AISTACK_STATE` or `$XDG_STATE_HOME/aistack` (`~/.local/state/aistack`)."""
    given = os.environ.get("AISTACK_STATE")
    if given:
        return Path(given)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "aistack"


class DashboardServer(StatusPages, Protocol):
    """The dashboard's pages served on this machine while the runner schedules (`--dashboard`)."""

    @property
    def url(self) -> str:
        """Where a browser on this machine opens them."""

    def close(self) -> None:
        """Stop serving (the runner's last act)."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What `aistack run` was asked."""

    files: Sequence[Path] = ()
    state: Path = field(default_factory=default_state_directory)
    parameters: Mapping[str, str] = field(default_factory=dict)
    simulate_gpus: str | None = None
    config: Path | None = None
    templates: Path | None = None
    """Where the WorkflowTemplates that `templateRef`s name are (their YAML files)."""
    resume: bool = False
    live: bool | None = None
    """Draw the view in place (None: when the output is a terminal)."""
    poll_seconds: float = 0.25
    gpu_sharing: Literal["auto", "mps", "none"] = "auto"
    """How slices are capped: "mps" (refused where MPS cannot run), "none", or "auto": MPS on
    real GPUs where it can run, else none with a note that says why."""
    dashboard: int | None = None
    """The port on 127.0.0.1 of the dashboard's pages (0: any free port); None: no pages."""
    serve_dashboard: Callable[[int], DashboardServer] | None = None
    """Starts the pages on a port (the CLI passes scheduler_service.dashboard.LocalPages);
    raises OSError when it cannot listen there."""


def run_pipelines(options: RunOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """`aistack run`: 0 when every run asked for succeeded, 1 when one did not, 2 refused."""
    try:
        config = load_config(options.config) if options.config else LocalConfig()
        store = Store(options.state)
        machine = _machine(
            options.simulate_gpus or config.simulate_gpus, store, resume=options.resume
        )
        pages = _serve_dashboard(options, out)
    except (ConfigError, GpuSpecError, StoreError, RunRefusedError) as error:
        print(f"aistack: error: {error}", file=err)
        return 2
    try:
        return _submit_and_drive(store, machine, config, options, out=out, err=err, pages=pages)
    finally:
        if pages is not None:
            pages.close()


def _submit_and_drive(
    store: Store,
    machine: Machine,
    config: LocalConfig,
    options: RunOptions,
    *,
    out: TextIO,
    err: TextIO,
    pages: DashboardServer | None,
) -> int:
    try:
        mine = submit_runs(store, options, machine, out=out)
    except (LoadError, PipelineError, UnsupportedError, RunRefusedError, StoreError) as error:
        print(f"aistack: error: {error}", file=err)
        return 2
    if not mine and not options.resume:
        print("aistack: nothing to run", file=err)
        return 2
    if not mine:
        mine = [r.name for r in store.runs(active=True)]
        if not mine:
            print(f"nothing to resume in {options.state}: every run there has ended", file=out)
            return 0
    return _drive(store, machine, config=config, mine=mine, options=options, out=out, pages=pages)


def _serve_dashboard(options: RunOptions, out: TextIO) -> DashboardServer | None:
    """The dashboard's pages, when asked for: listening before any run is added."""
    port = options.dashboard
    if port is None:
        return None
    if options.serve_dashboard is None:
        raise RunRefusedError("--dashboard: this program cannot serve the dashboard's pages")
    try:
        pages = options.serve_dashboard(port)
    except OSError as error:
        raise RunRefusedError(
            f"--dashboard {port}: cannot listen on 127.0.0.1:{port} "
            f"({error.strerror or error}); give another port, or 0 for any free one"
        ) from error
    print(f"dashboard: {pages.url} (this machine only, while this runner schedules)", file=out)
    return pages


def _machine(spec: str | None, store: Store, *, resume: bool) -> Machine:
    """Simulated GPUs when asked; on --resume, the ones the runs started on; else NVML's."""
    if spec:
        return simulated(spec)
    recorded = store.setting("machine")
    if resume and recorded is not None:
        machine = machine_from_json(json.loads(recorded))
        if machine.source == "simulated":
            return machine
    return discover()


def submit_runs(store: Store, options: RunOptions, machine: Machine, *, out: TextIO) -> list[str]:
    """Add a run for every workflow in `options.files`; all are checked before any is added."""
    prepared: list[RunRow] = []
    library = _library(options.templates)
    for path in options.files:
        for pipeline in load_pipelines(path):
            manifest = _workflow(pipeline.to_dict(), path)
            _inline_references(manifest, library)
            support = check(manifest)
            parameters = _parameters(manifest, options.parameters, path)
            if _asks_for_gpus(manifest) and not machine.gpus:
                found = machine.note or "this machine has no GPU"
                raise RunRefusedError(f"{path}: the pipeline has GPU steps and {found}")
            name = _name(manifest)
            prepared.append(
                RunRow(
                    name=name,
                    uid=str(uuid.uuid4()),
                    source=str(path),
                    manifest=manifest,
                    parameters=parameters,
                    phase="Pending",
                    created_at=time.time(),
                    warnings=list(support.warnings),
                )
            )
    with store.transaction():
        for row in prepared:
            store.add_run(row)
    for row in prepared:
        print(f"run {row.name} submitted from {row.source}", file=out)
        for warning in row.warnings:
            print(f"  warning: {warning}", file=out)
    return [row.name for row in prepared]


def _library(directory: Path | None) -> dict[str, dict[str, Any]]:
    """The (Cluster)WorkflowTemplates in `directory`'s YAML files by name, built and managed."""
    if directory is None:
        return {}
    if not directory.is_dir():
        raise RunRefusedError(f"--templates {directory}: not a directory")
    found: dict[str, dict[str, Any]] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        for pipeline in load_pipelines(path):
            manifest = pipeline.to_dict()
            if manifest.get("kind") in {"WorkflowTemplate", "ClusterWorkflowTemplate"}:
                found[manifest["metadata"]["name"]] = manifest
    return found


def _inline_references(manifest: dict[str, Any], library: Mapping[str, Any]) -> None:
    """Copy every template a `templateRef` names from `library` into the workflow.

    The copy is named `<WorkflowTemplate>-<template>` (with what it calls in turn); a reference
    the library does not hold stays, and `check` names it.
    """
    templates: list[dict[str, Any]] = manifest["spec"].setdefault("templates", [])
    names = {t["name"] for t in templates}
    pending = list(templates)
    while pending:
        for task in calls(pending.pop()):
            ref = task.get("templateRef") or {}
            source = library.get(ref.get("name", ""))
            if source is None:
                continue
            local = _import(source, str(ref.get("template")), templates, names, pending)
            if local is not None:
                del task["templateRef"]
                task["template"] = local


def _import(
    source: Mapping[str, Any],
    name: str,
    templates: list[dict[str, Any]],
    names: set[str],
    pending: list[dict[str, Any]],
) -> str | None:
    prefix = source["metadata"]["name"]
    local = f"{prefix}-{name}"
    if local in names:
        return local
    original = {t["name"]: t for t in source["spec"].get("templates") or ()}.get(name)
    if original is None:
        return None
    template = copy.deepcopy(original)
    template["name"] = local
    names.add(local)
    templates.append(template)
    pending.append(template)
    for task in calls(template):
        if "template" in task:
            inner = _import(source, str(task["template"]), templates, names, pending)
            task["template"] = inner or task["template"]
    return local


def _workflow(manifest: dict[str, Any], path: Path) -> dict[str, Any]:
    """The Workflow to run: a template's spec as a workflow, a CronWorkflow's workflow once."""
    kind = manifest.get("kind")
    metadata = dict(manifest.get("metadata") or {})
    if kind == "CronWorkflow":
        spec = (manifest.get("spec") or {}).get("workflowSpec") or {}
        meta = (manifest.get("spec") or {}).get("workflowMetadata") or {}
        labels = {**(metadata.get("labels") or {}), **(meta.get("labels") or {})}
        metadata = {"generateName": f"{metadata.get('name', 'cron')}-", "labels": labels}
        return {
            "apiVersion": manifest.get("apiVersion"),
            "kind": "Workflow",
            "metadata": metadata,
            "spec": spec,
        }
    if kind in {"WorkflowTemplate", "ClusterWorkflowTemplate"}:
        name = metadata.pop("name", None)
        metadata["generateName"] = f"{name}-" if name else metadata.get("generateName", "run-")
        return {**manifest, "kind": "Workflow", "metadata": metadata}
    if kind != "Workflow":
        raise RunRefusedError(f"{path}: a {kind} cannot be run; give a Workflow")
    return manifest


def _parameters(
    manifest: Mapping[str, Any], given: Mapping[str, str], path: Path
) -> dict[str, str]:
    declared = {
        p["name"]: p
        for p in ((manifest.get("spec") or {}).get("arguments") or {}).get("parameters") or ()
    }
    if len(given) > _MAX_PARAMETERS or sum(len(v) for v in given.values()) > _MAX_PARAMETER_BYTES:
        raise RunRefusedError(
            f"at most {_MAX_PARAMETERS} parameters of {_MAX_PARAMETER_BYTES} bytes in all"
        )
    unknown = sorted(set(given) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise RunRefusedError(
            f"{path}: the workflow has no parameter {unknown[0]!r} (it has: {known})"
        )
    values = {}
    for name, parameter in declared.items():
        value = given.get(name, parameter.get("value", parameter.get("default")))
        if value is None:
            raise RunRefusedError(
                f"{path}: parameter {name!r} has no value; give it with -p {name}=VALUE"
            )
        allowed = parameter.get("enum")
        if allowed and str(value) not in [str(a) for a in allowed]:
            raise RunRefusedError(f"{path}: parameter {name}={value!r} must be one of {allowed}")
        values[name] = str(value)
    return values


def _asks_for_gpus(manifest: Mapping[str, Any]) -> bool:
    for template in (manifest.get("spec") or {}).get("templates") or ():
        container = template.get("script") or template.get("container")
        if container is None:
            continue
        pod = {"metadata": template.get("metadata") or {}, "spec": {"containers": [container]}}
        if asks_for_gpus(pod) or "aistack.io/gpu-memory-mib" in (
            pod["metadata"].get("annotations") or {}
        ):
            return True
    return False


def _name(manifest: dict[str, Any]) -> str:
    metadata = manifest.setdefault("metadata", {})
    if metadata.get("name"):
        return str(metadata["name"])
    suffix = "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
    name = f"{metadata.get('generateName', 'run-')}{suffix}"
    metadata["name"] = name
    return name


# -- scheduling or following ------------------------------------------------------------------


def _drive(
    store: Store,
    machine: Machine,
    *,
    config: LocalConfig,
    mine: list[str],
    options: RunOptions,
    out: TextIO,
    pages: DashboardServer | None = None,
) -> int:
    screen = Screen(out, live=options.live)
    runner: LocalRunner | None = None
    waker = _Waker()
    lock = None
    interrupted = told = False
    try:
        while True:
            if runner is None:
                lock = store.try_lock()
                if lock is not None:
                    mps = _mps_daemons(store, machine, options.gpu_sharing, out)
                    runner = _start_runner(store, machine, config, out, mps=mps, pages=pages)
                elif not told:
                    told = True
                    print(
                        f"another runner (pid {store.lock_holder()}) schedules {options.state}; "
                        "following its progress"
                        + ("; the dashboard shows its cycles once it ends" if pages else ""),
                        file=out,
                    )
            if runner is not None:
                runner.tick()
            _draw(screen, store, machine, mine, runner)
            rows = [store.run(name) for name in mine]
            if all(r is not None and not r.active for r in rows) and (
                runner is None or not runner.active
            ):
                break
            waker.wait(options.poll_seconds)
    except RunRefusedError as error:
        print(f"aistack: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        interrupted = True
        screen.release()
        if runner is not None:
            print(
                "\ninterrupted: stopping the steps (SIGTERM, then SIGKILL after the grace period)",
                file=out,
            )
            runner.interrupt(f"interrupted by the user (pid {os.getpid()})")
    finally:
        waker.close()
        if runner is not None:
            runner.close()
        if lock is not None:
            lock.release()
    _draw(screen, store, machine, mine, runner, force=True, summary=True)
    if interrupted:
        return 130
    rows = [store.run(name) for name in mine]
    return 0 if all(r is not None and r.phase == "Succeeded" for r in rows) else 1


def _mps_daemons(
    store: Store, machine: Machine, sharing: Literal["auto", "mps", "none"], out: TextIO
) -> MpsDaemons | None:
    """The MPS daemons that cap the runner's slices, or None where slices are only booked.

    Their directory is short (a socket path holds at most 107 bytes) and one per state
    directory, so two runners of two states never share a daemon.
    """
    if sharing == "none" or (sharing == "auto" and machine.source != "nvml"):
        return None
    digest = hashlib.sha256(str(store.directory.resolve()).encode()).hexdigest()[:8]
    daemons = MpsDaemons(Path(tempfile.gettempdir()) / f"aistack-mps-{digest}")
    unavailable = daemons.available()
    if unavailable and sharing == "mps":
        raise RunRefusedError(f"--gpu-sharing mps: {unavailable}")
    if unavailable:
        print(f"note: slices are booked but not capped on the GPU: {unavailable}", file=out)
        return None
    return daemons


def _start_runner(
    store: Store,
    machine: Machine,
    config: LocalConfig,
    out: TextIO,
    *,
    mps: MpsDaemons | None = None,
    pages: StatusPages | None = None,
) -> LocalRunner:
    """The runner of `store`, once it holds the lock; its steps must find their GPUs here."""
    held = {g for p in store.pods() if p.state in {"running", "stopping"} for g in p.gpus}
    missing = held - {g.uuid for g in machine.gpus}
    if missing:
        raise RunRefusedError(
            f"steps in {store.directory} hold GPUs this machine does not have "
            f"({', '.join(sorted(missing)[:4])}); resume with the GPUs they were started on "
            "(the same --simulate-gpus)"
        )
    store.put_setting("machine", json.dumps(machine_to_json(machine)))
    cgroups = Cgroups.detect()
    if isinstance(cgroups, Unsupported):
        print(f"note: {cgroups.reason}", file=out)
    for line in machine.describe():
        print(line, file=out)
    if mps is not None:
        print(f"slices are capped by MPS (daemons in {mps.root})", file=out)
    runner = LocalRunner(store, machine, config, cgroups=cgroups, mps=mps, pages=pages)
    runner.recover()
    return runner


def _draw(
    screen: Screen,
    store: Store,
    machine: Machine,
    mine: list[str],
    runner: LocalRunner | None,
    *,
    force: bool = False,
    summary: bool = False,
) -> None:
    now = time.time()
    lines: list[str] = []
    all_pods: list[PodRow] = []
    steps: dict[str, str] = {}
    names = {g.uuid: str(g.index) for g in machine.gpus}
    for name in mine:
        row = store.run(name)
        if row is None:
            continue
        if runner is not None and name in runner.runs:
            nodes = runner.runs[name].nodes
            pods = {p.name: p for p in runner.pods.values() if p.run == name}
        else:
            nodes = store.nodes(name)
            pods = {p.name: p for p in store.pods(name)}
        all_pods.extend(pods.values())
        for pod in pods.values():
            node = nodes.get(pod.node)
            if node is not None:
                steps[pod.name] = node.id.removeprefix(name + ".")
        lines.extend(run_lines(row, nodes, pods, now, gpu_names=names))
        if summary:
            lines.append(f"  logs: aistack logs {name} --local --state {store.directory}")
    if not summary:
        lines.extend(gpu_rows(machine, all_pods, steps))
    if summary:
        screen.final(lines)
    else:
        screen.draw(lines, force=force)


class _Waker:
    """Sleeps until a step's process ends (SIGCHLD) or the poll interval passes."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._installed = False
        try:
            self._previous_fd = signal.set_wakeup_fd(self._write)
            self._previous: Callable[..., Any] | int | None = signal.signal(
                signal.SIGCHLD, lambda *_: None
            )
            self._installed = True
        except ValueError:  # not the main thread: poll only
            pass

    def wait(self, seconds: float) -> None:
        select.select([self._read], [], [], seconds)
        try:
            while os.read(self._read, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self._installed:
            signal.set_wakeup_fd(self._previous_fd)
            signal.signal(signal.SIGCHLD, self._previous or signal.SIG_DFL)
        os.close(self._read)
        os.close(self._write)
