"""`aistack`: one command line for pipeline authors, the service and the simulator.

Where each group of commands lives:

    submit, render, list, status,     aistack_flows/cli (the pipeline author's commands;
    explain, queues                   they use the Kubernetes API, never the service's code)
    serve                             _serve.py (the scheduler service on Kubernetes)
    agent                             _agent.py (the node agent on a GPU node)
    demo, scenario                    _scenario.py (the core on a simulated cluster)
    sim pooling                       _pooling.py (Experiment 2, the Philly trace)
    sim fragmentation                 _fragmentation.py (Experiment 1, the openb trace)
    (seeded faults for the two above) _faults.py

Each module adds its parsers and sets `run`, the function that carries the command out and
returns its exit status: 0 on success, 2 for a usage error (argparse's), and what each module
documents beyond that.
"""

from __future__ import annotations

import argparse
import sys

from aistack_flows.cli import add_author_commands
from scheduler_service.cli._agent import add_agent_parser
from scheduler_service.cli._fragmentation import add_fragmentation_parser
from scheduler_service.cli._pooling import add_pooling_parser
from scheduler_service.cli._reserve import add_reserve_parser
from scheduler_service.cli._scenario import add_scenario_parsers
from scheduler_service.cli._serve import add_serve_parser
from scheduler_service.dashboard import LocalPages

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line with `argv` (default: `sys.argv[1:]`); return the exit status."""
    arguments = sys.argv[1:] if argv is None else argv
    try:
        args = _parser().parse_args(arguments)
    except SystemExit as exit_:  # argparse exits on --help and on usage errors
        return exit_.code if isinstance(exit_.code, int) else 2
    args.argv = arguments
    status: int = args.run(args)
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aistack",
        description="Run AI pipelines on Argo Workflows with GPUs from the AI-Stack scheduler.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_author_commands(commands, serve_dashboard=LocalPages)
    add_serve_parser(commands)
    add_agent_parser(commands)
    add_reserve_parser(commands)
    add_scenario_parsers(commands)
    sim = commands.add_parser("sim", help="replay production traces through the core")
    sim_commands = sim.add_subparsers(dest="sim_command", required=True, metavar="EXPERIMENT")
    add_pooling_parser(sim_commands)
    add_fragmentation_parser(sim_commands)
    return parser
