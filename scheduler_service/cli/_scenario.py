"""`aistack demo` and `aistack scenario`: the real core on a simulated cluster, explained.

    aistack demo [--scenario PATH]   the three-researchers story (or PATH), explained
    aistack scenario PATH [faults]   any scenario file: its timeline and queue summary

Exit status: 0; 2 for a missing or invalid scenario file (one line on stderr); 1 if the
simulation stops, which means a plan broke one of the scheduler's invariants: a bug to report,
with the message shown and the command that replays it.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from scheduler_service.cli._faults import add_fault_arguments, faults_from, replay_command
from scheduler_service.sim import (
    Scenario,
    ScenarioError,
    SimulationError,
    bundled_scenario,
    format_seconds,
    load_scenario,
    render_report,
    run_scenario,
)

__all__ = ["add_scenario_parsers"]

_DEMO = "three_researchers"

_DEMO_HEADER = """\
AI-Stack demo: the real scheduling core on a simulated GPU cluster
==================================================================
Each line below is one thing that happened, on a virtual clock: a step was submitted, admitted
onto GPUs, evicted so that borrowed GPUs go back to their owner, put back in line with the work
it had checkpointed, resumed, or it waits (with the reason its user would see). No GPUs and no
Kubernetes are involved: every {cycle} s of virtual time, the scheduling function that the
service runs decides, and each of its plans is checked against the scheduler's invariants.
"""


def add_scenario_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `demo` and `scenario` to the `aistack` parser."""
    demo = commands.add_parser(
        "demo",
        help="watch three researchers share one GPU node (or run --scenario PATH)",
        description="Replay a scenario and explain what the scheduler did, line by line.",
    )
    demo.add_argument(
        "--scenario",
        metavar="PATH",
        help="a scenario TOML file to replay instead of the bundled one",
    )
    demo.set_defaults(run=_run)
    scenario = commands.add_parser(
        "scenario",
        help="replay a scenario file and print its timeline and queue summary",
        description="Replay a scenario TOML file and print its timeline and queue summary.",
    )
    scenario.add_argument("path", metavar="PATH", help="the scenario TOML file")
    add_fault_arguments(scenario)
    scenario.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        faults = faults_from(args) if args.command == "scenario" else None
        if args.command == "demo":
            scenario = load_scenario(args.scenario) if args.scenario else bundled_scenario(_DEMO)
            print(_demo_header(scenario, bundled=not args.scenario))
        else:
            scenario = load_scenario(args.path)
            print(f"scenario: {scenario.source}\n")
        print(render_report(run_scenario(scenario, faults)), end="")
    except (ScenarioError, ValueError) as error:
        print(f"aistack: error: {error}", file=sys.stderr)
        return 2
    except SimulationError as error:
        print(
            f"aistack: the simulation stopped (a scheduler bug; please report it):\n{error}\n"
            f"replay it with: {replay_command(args.argv)}",
            file=sys.stderr,
        )
        return 1
    return 0


def _demo_header(scenario: Scenario, *, bundled: bool) -> str:
    source = f"{scenario.source} (bundled)" if bundled else scenario.source
    story = textwrap.indent(scenario.description, "  ") if scenario.description else ""
    parts = [
        _DEMO_HEADER.format(cycle=format_seconds(scenario.settings.cycle_seconds)),
        f"Scenario: {source}",
    ]
    if story:
        parts.append(story)
    parts += ["", "What happened (t = virtual seconds since the start):", ""]
    return "\n".join(parts)
