"""A run as text a person reads: one line per timeline event, then the queues and the totals.

    t=   0s  admit    alice-train-1  queue alice  4 GPUs on n1[0-3]

Columns line up across the whole timeline (time, verb, workload or node), so a story can be
followed down the page; the golden scenario tests compare exactly this text.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler_service.core import Kind, Workload, format_gpus
from scheduler_service.sim._result import Outcome, SimulationResult
from scheduler_service.sim._summary import QueueSummary
from scheduler_service.sim._timeline import (
    Admitted,
    Crashed,
    Evicted,
    Finished,
    Lost,
    NodeDown,
    NodeUp,
    PatchFailed,
    PodPlacement,
    Requeued,
    Resumed,
    Submitted,
    TimelineEvent,
    Waiting,
)

__all__ = ["format_seconds", "render_report", "render_summary", "render_timeline"]

_MIB_PER_GIB = 1024


def render_report(result: SimulationResult) -> str:
    """The timeline, a blank line, then the summary; ends with a newline."""
    return "\n".join([*render_timeline(result.timeline), "", *render_summary(result)]) + "\n"


def render_timeline(timeline: Sequence[TimelineEvent]) -> list[str]:
    """One aligned line per event, in the order the events happened."""
    rows = [(format_seconds(event.at), *_verb_subject_detail(event)) for event in timeline]
    time_width = max((len(row[0]) for row in rows), default=0)
    time_width = max(time_width, 4)
    subject_width = max((len(row[2]) for row in rows), default=0)
    return [
        f"t={at:>{time_width}}s  {verb:<8} {subject:<{subject_width}}  {detail}".rstrip()
        for at, verb, subject, detail in rows
    ]


def render_summary(result: SimulationResult) -> list[str]:
    """The queues' standing at the end, then what became of the workloads."""
    lines = [f"queues at t={format_seconds(result.ended_at)}s (GPUs)"]
    lines += _table(
        ("queue", "pool", "quota", "limit", "fair share", "allocated", "GPU-hours used"),
        [_queue_row(row) for row in result.queues],
    )
    return [*lines, "", *_totals(result.outcomes)]


