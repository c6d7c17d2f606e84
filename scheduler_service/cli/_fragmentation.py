"""`aistack sim fragmentation`: Experiment 1 (GPU fragmentation with slices) on openb.

    aistack sim fragmentation [--trace default] [--seeds 42-51]
                              [--policies aistack,fgd,bestfit,random]
                              (also: aistack-known-mix, the ablation) [--data DIR]
                              [--nodes gpu_node] [--workers 2] [--out DIR]

Progress goes to stderr, the table to stdout; `fragmentation_<trace>.json` and
`fragmentation_<trace>.png` go to `--out`. Exit status 2 for a usage error or an invalid trace
(one line naming the file and line).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from scheduler_service.sim._frag_report import (
    render_table,
    run_experiment,
    write_json,
    write_plot,
)
from scheduler_service.sim._fragmentation import ALL_POLICIES, POLICIES
from scheduler_service.sim._openb import (
    DEFAULT_DATA,
    TraceError,
    load_nodes,
    load_pods,
    pod_list_path,
)

__all__ = ["add_fragmentation_parser", "parse_seeds", "run_fragmentation_command"]

DEFAULT_OUT = Path("out/sim/fragmentation")


def add_fragmentation_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register `fragmentation` under the `sim` command's sub-commands."""
    parser = commands.add_parser(
        "fragmentation",
        help="Experiment 1: GPU fragmentation with GPU slices on the openb trace",
        description=(
            "Replay openb pods by the FGD paper's protocol (arrivals only, resampled to 130%% "
            "of GPU capacity, shuffled per seed) under the core's placement and the baselines."
        ),
    )
    parser.add_argument("--trace", default="default", help="pod list: default, gpushare40, ...")
    parser.add_argument("--seeds", default="42-51", help="e.g. 42-51 or 42,43")
    parser.add_argument(
        "--policies",
        default=",".join(POLICIES),
        help=f"comma-separated, from {', '.join(ALL_POLICIES)}",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the openb data folder")
    parser.add_argument("--nodes", default="gpu_node", help="node list: gpu_node or all_node")
    parser.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results and plot")
    parser.set_defaults(run=run_fragmentation_command)


def parse_seeds(text: str) -> list[int]:
    """`42-51` or `42,45,47` as a list of seeds; ValueError with a message when malformed."""
    seeds: list[int] = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"--seeds: expected e.g. 42-51 or 42,43, got {text!r}")
        seeds += range(int(low), int(high) + 1) if dash else [int(low)]
    if not seeds:
        raise ValueError(f"--seeds: no seeds in {text!r}")
    return seeds


def run_fragmentation_command(args: argparse.Namespace) -> int:
    """Run the experiment as `args` say; return the exit status."""
    try:
        seeds = parse_seeds(args.seeds)
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        unknown = [p for p in policies if p not in ALL_POLICIES]
        if unknown or not policies:
            choices = ", ".join(ALL_POLICIES)
            raise ValueError(f"--policies: unknown {unknown}; choose from {choices}")
        nodes = load_nodes(args.data / f"openb_node_list_{args.nodes}.csv")
        pods = load_pods(pod_list_path(args.data, args.trace))
    except (ValueError, TraceError) as error:
        print(f"aistack: error: {error}", file=sys.stderr)
        return 2
    print(
        f"openb {args.trace}: {len(nodes)} nodes, {sum(len(n.gpus) for n in nodes)} GPUs, "
        f"{len(pods)} pods; {len(policies)} policies x {len(seeds)} seeds",
        file=sys.stderr,
    )
    result = run_experiment(
        nodes,
        pods,
        trace=args.trace,
        seeds=seeds,
        policies=policies,
        workers=args.workers,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(render_table(result), end="")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(result, args.out / f"fragmentation_{args.trace}.json")
    write_plot(result, args.out / f"fragmentation_{args.trace}.png")
    print(f"results: {args.out}/fragmentation_{args.trace}.{{json,png}}")
    return 0
