"""The local runner's commands: `aistack run`, and `--local` for list, status, explain and logs.

    aistack run FILE... [-p NAME=VALUE] [--simulate-gpus 4xH100-80GB] [--config FILE]
                [--templates DIR] [--dashboard [PORT]]
    aistack run --resume                   take over the runs a stopped runner left
    aistack list --local                   local runs
    aistack status RUN --local             each step: phase, queue, GPUs, attempts, why it waits
    aistack explain RUN --local            the scheduler's reasons and each step's history
    aistack logs RUN [STEP] --local        a step's output (every step's without STEP)

Every command takes `--state DIR` (default `$AISTACK_STATE`, else ~/.local/state/aistack).
Exit status of `run`: 0 when every run it started succeeded, 1 when one failed, 2 when it was
refused (a bad file, parameter or setting; a feature a local run cannot do), 130 when
interrupted (Ctrl-C stops the steps gracefully and ends the runs).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from aistack_flows.cli._output import emit, table
from aistack_flows.local import (
    DashboardServer,
    RunNotFoundError,
    RunOptions,
    Store,
    StoreError,
    default_state_directory,
    explain_lines,
    find_run,
    list_rows,
    logs,
    run_pipelines,
    status_rows,
)

__all__ = ["add_local_options", "add_run_commands", "run_local"]


DEFAULT_DASHBOARD_PORT = 8765
"""The port of `aistack run --dashboard` without one."""


def add_run_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    serve_dashboard: Callable[[int], DashboardServer] | None = None,
) -> None:
    """Add `run` and `logs` to the `aistack` parser (`--dashboard` with `serve_dashboard`)."""
    run = commands.add_parser(
        "run",
        help="run pipelines on this machine under the scheduler (no cluster needed)",
        description="Run each pipeline the files define on this machine: its GPU steps are "
        "admitted by the same scheduler as on a cluster, on this machine's GPUs (found with "
        "NVML) or on simulated ones; steps run as local processes.",
    )
    run.add_argument("files", nargs="*", type=Path, metavar="FILE")
    run.add_argument(
        "-p",
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a workflow parameter (repeatable)",
    )
    run.add_argument(
        "--simulate-gpus",
        metavar="SPEC",
        help="run on simulated GPUs, e.g. 4xH100-80GB or 2xA100-80GB,1xL4",
    )
    run.add_argument("--config", type=Path, help="settings file: pool, queues, quotas, grace")
    run.add_argument(
        "--templates",
        type=Path,
        metavar="DIR",
        help="YAML of the (Cluster)WorkflowTemplates that templateRefs name (e.g. templates/)",
    )
    run.add_argument(
        "--resume", action="store_true", help="take over the runs a stopped runner left"
    )
    run.add_argument(
        "--gpu-sharing",
        choices=("auto", "mps", "none"),
        default="auto",
        help="how slices are capped on the GPU: mps (one NVIDIA MPS daemon per GPU that hosts "
        "slices), none (booked only), auto (mps where it can run, default)",
    )
    run.add_argument("--no-live", action="store_true", help="print changes line by line")
    if serve_dashboard is not None:
        run.add_argument(
            "--dashboard",
            nargs="?",
            const=DEFAULT_DASHBOARD_PORT,
            type=_port,
            metavar="PORT",
            help="serve the dashboard on http://127.0.0.1:PORT/ while the runner schedules "
            f"(default port {DEFAULT_DASHBOARD_PORT}; 0: any free port)",
        )
    add_local_options(run, flag=False)
    run.set_defaults(run=functools.partial(_run, serve_dashboard=serve_dashboard))

    logs_ = commands.add_parser("logs", help="a local run's step output")
    logs_.add_argument("workflow", metavar="RUN")
    logs_.add_argument("step", nargs="?", metavar="STEP")
    add_local_options(logs_, flag=True)
    logs_.set_defaults(run=_logs)


def add_local_options(parser: argparse.ArgumentParser, *, flag: bool) -> None:
    """`--local` (where the command also works on a cluster) and `--state DIR`."""
    if flag:
        parser.add_argument("--local", action="store_true", help="a run of this machine's runner")
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        metavar="DIR",
        help="the local runner's state (default $AISTACK_STATE or ~/.local/state/aistack)",
    )


def _fail(message: str, status: int) -> int:
    print(f"aistack: error: {message}", file=sys.stderr)
    return status


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: give 1 to 65535, or 0 for any")
    return port


def _run(
    args: argparse.Namespace, *, serve_dashboard: Callable[[int], DashboardServer] | None
) -> int:
    parameters: dict[str, str] = {}
    for text in args.parameter:
        name, equals, value = text.partition("=")
        if not equals or not name:
            return _fail(f"-p {text!r}: write NAME=VALUE", 2)
        parameters[name] = value
    if not args.files and not args.resume:
        return _fail("give a pipeline file (Hera .py or YAML), or --resume", 2)
    options = RunOptions(
        files=tuple(args.files),
        state=args.state or default_state_directory(),
        parameters=parameters,
        simulate_gpus=args.simulate_gpus,
        config=args.config,
        templates=args.templates,
        resume=args.resume,
        live=False if args.no_live else None,
        gpu_sharing=args.gpu_sharing,
        dashboard=getattr(args, "dashboard", None),
        serve_dashboard=serve_dashboard,
    )
    return run_pipelines(options)


def _store(args: argparse.Namespace) -> Store:
    return Store(args.state or default_state_directory())


def run_local(args: argparse.Namespace) -> int:
    """`aistack list|status|explain --local`."""
    try:
        store = _store(args)
        if args.command == "list":
            rows = list_rows(store)
            headers = ["name", "phase", "steps", "duration", "source", "message"]
            print(
                emit(
                    rows,
                    args.output,
                    lambda: table(headers, [[r[h] for h in headers] for r in rows]),
                )
            )
            return 0
        run = find_run(store, args.workflow)
        if args.command == "status":
            steps = status_rows(store, run)
            headers = ["step", "phase", "queue", "gpus", "attempts", "progress", "message"]
            header = f"Run {run.name}: {run.phase}" + (f" ({run.message})" if run.message else "")
            data = {"run": run.name, "phase": run.phase, "steps": steps}
            print(
                emit(
                    data,
                    args.output,
                    lambda: (
                        header + "\n\n" + table(headers, [[r[h] for h in headers] for r in steps])
                    ),
                )
            )
            return 0
        lines = explain_lines(store, run)
        print(emit({"run": run.name, "explain": lines}, args.output, lambda: "\n".join(lines)))
        return 0
    except (StoreError, RunNotFoundError) as error:
        return _fail(str(error), 1)


def _logs(args: argparse.Namespace) -> int:
    if not args.local:
        return _fail(
            "logs of cluster pods: use kubectl logs or argo logs; add --local for a local run", 2
        )
    try:
        store = _store(args)
        print(logs(store, find_run(store, args.workflow), args.step), end="")
        return 0
    except (StoreError, RunNotFoundError) as error:
        return _fail(str(error), 1)
