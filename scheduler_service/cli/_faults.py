"""The fault flags shared by `aistack scenario` and `aistack sim pooling`.

    --faults-seed N      draw failures from random.Random(N), so a run replays exactly
    --patch-failure P    chance that carrying out one admission fails (pods stay pending)
    --pod-crash P        chance, per running workload and cycle, that its pods crash

They make a `Faults` for the simulator. A probability outside [0, 1], or a probability without
a seed, is a usage error (exit status 2) that says what to give instead. When a run with faults
stops on a broken invariant, `replay_command` gives the command line that replays it.
"""

from __future__ import annotations

import argparse
import math
import shlex
from collections.abc import Sequence

from scheduler_service.sim import Faults

__all__ = ["add_fault_arguments", "faults_from", "replay_command"]


def add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--faults-seed`, `--patch-failure` and `--pod-crash` to `parser`."""
    group = parser.add_argument_group(
        "fault injection", "seeded failures; a broken invariant prints the command to replay it"
    )
    group.add_argument(
        "--faults-seed",
        type=int,
        metavar="N",
        help="seed the failures are drawn from (required by the two flags below)",
    )
    group.add_argument(
        "--patch-failure",
        type=_probability,
        default=0.0,
        metavar="P",
        help="chance in [0, 1] that carrying out an admission fails (default 0)",
    )
    group.add_argument(
        "--pod-crash",
        type=_probability,
        default=0.0,
        metavar="P",
        help="chance in [0, 1], per running workload and cycle, that its pods crash (default 0)",
    )


def faults_from(args: argparse.Namespace) -> Faults | None:
    """The `Faults` the flags ask for, or None when no seed is given.

    Raises `ValueError` (a usage error) for a probability given without a seed.
    """
    if args.faults_seed is None:
        if args.patch_failure or args.pod_crash:
            raise ValueError(
                "--patch-failure and --pod-crash need --faults-seed N (any integer: the failures "
                "are drawn from it, so the run replays)"
            )
        return None
    return Faults(seed=args.faults_seed, patch_failure=args.patch_failure, pod_crash=args.pod_crash)


def replay_command(arguments: Sequence[str]) -> str:
    """`aistack` with `arguments`, quoted for a shell: the command that replays a run."""
    return shlex.join(["aistack", *arguments])


def _probability(text: str) -> float:
    """An argparse `type`: a number in [0, 1], else a message that says so."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"give a probability in [0, 1], e.g. 0.05; got {text!r}")
    return value
