"""What a person sees of local runs: one row per step, the GPUs, a progress bar per fan-out.

`step_rows` and `gpu_rows` turn a run's nodes and pods (live from the runner, or read back from
the state database) into rows; `Screen` draws them in place on a terminal, and on anything else
(a pipe, a CI log) prints one line per change instead. `aistack status`, `explain` and the
final summary use the same rows.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from aistack_flows.local._store import PodRow, RunRow
from aistack_flows.local._workflow import COMPLETE, Node, Phase
from scheduler_service.gpu_discovery import Machine

__all__ = ["Screen", "StepRow", "gpu_rows", "run_lines", "step_rows"]

_BAR = 20
_SYMBOLS = {
    "Pending": ".",
    "Running": ">",
    "Succeeded": "+",
    "Failed": "x",
    "Error": "!",
    "Skipped": "-",
    "Omitted": "-",
}


@dataclass(frozen=True, slots=True)
class StepRow:
    """One step of a run as shown: a pod (its latest attempt) or a fan-out's progress."""

    step: str
    phase: str
    attempts: int = 1
    gpus: str = ""
    message: str = ""
    done: int = 0
    total: int = 0
    pod: str = ""

    @property
    def fan_out(self) -> bool:
        return self.total > 0


def step_rows(
    run: str,
    nodes: Mapping[str, Node],
    pods: Mapping[str, PodRow],
    gpu_names: Mapping[str, str] | None = None,
) -> list[StepRow]:
    """The run's steps in the order they were created; fan-out members summed up.

    `gpu_names` shows a GPU by its index on the machine rather than its UUID.
    """
    rows: list[StepRow] = []
    for node in nodes.values():
        parent = nodes.get(node.parent or "")
        if node.type in {"DAG", "Steps", "StepGroup"} or (
            parent is not None and parent.type in {"TaskGroup", "Retry"}
        ):
            continue
        name = node.id.removeprefix(run + ".") if node.id != run else node.id
        name = name.replace(".[", "[")
        if node.type == "TaskGroup":
            members = [nodes[c] for c in node.children]
            total = int(node.inputs.get("items", len(members)))
            done = sum(1 for m in members if m.phase in COMPLETE)
            running = sum(1 for m in members if m.phase is Phase.RUNNING or _running(m, nodes))
            failed = sum(1 for m in members if m.phase in {Phase.FAILED, Phase.ERROR})
            phase = node.phase.value if node.complete else ("Running" if running else "Pending")
            waiting = len(members) - done - running
            parts = [f"{running} running"] if running else []
            if waiting:
                parts.append(f"{waiting} waiting")
            if failed:
                parts.append(f"{failed} failed")
            rows.append(
                StepRow(
                    name, phase, done=done, total=total, message=", ".join(parts) or node.message
                )
            )
            continue
        attempt = node
        attempts = 1
        if node.type == "Retry":
            attempts = max(1, len(node.children))
            attempt = nodes[node.children[-1]] if node.children else node
            while attempt.type == "Retry" and attempt.children:
                attempt = nodes[attempt.children[-1]]
        pod = pods.get(attempt.pod.name) if attempt.pod is not None else None
        phase = node.phase if node.complete else attempt.phase
        message = node.message if node.complete and node.message else attempt.message
        if pod is not None and pod.state == "waiting" and pod.waiting:
            message = f"waiting: {pod.waiting}"
        if not node.complete and node.type == "Retry" and node.not_before is not None:
            message = node.message
        rows.append(
            StepRow(
                name,
                phase.value,
                attempts=attempts,
                gpus=_gpus(pod, gpu_names or {}),
                message=message,
                pod=attempt.pod.name if attempt.pod is not None else "",
            )
        )
    return rows


def _running(node: Node, nodes: Mapping[str, Node]) -> bool:
    return node.type == "Retry" and any(nodes[c].phase is Phase.RUNNING for c in node.children)


