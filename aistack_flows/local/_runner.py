"""The local runner: workflow runs on this machine, their GPU steps admitted by the core.

One pass (`tick`) does, in order:

1. takes the runs added to the state since the last pass;
2. advances every run (`Run.advance`): new pods appear, finished ones complete their DAGs;
3. reads every new pod as the cluster would (`translate.parse_pod_request`): a pod with the
   queue label or asking for `nvidia.com/gpu` is a workload of the core (a gang once all its
   members exist); any other pod starts at once, with no GPU visible;
4. runs one core cycle (`Scheduler.cycle`, the service's path) and carries out its plan: an
   admitted workload's pods start with their GPUs in the environment (`pod_contract`'s
   variables, and CUDA_VISIBLE_DEVICES); an evicted one is stopped gracefully (SIGTERM to its
   process group, SIGKILL after the grace period) and its pod fails with the message a cluster
   writes, so the step's retry strategy retries it and it resumes from its checkpoint; with
   `mps`, a slice becomes a client of its GPU's MPS daemon, capped at its memory and compute
   (`scheduler_service.gpu_sharing`), and the daemons follow the running slices;
   Once a second the cycle also works out why each waiting workload waits: the reasons go on
   the waiting pods, and the cycle to the dashboard's pages when the runner has them
   (`StatusPages`, `aistack run --dashboard`);
5. watches the processes: an ended step's outputs are collected and its pod completes;
6. saves everything that changed in one transaction.

Nothing here reads the clock or sleeps except through `clock` and `serve`; the core decides.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aistack_flows.local._cgroups import Cgroups, Unsupported
from aistack_flows.local._config import LocalConfig, default_queues
from aistack_flows.local._pods import PodSpec
from aistack_flows.local._process import (
    EXIT_FILE,
    Exit,
    Launch,
    ProcessRef,
    alive,
    poll,
    signal_group,
    start,
)
from aistack_flows.local._store import Event, PodRow, RunRow, Store
from aistack_flows.local._workflow import MAX_RESULT_BYTES, Node, Phase, Run, RunError
from scheduler_service import pod_contract as contract
from scheduler_service.core import (
    GPU,
    GpuSlice,
    Plan,
    PodAllocation,
    QueueShare,
    Scheduler,
    SchedulerError,
    Snapshot,
    pending_order,
    queue_place,
    waiting_summary,
)
from scheduler_service.core import (
    Node as CoreNode,
)
from scheduler_service.gpu_discovery import Machine
from scheduler_service.gpu_sharing import MpsDaemons, MpsError, Share, daemon_defaults
from scheduler_service.translate import (
    PodRequest,
    PodRequestError,
    allocation_annotations,
    asks_for_gpus,
    never_fits,
    parse_pod_request,
)

__all__ = ["LocalRunner", "machine_node"]

_log = logging.getLogger(__name__)

_PYTHON = {"python", "python3"}

_ROUNDS = 8
"""The most advance-take-schedule rounds of one pass (each round after the first needs pods
that the previous one took and completed at once, such as a refused request)."""

TELL_WAITING_SECONDS = 1.0
"""How often a waiting step's reason is worked out again: its place in the queue moves with
every admission, and hundreds waiting would otherwise cost a rewrite each per pass."""
MPS_CHECK_SECONDS = 5.0
"""How often the MPS daemons of running slices are checked (one control command per GPU), to
start again one that died."""

_GANG_PORT_BASE = 29500


class StatusPages(Protocol):
    """Where the runner shows what its core decided: the dashboard's pages (`--dashboard`).

    The CLI gives the runner one (scheduler_service.dashboard.LocalPages); the runner calls
    `publish` once a second with what the cycle decided on, its plan with every waiting
    workload's reason, and each workload's run and pods (a gang's in rank order).
    """

    def publish(
        self,
        snapshot: Snapshot,
        plan: Plan,
        pods: Mapping[str, tuple[str, tuple[str, ...]]],
        cycle_at: float,
    ) -> None:
        """Show this cycle from now on (called from the runner's thread)."""


@dataclass(slots=True)
class _Stop:
    """A stop in progress: SIGTERM sent, SIGKILL due at `kill_at`; the pod's message after."""

    kill_at: float
    message: str


def machine_node(machine: Machine, pool: str | None) -> CoreNode:
    """This machine as the core's node: its GPUs, CPUs and memory, in its pool."""
    gpus = tuple(
        GPU(
            index=g.index,
            uuid=g.uuid,
            model=g.model,
            memory_mib=g.memory_mib,
            numa_node=g.numa_node,
        )
        for g in machine.gpus
    )
    host = socket.gethostname().split(".")[0].lower() or "local"
    model_pool = machine.gpus[0].model if machine.gpus else "cpu"
    return CoreNode(
        name=host,
        pool=pool or model_pool,
        gpus=gpus,
        cpu_milli=(os.cpu_count() or 1) * 1000,
        memory_mib=_memory_mib(),
        topology=(("host", host),),
    )


class LocalRunner:
    """Runs the state directory's runs (see the module docstring). Hold the store's lock first."""

    def __init__(
        self,
        store: Store,
        machine: Machine,
        config: LocalConfig,
        *,
        clock: Callable[[], float] = time.time,
        cgroups: Cgroups | Unsupported | None = None,
        mps: MpsDaemons | None = None,
        pages: StatusPages | None = None,
    ) -> None:
        self.store = store
        self.machine = machine
        self.config = config
        self.clock = clock
        self.node = machine_node(machine, config.pool)
        queues = config.resolve_queues(self.node.pool)
        self._fixed_queues = queues is not None
        self.scheduler = Scheduler([self.node], queues or ())
        self._queue_names: tuple[str, ...] = tuple(q.name for q in queues or ())
        self.cgroups = cgroups
        self.mps = mps
        """Enforces slices with one MPS daemon per GPU that hosts one; None: slices are not
        capped (booked only)."""
        self.pages = pages
        """Shown each explained cycle (`--dashboard`); None: no pages."""
        self._mps_shares: dict[str, Share] = {}
        self._mps_check_at = 0.0
        self.runs: dict[str, Run] = {}
        self.rows: dict[str, RunRow] = {}
        self.pods: dict[str, PodRow] = {}
        self._requests: dict[str, PodRequest] = {}
        self._members: dict[str, list[str]] = {}
        """Workload name -> its pods (a gang's in rank order)."""
        self._stops: dict[str, _Stop] = {}
        self._events: list[Event] = []
        self._dirty: set[str] = set()
        self._ports: dict[str, int] = {}
        self._told_at = -TELL_WAITING_SECONDS

    # -- start-up ---------------------------------------------------------------------------

    def recover(self) -> None:
        """Take up the runs a previous runner left: adopt their processes, requeue the rest."""
        now = self.clock()
        for row in self.store.runs(active=True):
            self._open(row, now)
        for pod in self.store.pods():
            if pod.run not in self.runs or pod.state == "done":
                continue
            self.pods[pod.name] = pod
            node = self.runs[pod.run].nodes[pod.node]
            if node.complete:
                pod.state = "done"
                self._dirty.add(pod.name)
                continue
            if pod.state == "waiting":
                continue  # submitted again below, by `_take_new_pods`
            ref = ProcessRef.from_json(pod.process) if pod.process else None
            running = ref is not None and (alive(ref) or _has_record(node))
            if pod.workload is not None:
                self._adopt(pod, node, running=running, now=now)
            if pod.state == "stopping":
                self._stops[pod.name] = _Stop(now + self._grace(pod), pod.stop_message)
            self._event(
                pod.run,
                node.name,
                "Recovered",
                f"pod {pod.name}: process "
                f"{'still running' if running else 'gone'} after the runner restarted",
            )
        self._refresh_queues()

    def _adopt(self, pod: PodRow, node: Node, *, running: bool, now: float) -> None:
        """Tell the core about a pod that already holds GPUs (its workload's first member only)."""
        assert pod.workload is not None
        assert node.pod is not None
        members = self._members.setdefault(pod.workload, [])
        members.append(pod.name)
        request = self._parse(node.pod, pod)
        if request is None:
            return
        self._requests[pod.name] = request
        if len(members) < request.gang_size:
            return
        workload = request.workload(pod.workload, submitted_at=now)
        allocation = tuple(
            PodAllocation(
                node=self.node.name,
                gpus=tuple(self.pods[m].gpus),
                slice=_slice(self.pods[m].slice),
            )
            for m in members
        )
        self.scheduler.submit(workload)
        self.scheduler.started(pod.workload, allocation, now)
        if pod.state == "stopping":
            self.scheduler.evicting(pod.workload)

    def _open(self, row: RunRow, now: float) -> None:
        directory = self.store.run_directory(row.name)
        self.runs[row.name] = Run(
            row.manifest,
            name=row.name,
            uid=row.uid,
            directory=str(directory),
            created_at=row.created_at,
            nodes=self.store.nodes(row.name),
            parameters=row.parameters,
        )
        self.rows[row.name] = row
        if row.phase == "Pending":
            row.phase = "Running"
            self._event(row.name, row.name, "Started", f"run {row.name} started")
            self._dirty.add(f"run:{row.name}")
        del now

    # -- the pass ---------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return any(row.active for row in self.rows.values()) or any(
            p.state != "done" for p in self.pods.values()
        )

    def tick(self) -> None:
        """One pass (see the module docstring).

        Ends are read first, so that the GPUs and the steps they free are given out in the same
        pass; the runs are then advanced, new pods taken and scheduled, again while that takes
        new pods (a pod refused at once completes, which may let the run go on).
        """
        now = self.clock()
        for row in self.store.runs(active=True):
            if row.name not in self.runs:
                self._open(row, now)
        self._watch(now)
        for _ in range(_ROUNDS):
            for name, run in list(self.runs.items()):
                if self.rows[name].active:
                    self._advance(run, now)
            taken = self._take_new_pods(now)
            self._refresh_queues()
            self._schedule(now)
            if not taken:
                break
        self._tend_mps()
        self._save()

    def close(self) -> None:
        """Stop the MPS daemons once no step runs any more (the runner's last act)."""
        if self.mps is not None and not any(
            p.state in {"running", "stopping"} for p in self.pods.values()
        ):
            try:
                self.mps.stop_all()
            except MpsError as error:
                print(f"aistack: warning: {error}", file=sys.stderr)

    def _advance(self, run: Run, now: float) -> None:
        row = self.rows[run.name]
        try:
            run.advance(now)
        except RunError as error:
            self._finish_run(row, Phase.ERROR, str(error), now)
            return
        except Exception as error:  # a bug met in one run must not stop the others
            _log.exception("run %s: the runner failed on it", run.name)
            self._finish_run(row, Phase.ERROR, f"the runner failed on this run: {error!r}", now)
            return
        phase = run.phase
        if phase in {Phase.SUCCEEDED, Phase.FAILED, Phase.ERROR}:
            if any(not n.complete for n in run.pods()):
                return  # a failed DAG waits for its running steps (Argo's failFast does too)
            root = run.nodes.get(run.name)
            self._finish_run(row, phase, root.message if root else "", now)

    def _finish_run(self, row: RunRow, phase: Phase, message: str, now: float) -> None:
        if not row.active:
            return
        if phase is Phase.ERROR:
            for pod in self.pods.values():
                if pod.run == row.name and pod.state in {"running", "waiting"}:
                    self._stop(pod, f"run {row.name} ended: {message}", now)
        row.phase = phase.value
        row.finished_at = now
        row.message = message
        self._dirty.add(f"run:{row.name}")
        self._event(
            row.name,
            row.name,
            phase.value,
            f"run {row.name} {phase.value.lower()}" + (f": {message}" if message else ""),
        )

    def _take_new_pods(self, now: float) -> int:
        """Start or submit the pods the runs created; how many were taken."""
        taken = 0
        gangs: dict[str, list[str]] = {}
        for run in self.runs.values():
            if not self.rows[run.name].active:
                continue
            for node in run.pods():
                assert node.pod is not None
                known = self.pods.get(node.pod.name)
                if node.complete or (
                    known is not None and (known.state != "waiting" or known.name in self._requests)
                ):
                    continue
                pod = known or PodRow(name=node.pod.name, run=run.name, node=node.id, workload=None)
                self.pods[pod.name] = pod
                taken += 1
                self._dirty.add(pod.name)
                if not _managed(node.pod):
                    self._launch(pod, node, run, allocation=None, now=now)
                    continue
                request = self._parse(node.pod, pod)
                if request is None:
                    continue
                self._requests[pod.name] = request
                pod.queue = request.queue
                if request.gang is None:
                    pod.workload = pod.name
                    self._members[pod.name] = [pod.name]
                    self._submit(pod.name, request, now)
                else:
                    gangs.setdefault(f"{run.name}/{request.gang}", []).append(pod.name)
        for key, names in gangs.items():
            waiting = self._members.setdefault(key, [])
            waiting.extend(n for n in names if n not in waiting)
            for name in waiting:
                self.pods[name].workload = key
            first = self._requests[waiting[0]]
            if len(waiting) == first.gang_size:
                waiting.sort(key=lambda n: int(_rank(self._node_of(n))))
                self._submit(key, first, now)
        return taken

    def _parse(self, spec: PodSpec, pod: PodRow) -> PodRequest | None:
        manifest = spec.pod
        labels = manifest["metadata"]["labels"]
        if contract.QUEUE_LABEL not in labels:
            labels[contract.QUEUE_LABEL] = "default"  # as a namespace's default queue would
        try:
            return parse_pod_request(manifest)
        except PodRequestError as error:
            self._fail(pod, Phase.ERROR, f"the scheduler cannot read the step's request: {error}")
            return None

    def _submit(self, name: str, request: PodRequest, now: float) -> None:
        why = self._never_fits(request)
        if self._fixed_queues and request.queue not in self._queue_names:
            why = (
                f"queue {request.queue!r} is not in the settings "
                f"(queues: {', '.join(self._queue_names) or 'none'})"
            )
        if why:
            for member in self._members.get(name, []):
                self._fail(self.pods[member], Phase.ERROR, f"it can never run here: {why}")
            return
        try:
            self.scheduler.submit(request.workload(name, submitted_at=now))
        except SchedulerError as error:
            for member in self._members.get(name, []):
                self._fail(self.pods[member], Phase.ERROR, str(error))
            return
        run = self.pods[self._members[name][0]].run
        self._event(
            run,
            self._node_of(self._members[name][0]).name,
            "Submitted",
            f"workload {name} asks queue {request.queue} for {_asks(request)}",
        )

    def _never_fits(self, request: PodRequest) -> str:
        """Why this machine could never hold the workload, even idle; "" when it could."""
        why = never_fits(request, [self.node])
        total = request.gang_size * request.request.gpus
        if not why and total > len(self.node.gpus):
            why = (
                f"the gang asks for {request.gang_size} pods x {request.request.gpus} GPUs = "
                f"{total}, and this machine has {len(self.node.gpus)}"
            )
        return why

    def _refresh_queues(self) -> None:
        """Without configured queues: the active runs' queues share the machine equally."""
        if self._fixed_queues:
            return
        # Every workload the core holds has a pod not done yet, so no queue in use is dropped.
        wanted = tuple(
            sorted({p.queue for p in self.pods.values() if p.queue and p.state != "done"})
        )
        if wanted != self._queue_names:
            self._queue_names = wanted
            self.scheduler.set_queues(default_queues(wanted, self.node.pool, len(self.node.gpus)))

    # -- the core's plan --------------------------------------------------------------------

    def _schedule(self, now: float) -> None:
        if not self._members and self.pages is None:
            return
        # The reasons of what waits (phase 6) cost time in what waits, every cycle: they are
        # worked out when they are told, once a second; the decisions are the same either way.
        explain = now - self._told_at >= TELL_WAITING_SECONDS
        plan = self.scheduler.cycle(now, explain=explain)
        if explain and self.pages is not None:
            self._publish(self.pages, plan, now)
        for eviction in plan.evictions:
            self.scheduler.evicting(eviction.workload)
            message = contract.EVICTION_MESSAGE_PREFIX + eviction.message
            for name in self._members[eviction.workload]:
                self._stop(self.pods[name], message, now)
                self._event(
                    self.pods[name].run, self._node_of(name).name, eviction.cause.value, message
                )
        for admission in plan.admissions:
            self.scheduler.started(admission.workload, admission.allocation, now)
            members = self._members[admission.workload]
            for name, placed in zip(members, admission.allocation, strict=True):
                pod = self.pods[name]
                run = self.runs[pod.run]
                self._launch(pod, run.nodes[pod.node], run, allocation=placed, now=now)
        if explain:
            self._told_at = now
            self._tell_waiting(plan)

    def _publish(self, pages: StatusPages, plan: Plan, now: float) -> None:
        """Show the cycle just run: what it decided on (the cycle changed nothing) and its plan.

        Each workload's pods are shown under its run, which the pages treat as its namespace
        and its workflow (a gang's name, `<run>/<gang>`, reads as the gang in that run).
        """
        pods = {
            workload: (self.pods[members[0]].run, tuple(members))
            for workload, members in self._members.items()
            if members
        }
        pages.publish(self.scheduler.snapshot(), plan, pods, now)

    def _tell_waiting(self, plan: Plan) -> None:
        shares: dict[str, dict[str, QueueShare]] = {}
        for share in plan.shares:
            shares.setdefault(share.queue, {})[share.pool] = share
        workloads = {w.name: w for w in self.scheduler.snapshot().workloads}
        places = {
            name: queue_place(position, len(order))
            for order in pending_order(workloads.values()).values()
            for position, name in enumerate(order, start=1)
        }
        for entry in plan.pending:
            workload = workloads[entry.workload]
            text = waiting_summary(
                workload, places[workload.name], shares.get(workload.queue, {}), entry.reason
            )
            for name in self._members[entry.workload]:
                pod = self.pods[name]
                if pod.waiting != text:
                    pod.waiting = text
                    self._dirty.add(name)

    # -- processes --------------------------------------------------------------------------

    def _launch(
        self, pod: PodRow, node: Node, run: Run, *, allocation: PodAllocation | None, now: float
    ) -> None:
        spec = node.pod
        assert spec is not None
        env = dict(os.environ)
        env.update(spec.env)
        env["PYTHONUNBUFFERED"] = "1"
        if allocation is None:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a step that asked for no GPU sees none
            env["NVIDIA_VISIBLE_DEVICES"] = "void"
        else:
            annotations = allocation_annotations(
                allocation, _rfc3339(now), sharing="mps" if self.mps is not None else "none"
            )
            for variable, annotation, _slices_only in contract.ALLOCATION_ENVIRONMENT:
                if annotation in annotations:
                    env[variable] = annotations[annotation]
            env["CUDA_VISIBLE_DEVICES"] = annotations[contract.GPUS_ANNOTATION]
            pod.gpus = list(allocation.gpus)
            pod.slice = (
                None
                if allocation.slice is None
                else [allocation.slice.memory_mib, allocation.slice.compute_percent]
            )
            pod.admitted_at = now
            if self.machine.source == "simulated":
                env["AISTACK_SIMULATED_GPUS"] = "1"
        if allocation is not None and allocation.slice is not None and self.mps is not None:
            problem = self._mps_client(env, allocation.gpus[0], allocation.slice)
            if problem:
                self._fail(pod, Phase.ERROR, problem)
                self._release(pod)
                return
        request = self._requests.get(pod.name)
        if request is not None and request.gang is not None:
            env.update(self._gang_environment(pod))
        try:
            _prepare(spec)
        except OSError as error:
            self._fail(pod, Phase.ERROR, f"could not prepare the step's files: {error}")
            self._release(pod)
            return
        argv = list(spec.argv)
        if argv and argv[0] in _PYTHON:
            argv[0] = sys.executable
        cgroups = self.cgroups if isinstance(self.cgroups, Cgroups) else None
        try:
            ref = start(
                Launch(
                    argv=tuple(argv),
                    cwd=Path(spec.workdir),
                    env=env,
                    directory=Path(spec.directory),
                    cpu_milli=spec.cpu_milli,
                    memory_mib=spec.memory_mib,
                ),
                cgroups=cgroups,
            )
        except OSError as error:
            self._fail(pod, Phase.ERROR, f"could not start the step: {error}")
            self._release(pod)
            return
        pod.process = ref.to_json()
        pod.state = "running"
        pod.waiting = ""
        self._dirty.add(pod.name)
        where = "no GPU" if allocation is None else _describe_allocation(allocation, self.machine)
        run.pod_started(node.id, now, f"running on {where}")
        self._event(run.name, node.name, "Started", f"pod {pod.name} started on {where}")

    def _mps_client(self, env: dict[str, str], uuid: str, share: GpuSlice) -> str:
        """Make `env` a capped client of GPU `uuid`'s daemon, started first if need be.

        Returns why it could not (the step then fails rather than run uncapped), else "".
        """
        assert self.mps is not None
        wanted = self._wanted_mps_shares()
        wanted[uuid] = daemon_defaults(
            [
                Share(share.memory_mib, share.compute_percent),
                *([wanted[uuid]] if uuid in wanted else []),
            ]
        )
        try:
            self.mps.ensure(wanted)
        except MpsError as error:
            if uuid in error.failures:
                return f"its slice could not be capped: {error.failures[uuid]}"
        self._mps_shares = wanted
        self._mps_check_at = time.monotonic() + MPS_CHECK_SECONDS
        env.update(self.mps.client_environment(uuid, share.memory_mib, share.compute_percent))
        return ""

    def _wanted_mps_shares(self) -> dict[str, Share]:
        """Each GPU's daemon defaults: the largest of the slices its running steps hold."""
        slices: dict[str, list[Share]] = {}
        for pod in self.pods.values():
            if pod.state in {"running", "stopping"} and pod.slice is not None and pod.gpus:
                slices.setdefault(pod.gpus[0], []).append(Share(*pod.slice))
        return {uuid: daemon_defaults(shares) for uuid, shares in slices.items()}

    def _tend_mps(self) -> None:
        """Lower or stop daemons whose slices ended; every few seconds, restart a dead one."""
        if self.mps is None:
            return
        wanted = self._wanted_mps_shares()
        now = time.monotonic()
        if wanted == self._mps_shares and (not wanted or now < self._mps_check_at):
            return
        try:
            self.mps.ensure(wanted)
        except MpsError as error:
            print(f"aistack: warning: {error}", file=sys.stderr)
        self._mps_shares = wanted
        self._mps_check_at = now + MPS_CHECK_SECONDS

    def _gang_environment(self, pod: PodRow) -> dict[str, str]:
        """Gang members meet on this machine: rank 0 listens on a port free for this gang."""
        assert pod.workload is not None
        port = self._ports.get(pod.workload)
        if port is None:
            port = self._ports[pod.workload] = _free_port()
        return {
            "MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "PET_MASTER_PORT": str(port),
        }

    def _stop(self, pod: PodRow, message: str, now: float) -> None:
        """Stop a pod's step gracefully: SIGTERM now, SIGKILL after the grace period."""
        if pod.state == "waiting":
            self._fail(pod, Phase.FAILED, message)
            self._release(pod)
            return
        if pod.state != "running":
            return
        pod.state = "stopping"
        pod.stop_message = message
        pod.kill_at = now + self._grace(pod)
        self._stops[pod.name] = _Stop(pod.kill_at, message)
        self._dirty.add(pod.name)
        if pod.process:
            signal_group(ProcessRef.from_json(pod.process), signal.SIGTERM)

    def _grace(self, pod: PodRow) -> float:
        """SIGTERM to SIGKILL: the pod's terminationGracePeriodSeconds, else the setting."""
        spec = self._node_of(pod.name).pod
        chosen = spec.grace_seconds if spec is not None else None
        return self.config.stop_grace_seconds if chosen is None else chosen

    def _watch(self, now: float) -> None:
        for pod in list(self.pods.values()):
            if pod.state not in {"running", "stopping"} or not pod.process:
                continue
            ref = ProcessRef.from_json(pod.process)
            run = self.runs[pod.run]
            node = run.nodes[pod.node]
            assert node.pod is not None
            ended = poll(ref, Path(node.pod.directory))
            if ended is None:
                stop = self._stops.get(pod.name)
                if stop is not None and now >= stop.kill_at:
                    signal_group(ref, signal.SIGKILL)
                elif stop is None and _past_deadline(node, now):
                    self._stop(
                        pod, f"activeDeadlineSeconds {node.pod.deadline_seconds:g} exceeded", now
                    )
                continue
            self._ended(pod, node, ended, now)

    def _ended(self, pod: PodRow, node: Node, ended: Exit, now: float) -> None:
        spec = node.pod
        assert spec is not None
        stop = self._stops.pop(pod.name, None)
        outputs: dict[str, Any] = {
            "exitCode": ended.exit_code if ended.exit_code is not None else -1
        }
        if stop is not None:
            phase, message = Phase.FAILED, stop.message
        elif ended.succeeded:
            phase, message = Phase.SUCCEEDED, ""
            problem = _collect(spec, outputs, self.store.run_directory(pod.run), node.id)
            if problem:
                phase, message = Phase.FAILED, problem
        else:
            phase, message = (Phase.ERROR if ended.error else Phase.FAILED), ended.describe()
        self.runs[pod.run].pod_finished(node.id, phase, message, outputs, now)
        self._event(pod.run, node.name, phase.value, f"pod {pod.name}: {message or 'succeeded'}")
        pod.state = "done"
        self._dirty.add(pod.name)
        self._release(pod)
        if phase is not Phase.SUCCEEDED and pod.workload is not None:
            # A gang stands or falls together: the other members are stopped too.
            for other in self._members.get(pod.workload, []):
                if other != pod.name:
                    self._stop(self.pods[other], f"gang member {pod.name} ended: {message}", now)

    def _release(self, pod: PodRow) -> None:
        """The core forgets the workload once none of its pods holds anything."""
        name = pod.workload
        if name is None or any(
            self.pods[m].state not in {"done"} for m in self._members.get(name, [])
        ):
            return
        with contextlib.suppress(SchedulerError):  # never submitted (a bad request)
            self.scheduler.finished(name)
        self._members.pop(name, None)
        self._ports.pop(name, None)

    def _fail(self, pod: PodRow, phase: Phase, message: str) -> None:
        pod.state = "done"
        self._dirty.add(pod.name)
        now = self.clock()
        self.runs[pod.run].pod_finished(pod.node, phase, message, {}, now)
        self._event(
            pod.run, self._node_of(pod.name).name, phase.value, f"pod {pod.name}: {message}"
        )

    def interrupt(self, message: str) -> None:
        """End every run now (the user interrupted the runner): its steps are stopped gracefully.

        Blocks for at most the grace period, then kills what is left.
        """
        now = self.clock()
        for row in self.rows.values():
            if row.active:
                for pod in self.pods.values():
                    if pod.run == row.name and pod.state in {"running", "waiting"}:
                        self._stop(pod, message, now)
                self._finish_run(row, Phase.FAILED, message, now)
        deadline = time.monotonic() + self.config.stop_grace_seconds
        while any(p.state == "stopping" for p in self.pods.values()):
            if time.monotonic() >= deadline:
                for pod in self.pods.values():
                    if pod.state == "stopping" and pod.process:
                        signal_group(ProcessRef.from_json(pod.process), signal.SIGKILL)
            self._watch(self.clock())
            time.sleep(0.05)
        self._save()

    # -- bookkeeping ------------------------------------------------------------------------

    def _node_of(self, pod_name: str) -> Node:
        pod = self.pods[pod_name]
        return self.runs[pod.run].nodes[pod.node]

    def _event(self, run: str, subject: str, kind: str, message: str) -> None:
        self._events.append(Event(self.clock(), run, subject, kind, message))

    def _save(self) -> None:
        changed = {name: run.changed for name, run in self.runs.items() if run.changed}
        if not (changed or self._dirty or self._events):
            return
        with self.store.transaction() as store:
            for name, ids in changed.items():
                run = self.runs[name]
                store.put_nodes(
                    name, (run.nodes[i] for i in sorted(ids, key=list(run.nodes).index))
                )
            for key in self._dirty:
                if key.startswith("run:"):
                    store.put_run(self.rows[key[4:]])
                elif key in self.pods:
                    store.put_pod(self.pods[key])
            store.add_events(self._events)
        for run in self.runs.values():
            run.changed.clear()
        self._dirty.clear()
        self._events.clear()
        for name in [n for n, row in self.rows.items() if not row.active]:
            if not any(p.run == name and p.state != "done" for p in self.pods.values()):
                self.runs.pop(name)
                self.rows.pop(name)
                for pod in [p for p in self.pods.values() if p.run == name]:
                    self.pods.pop(pod.name)
                    self._requests.pop(pod.name, None)


# -- helpers ----------------------------------------------------------------------------------


def _managed(spec: PodSpec) -> bool:
    """Whether the scheduler decides for this pod: it names a queue or asks for GPUs."""
    return contract.QUEUE_LABEL in spec.pod["metadata"]["labels"] or asks_for_gpus(spec.pod)


def _slice(share: list[int] | None) -> GpuSlice | None:
    return None if share is None else GpuSlice(memory_mib=share[0], compute_percent=share[1])


def _rank(node: Node) -> str:
    rank = (node.inputs.get("parameters") or {}).get("aistack-gang-rank", "0")
    return str(rank) if str(rank).isdigit() else "0"


def _asks(request: PodRequest) -> str:
    what = request.request
    if what.is_slice:
        each = f"a slice of {what.gpu_memory_mib} MiB / {what.gpu_compute_percent}%"
    else:
        each = f"{what.gpus} GPU(s)"
    return each if request.gang_size == 1 else f"{request.gang_size} pods x {each}"


def _describe_allocation(allocation: PodAllocation, machine: Machine) -> str:
    index = {g.uuid: g.index for g in machine.gpus}
    gpus = ",".join(str(index.get(u, u)) for u in allocation.gpus)
    simulated = " (simulated)" if machine.source == "simulated" else ""
    if allocation.slice is not None:
        return (
            f"GPU {gpus}{simulated}, slice {allocation.slice.memory_mib // 1024} GiB / "
            f"{allocation.slice.compute_percent}%"
        )
    return f"GPU {gpus}{simulated}"


def _prepare(spec: PodSpec) -> None:
    """The step's files before it starts: directories, input artifacts, its script."""
    root = Path(spec.directory) / "root"
    root.mkdir(parents=True, exist_ok=True)
    for directory in spec.directories:
        Path(directory).mkdir(parents=True, exist_ok=True)
    Path(spec.workdir).mkdir(parents=True, exist_ok=True)
    for source, destination in spec.input_artifacts:
        _copy(Path(source), Path(destination))
    for data, destination in spec.raw_artifacts:
        Path(destination).write_text(data)
    if spec.script is not None and spec.script_path is not None:
        Path(spec.script_path).write_text(spec.script)


def _collect(spec: PodSpec, outputs: dict[str, Any], run_directory: Path, node_id: str) -> str:
    """Read a succeeded step's outputs into `outputs`; a problem as text, or ""."""
    stdout = Path(spec.directory) / "stdout"
    if stdout.exists():
        with stdout.open("rb") as handle:
            outputs["result"] = handle.read(MAX_RESULT_BYTES).decode(errors="replace").rstrip("\n")
    parameters: dict[str, str] = {}
    for parameter in spec.output_parameters:
        path = parameter["path"]
        if path and Path(path).is_file():
            parameters[parameter["name"]] = Path(path).read_text(errors="replace").rstrip("\n")
        elif parameter.get("default") is not None:
            parameters[parameter["name"]] = str(parameter["default"])
        else:
            return f"output parameter {parameter['name']}: the step wrote no {path}"
    outputs["parameters"] = parameters
    artifacts: dict[str, str] = {}
    for artifact in spec.output_artifacts:
        source = Path(artifact["path"])
        if not source.exists():
            if artifact["optional"]:
                continue
            return f"output artifact {artifact['name']}: the step wrote nothing at its path"
        kept = run_directory / "artifacts" / _safe(node_id) / artifact["name"] / source.name
        _copy(source, kept)
        artifacts[artifact["name"]] = str(kept)
    outputs["artifacts"] = artifacts
    return ""


def _copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, destination, dirs_exist_ok=True)
    else:
        shutil.copy2(source, destination)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def _has_record(node: Node) -> bool:
    return node.pod is not None and (Path(node.pod.directory) / EXIT_FILE).exists()


def _past_deadline(node: Node, now: float) -> bool:
    assert node.pod is not None
    limit = node.pod.deadline_seconds
    return limit is not None and node.started_at is not None and now - node.started_at > limit


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _memory_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 512 * 1024


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
