"""`aistack list|status|explain|logs --local`: local runs, read back from their state directory.

The same questions as on a cluster, answered from the database the runner keeps: which runs
there are, what each step is doing and on which GPUs, why a step waits (the scheduler's words
and numbers, as on a pod), what happened to it (admitted, evicted, retried), and its log.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aistack_flows.local._process import LOG_FILE
from aistack_flows.local._store import RunRow, Store
from aistack_flows.local._view import step_rows
from scheduler_service.gpu_discovery import machine_from_json

__all__ = ["RunNotFoundError", "explain_lines", "find_run", "list_rows", "logs", "status_rows"]

Row = dict[str, Any]


class RunNotFoundError(LookupError):
    """No run or step by that name; the message lists what there is."""


def find_run(store: Store, name: str) -> RunRow:
    """The run `name`, or the only run whose name starts with it."""
    row = store.run(name)
    if row is not None:
        return row
    runs = store.runs()
    matches = [r for r in runs if r.name.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(r.name for r in runs[-5:]) or "none yet"
    raise RunNotFoundError(f"no local run {name!r} in {store.directory} (latest: {known})")


def list_rows(store: Store) -> list[Row]:
    now = time.time()
    rows = []
    for run in store.runs():
        nodes = store.nodes(run.name)
        steps = step_rows(run.name, nodes, {})
        done = sum(1 for s in steps if s.phase in {"Succeeded", "Skipped", "Omitted"})
        rows.append(
            {
                "name": run.name,
                "phase": run.phase,
                "steps": f"{done}/{len(steps)}",
                "duration": f"{(run.finished_at or now) - run.created_at:.1f}s",
                "source": run.source,
                "message": run.message,
            }
        )
    return rows


def status_rows(store: Store, run: RunRow) -> list[Row]:
    pods = {p.name: p for p in store.pods(run.name)}
    rows = []
    for step in step_rows(run.name, store.nodes(run.name), pods, _gpu_names(store)):
        pod = pods.get(step.pod)
        rows.append(
            {
                "step": step.step,
                "phase": step.phase,
                "queue": pod.queue if pod else "",
                "gpus": step.gpus,
                "attempts": step.attempts,
                "progress": f"{step.done}/{step.total}" if step.fan_out else "",
                "message": step.message,
            }
        )
    return rows


def explain_lines(store: Store, run: RunRow) -> list[str]:
    """Each GPU step: why it waits (or where it runs), then its history of events."""
    pods = {p.name: p for p in store.pods(run.name)}
    nodes = store.nodes(run.name)
    lines = [f"{run.name}: {run.phase}" + (f" ({run.message})" if run.message else "")]
    events: dict[str, list[str]] = {}
    for _, event in store.events(run.name):
        stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
        events.setdefault(event.subject, []).append(f"{stamp} {event.kind}: {event.message}")
    for pod in pods.values():
        node = nodes.get(pod.node)
        if node is None or pod.workload is None:
            continue
        lines.append(f"{node.name} (pod {pod.name}, queue {pod.queue}): {node.phase.value}")
        if pod.state == "waiting" and pod.waiting:
            lines.append(f"  waiting: {pod.waiting}")
        elif node.message:
            lines.append(f"  {node.message}")
        lines.extend(f"  {entry}" for entry in events.get(node.name, []))
    if len(lines) == 1:
        lines.append("no step of this run asks for GPUs")
    return lines


def logs(store: Store, run: RunRow, step: str | None) -> str:
    """The log of every pod of the run (or of the steps whose name starts with `step`)."""
    nodes = store.nodes(run.name)
    chosen = []
    for node in nodes.values():
        if node.pod is None:
            continue
        name = node.id.removeprefix(run.name + ".")
        if step is None or name.startswith(step) or node.name.startswith(step):
            chosen.append((name, node.pod.directory))
    if not chosen:
        steps = sorted({n.id.removeprefix(run.name + ".") for n in nodes.values() if n.pod})
        raise RunNotFoundError(
            f"run {run.name} has no step {step!r} (steps: {', '.join(steps[:20])})"
        )
    parts = []
    for name, directory in chosen:
        try:
            with open(f"{directory}/{LOG_FILE}", "rb") as handle:
                text = handle.read().decode(errors="replace")
        except OSError:
            text = "(no log: the step has not started)\n"
        parts.append(text if len(chosen) == 1 else f"==> {name} <==\n{text}")
    return "".join(parts)


def _gpu_names(store: Store) -> dict[str, str]:
    """GPU UUID -> its index, from the machine the last runner recorded."""
    recorded = store.setting("machine")
    if recorded is None:
        return {}
    return {g.uuid: str(g.index) for g in machine_from_json(json.loads(recorded)).gpus}
