"""`aistack sim pooling`: Experiment 2 (static GPUs against pooled queues) on the Philly trace.

    aistack sim pooling [--data DIR] [--load native|0.5|0.7|0.9 ...]
                        [--policies static,fifo,aistack] [--checkpoint-minutes 30]
                        [--cycle-seconds 60] [--limit-jobs N] [--check-plans] [--out DIR]
                        [--periods N [--period K]]
                        [--vc-nodes VC=N,...] [--quota VC=GPUS,...]
                        [--faults-seed N [--patch-failure P] [--pod-crash P]]

What-if questions: `--vc-nodes 6214e9=72` gives a VC 72 servers of 8 GPUs (after scaling to
the load), `--quota 6214e9=400` guarantees it 400 GPUs whatever it brought.

Progress goes to stderr, each load's table to stdout as it finishes; `pooling.json` (every load
finished so far) and the plots go to `--out` after each load. With faults (`_faults`),
every plan is checked as with `--check-plans`.
Exit status 2 for a usage error or an invalid trace (one line naming the file and line), 1 if a
plan breaks an invariant, with the command that replays that load.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from scheduler_service.cli._faults import add_fault_arguments, faults_from, replay_command
from scheduler_service.sim._inputs import EngineSettings, Faults, SimulationError
from scheduler_service.sim._philly import PhillyTrace, TraceError, load_philly
from scheduler_service.sim._pooling import POLICIES, WhatIf, scale_cluster
from scheduler_service.sim._pooling_report import (
    LoadResult,
    render_table,
    run_pooling,
    write_outputs,
)

__all__ = ["add_pooling_parser", "run_pooling_command"]

_REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = _REPO.parent / "shared" / "data" / "philly"
DEFAULT_OUT = Path("out/sim/pooling")


def add_pooling_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `pooling` under the `sim` command's sub-commands."""
    parser = commands.add_parser(
        "pooling",
        help="Experiment 2: static GPUs against pooled queues on the Philly trace",
        description="Replay the Philly trace under static, shared-FIFO and AI-Stack policies.",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the Philly data folder")
    parser.add_argument(
        "--load",
        nargs="+",
        default=["native", "0.5", "0.7", "0.9"],
        help="native, or offered loads to scale the cluster to (fractions, e.g. 0.7)",
    )
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated")
    parser.add_argument("--checkpoint-minutes", type=float, default=30.0)
    parser.add_argument("--restart-seconds", type=float, default=60.0)
    parser.add_argument("--cycle-seconds", type=float, default=60.0)
    parser.add_argument("--grace-seconds", type=float, default=30.0)
    parser.add_argument("--limit-jobs", type=int, default=None, help="the first N jobs only")
    parser.add_argument(
        "--periods",
        type=int,
        default=1,
        metavar="N",
        help="cut the trace into N consecutive periods of equal job counts and replay each "
        "on its own (results in --out/period-K), to check results on parts not tuned to",
    )
    parser.add_argument(
        "--period", type=int, default=None, metavar="K", help="with --periods, only the K-th"
    )
    parser.add_argument(
        "--check-plans", action="store_true", help="check every plan's invariants (slower)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results and plots")
    what_if = parser.add_argument_group("what if", "change the cluster of every load")
    what_if.add_argument(
        "--vc-nodes",
        type=_counts,
        default={},
        metavar="VC=N,...",
        help="servers (8 GPUs each) of these VCs, after scaling; their quotas follow",
    )
    what_if.add_argument(
        "--quota",
        type=_counts,
        default={},
        metavar="VC=GPUS,...",
        help="GPUs guaranteed to these VCs, instead of the GPUs of their servers",
    )
    add_fault_arguments(parser)
    parser.set_defaults(run=run_pooling_command)


def run_pooling_command(args: argparse.Namespace) -> int:
    """Run the experiment as `args` say; return the exit status."""
    try:
        loads = [None if text == "native" else _load(text) for text in args.load]
        policies = [p for p in args.policies.split(",") if p]
        unknown = [p for p in policies if p not in POLICIES]
        if unknown or not policies:
            raise ValueError(f"unknown policies {unknown}; choose from {', '.join(POLICIES)}")
        faults = faults_from(args)
        settings = EngineSettings(
            cycle_seconds=args.cycle_seconds,
            eviction_grace_seconds=args.grace_seconds,
            checkpoint_seconds=args.checkpoint_minutes * 60 if args.checkpoint_minutes else None,
            restart_seconds=args.restart_seconds,
            check_plans=args.check_plans or faults is not None,
        )
        trace = load_philly(args.data, limit_jobs=args.limit_jobs)
        parts = list(enumerate(trace.periods(args.periods), start=1))
        if args.period is not None:
            if not 1 <= args.period <= args.periods:
                raise ValueError(f"--period {args.period}: give 1 to {args.periods} (--periods)")
            parts = [parts[args.period - 1]]
        what_if = WhatIf(vc_nodes=args.vc_nodes, quotas=args.quota)
        for _, part in parts:
            for load in loads:
                scale_cluster(part, load, what_if)  # a what-if that cannot be fails at once
    except (ValueError, TraceError) as error:
        print(f"aistack: error: {error}", file=sys.stderr)
        return 2
    print(
        f"philly: {len(trace.jobs):,} jobs, {trace.unlisted_jobs} in VCs missing from the VC "
        "list (catch-all queue 'unlisted', zero quota)",
        file=sys.stderr,
    )
    meta: dict[str, object] = {
        "jobs": len(trace.jobs),
        "unlisted_jobs": trace.unlisted_jobs,
        "settings": {
            "cycle_seconds": settings.cycle_seconds,
            "eviction_grace_seconds": settings.eviction_grace_seconds,
            "checkpoint_seconds": settings.checkpoint_seconds,
            "restart_seconds": settings.restart_seconds,
        },
        "machine": f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "faults": None if faults is None else repr(faults),
        "what_if": {"vc_nodes": dict(args.vc_nodes), "quotas": dict(args.quota)},
    }
    for index, part in parts:
        if args.periods > 1:
            print(f"period {index}/{args.periods}: {part.label}, {len(part.jobs):,} jobs\n")
        status = _run_part(
            args,
            part,
            index=index,
            loads=loads,
            policies=policies,
            settings=settings,
            faults=faults,
            meta=meta,
        )
        if status:
            return status
    return 0


def _run_part(
    args: argparse.Namespace,
    trace: PhillyTrace,
    *,
    index: int,
    loads: list[float | None],
    policies: list[str],
    settings: EngineSettings,
    faults: Faults | None,
    meta: dict[str, object],
) -> int:
    """Every load of one period (the `index`-th, or the whole trace); the exit status."""
    out = args.out if args.periods == 1 else args.out / f"period-{index}"
    what_if = WhatIf(vc_nodes=args.vc_nodes, quotas=args.quota)
    meta = {**meta, "period": trace.label, "period_jobs": len(trace.jobs)}
    results: list[LoadResult] = []
    for load in loads:  # one load at a time, so a long run leaves every finished load on disk
        try:
            results += run_pooling(
                trace,
                [load],
                policies,
                settings,
                clock=time.perf_counter,
                cpu_clock=time.process_time,
                say=lambda line: print(line, file=sys.stderr, flush=True),
                faults=faults,
                what_if=what_if,
            )
        except SimulationError as error:
            print(
                f"aistack: the simulation stopped (a scheduler bug):\n{error}\n"
                f"replay it with: {replay_command(_arguments(args, load, index))}",
                file=sys.stderr,
            )
            return 1
        print(render_table(results[-1:]), end="", flush=True)
        for path in write_outputs(results, out, meta=meta):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _arguments(args: argparse.Namespace, load: float | None, period: int) -> list[str]:
    """The arguments of `aistack` that replay `args` at one `load` (None: native), one period."""
    arguments = [
        "sim",
        "pooling",
        "--data",
        str(args.data),
        "--load",
        "native" if load is None else f"{load:g}",
        "--policies",
        args.policies,
        "--checkpoint-minutes",
        f"{args.checkpoint_minutes:g}",
        "--restart-seconds",
        f"{args.restart_seconds:g}",
        "--cycle-seconds",
        f"{args.cycle_seconds:g}",
        "--grace-seconds",
        f"{args.grace_seconds:g}",
        "--check-plans",
        "--out",
        str(args.out),
    ]
    if args.limit_jobs is not None:
        arguments += ["--limit-jobs", str(args.limit_jobs)]
    if args.periods > 1:
        arguments += ["--periods", str(args.periods), "--period", str(period)]
    for option, counts in (("--vc-nodes", args.vc_nodes), ("--quota", args.quota)):
        if counts:
            arguments += [option, ",".join(f"{vc}={count}" for vc, count in counts.items())]
    if args.faults_seed is not None:
        arguments += [
            "--faults-seed",
            str(args.faults_seed),
            "--patch-failure",
            f"{args.patch_failure:g}",
            "--pod-crash",
            f"{args.pod_crash:g}",
        ]
    return arguments


def _counts(text: str) -> dict[str, int]:
    """An argparse `type`: `VC=N,VC=N` as {VC: N}, else a message that shows the form."""
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        vc, equals, number = item.partition("=")
        try:
            count = int(number)
        except ValueError:
            count = -1
        if not equals or not vc or count < 0 or vc in counts:
            raise argparse.ArgumentTypeError(
                f"give VC=N pairs with whole numbers >= 0, each VC once, e.g. 6214e9=72,"
                f"b436b2=60; got {text!r}"
            )
        counts[vc] = count
    if not counts:
        raise argparse.ArgumentTypeError("give at least one VC=N pair, e.g. 6214e9=72")
    return counts


def _load(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1.5:
        raise ValueError(f"--load {text}: give native or a fraction in (0, 1.5], e.g. 0.7")
    return value