def _gpus(pod: PodRow | None, names: Mapping[str, str]) -> str:
    if pod is None or not pod.gpus or pod.state == "done":
        return ""
    short = ",".join(names.get(g, g) for g in pod.gpus)
    if pod.slice is not None:
        return f"{short} {pod.slice[0] // 1024}G/{pod.slice[1]}%"
    return short


def gpu_rows(machine: Machine, pods: Iterable[PodRow], steps: Mapping[str, str]) -> list[str]:
    """One line per GPU: what holds it (whole, or each slice with its share)."""
    holders: dict[str, list[str]] = {g.uuid: [] for g in machine.gpus}
    for pod in pods:
        if pod.state not in {"running", "stopping"}:
            continue
        label = steps.get(pod.name, pod.name)
        for uuid in pod.gpus:
            share = f" {pod.slice[0] // 1024}G/{pod.slice[1]}%" if pod.slice is not None else ""
            holders.setdefault(uuid, []).append(f"{label}{share}")
    mark = " (simulated)" if machine.source == "simulated" else ""
    lines = []
    for gpu in machine.gpus:
        held = ", ".join(holders[gpu.uuid]) or "idle"
        lines.append(f"  GPU {gpu.index} {gpu.model}{mark}: {held}")
    return lines


def run_lines(
    row: RunRow,
    nodes: Mapping[str, Node],
    pods: Mapping[str, PodRow],
    now: float,
    *,
    gpu_names: Mapping[str, str] | None = None,
    width: int = 120,
) -> list[str]:
    """A run as lines: its header, then a line per step."""
    end = row.finished_at or now
    header = f"{row.name}  {row.phase}  {end - row.created_at:.1f}s  ({row.source})"
    if row.message and not row.active:
        header += f"  {row.message}"
    lines = [_cut(header, width)]
    for step in step_rows(row.name, nodes, pods, gpu_names):
        symbol = _SYMBOLS.get(step.phase, "?")
        if step.fan_out:
            filled = _BAR * step.done // max(1, step.total)
            bar = "#" * filled + "." * (_BAR - filled)
            text = f"  {symbol} {step.step:<24} [{bar}] {step.done}/{step.total} {step.message}"
        else:
            attempt = f" (attempt {step.attempts})" if step.attempts > 1 else ""
            gpus = f" [{step.gpus}]" if step.gpus else ""
            text = f"  {symbol} {step.step:<24} {step.phase:<9}{gpus}{attempt} {step.message}"
        lines.append(_cut(text.rstrip(), width))
    return lines


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


class Screen:
    """Draws lines in place on a terminal; elsewhere prints only the lines that changed."""

    def __init__(self, out: TextIO = sys.stdout, *, live: bool | None = None) -> None:
        self.out = out
        self.live = out.isatty() if live is None else live
        self._drawn = 0
        self._seen: dict[str, str] = {}
        self._last = 0.0

    def draw(self, lines: Sequence[str], *, force: bool = False) -> None:
        if self.live:
            now = time.monotonic()
            if not force and now - self._last < 0.1:
                return
            self._last = now
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self.out.write("\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            for line in lines:
                key = line.split("  ")[0].strip() if not line.startswith("  ") else line[:30]
                state = _state_of(line)
                if self._seen.get(key) != state:
                    self._seen[key] = state
                    self.out.write(line + "\n")
        self.out.flush()

    def final(self, lines: Sequence[str]) -> None:
        """Print `lines` whole, in place of the live view (the summary at the end)."""
        if self.live and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
        self._drawn = 0
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()

    def release(self) -> None:
        """Leave what is drawn on the screen; later output goes below it."""
        self._drawn = 0


def _state_of(line: str) -> str:
    """The part of a line that, when it changes, is worth a new line in a log."""
    words = line.split()
    return " ".join(
        w for w in words[:3] if not w.endswith("s") or not w[:-1].replace(".", "").isdigit()
    )