def format_seconds(value: float) -> str:
    """Seconds as a person reads them: `600`, `12.5`."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0")


# -- timeline lines ----------------------------------------------------------------------------


def _verb_subject_detail(event: TimelineEvent) -> tuple[str, str, str]:
    match event:
        case Submitted(workload=name, spec=workload, duration_seconds=duration):
            return (
                "submit",
                name,
                (
                    f"queue {workload.queue}  {_describe_request(workload)}, "
                    f"runs {format_seconds(duration)}s"
                ),
            )
        case Admitted(workload=name, queue=queue, placement=placement):
            return "admit", name, f"queue {queue}  {_describe_placement(placement)}"
        case Resumed(workload=name, queue=queue, placement=placement):
            progress = (
                f"from checkpoint at {format_seconds(event.done_seconds)}s of "
                f"{format_seconds(event.duration_seconds)}s"
                if event.done_seconds
                else "from the start"
            )
            return "resume", name, f"queue {queue}  {_describe_placement(placement)}, {progress}"
        case Evicted(workload=name, cause=cause, message=message):
            return "evict", name, f"{cause.value}: {message}"
        case Requeued(workload=name):
            return (
                "requeue",
                name,
                "pods gone, pending again; "
                + _work(event.kept_seconds, event.lost_seconds, event.duration_seconds),
            )
        case Lost(workload=name, node=node):
            return (
                "lost",
                name,
                f"node {node} went down, pending again; "
                + _work(event.kept_seconds, event.lost_seconds, event.duration_seconds),
            )
        case PatchFailed(workload=name):
            return "fault", name, "patching its pods failed (injected); still pending"
        case Crashed(workload=name):
            return (
                "crash",
                name,
                "pods crashed (injected), pending again; "
                + _work(event.kept_seconds, event.lost_seconds, event.duration_seconds),
            )
        case Waiting(workload=name, code=code, message=message):
            return "wait", name, f"{code}: {message}"
        case Finished(workload=name, queue=queue):
            return "finish", name, f"queue {queue}  " + _finish_detail(event)
        case NodeDown(node=node):
            return "down", node, "node down: no new work, its workloads are interrupted"
        case NodeUp(node=node):
            return "up", node, "node ready again"


def _work(kept: float, lost: float, duration: float) -> str:
    if kept:
        text = f"keeps {format_seconds(kept)}s of {format_seconds(duration)}s (last checkpoint)"
    else:
        text = f"starts over (0s of {format_seconds(duration)}s kept)"
    return f"{text}, {format_seconds(lost)}s of work lost" if lost else text


def _finish_detail(event: Finished) -> str:
    text = f"done {format_seconds(event.at - event.submitted_at)}s after submission"
    if not event.evictions:
        return text
    times = "once" if event.evictions == 1 else f"{event.evictions} times"
    return f"{text}; evicted {times}, {format_seconds(event.lost_seconds)}s of work redone"


def _describe_request(workload: Workload) -> str:
    request = workload.request
    if request.is_slice:
        shape = f"slice {request.gpu_compute_percent}% / {_memory(request.gpu_memory_mib)}"
        shape = f"{workload.pods} x {shape}" if workload.pods > 1 else shape
    elif workload.pods > 1:
        shape = f"gang of {workload.pods} x {_gpus(request.gpus)}"
    else:
        shape = _gpus(request.gpus)
    parts = [f"{workload.kind.value} {shape}"]
    if workload.priority:
        parts.append(f"priority {workload.priority}")
    if workload.preemptible is not None and workload.preemptible != (workload.kind is Kind.TRAIN):
        parts.append("preemptible" if workload.preemptible else "not preemptible")
    if workload.topology is not None:
        wish = "one" if workload.topology.required else "prefers one"
        parts.append(f"{wish} {workload.topology.level}")
    if workload.pools:
        parts.append(f"pools {' > '.join(workload.pools)}")
    if workload.models:
        parts.append(f"models {' or '.join(workload.models)}")
    return ", ".join(parts)


def _describe_placement(placement: Sequence[PodPlacement]) -> str:
    first = placement[0]
    if first.slice is not None:
        shape = f"slice {first.slice.compute_percent}% / {_memory(first.slice.memory_mib)}"
        shape = f"{len(placement)} x {shape}" if len(placement) > 1 else shape
    else:
        shape = _gpus(sum(len(pod.gpu_indexes) for pod in placement))
    by_node: dict[str, set[int]] = {}
    for pod in placement:
        by_node.setdefault(pod.node, set()).update(pod.gpu_indexes)
    where = " ".join(
        f"{node}[{_ranges(sorted(indexes))}]" if indexes else node
        for node, indexes in by_node.items()
    )
    return f"{shape} on {where}"


def _ranges(indexes: list[int]) -> str:
    """`[0, 1, 2, 3, 6]` as `0-3,6`."""
    runs: list[list[int]] = []
    for index in indexes:
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return ",".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)


def _gpus(count: int) -> str:
    return f"{count} GPU" + ("" if count == 1 else "s")


def _memory(mib: int) -> str:
    if mib % _MIB_PER_GIB == 0:
        return f"{mib // _MIB_PER_GIB} GiB"
    return f"{mib} MiB"


# -- summary -----------------------------------------------------------------------------------


def _queue_row(row: QueueSummary) -> list[str]:
    return [
        row.queue,
        row.pool,
        format_gpus(row.quota_milli),
        "-" if row.limit_milli is None else format_gpus(row.limit_milli),
        format_gpus(row.fair_share_milli),
        format_gpus(row.allocated_milli),
        f"{row.gpu_seconds / 3600:.2f}",
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Text columns left-aligned, number columns (all but the first two) right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), *(line(row) for row in rows)]


def _totals(outcomes: Sequence[Outcome]) -> list[str]:
    finished = [o for o in outcomes if o.state == "finished"]
    present = [o for o in outcomes if o.state != "finished"]
    evictions = sum(o.evictions for o in outcomes)
    lost = sum(o.lost_seconds for o in outcomes)
    lines = [
        f"workloads: {len(outcomes)} submitted, {len(finished)} finished, "
        f"{len(present)} still present; {evictions} eviction(s), "
        f"{format_seconds(lost)}s of work lost to evictions and node failures"
    ]
    lines += [
        f"  still {o.state}: {o.workload} (queue {o.queue}, {format_seconds(o.done_seconds)}s of "
        f"{format_seconds(o.duration_seconds)}s done)"
        for o in present
    ]
    return lines
