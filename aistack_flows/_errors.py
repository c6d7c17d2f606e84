"""Errors a pipeline author gets before anything is submitted: every problem, each named.

A declaration is checked when it is made (`gpus(...)` raises `RequestError`) and again, with
the workflow around it, when the workflow is built (`PipelineError`). Both list every problem
at once, each naming the step and the field, so one round of fixes is enough.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["PipelineError", "Problem", "RequestError"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong: the field (or part of the workflow) and what to do about it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class RequestError(ValueError):
    """A GPU request (`gpus`, `gpu_slice`) is invalid; `problems` lists why."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        """Say every problem in one message."""
        self.problems = tuple(problems)
        super().__init__("invalid GPU request: " + "; ".join(str(p) for p in self.problems))


class PipelineError(ValueError):
    """A workflow cannot run under the scheduler as written; `problems` names each step's fault.

    Raised while the workflow is built (Hera's `build()`, `to_dict()`, `to_yaml()`, `create()`,
    or `aistack render/submit`), so nothing is submitted.
    """

    def __init__(self, workflow: str, problems: Iterable[tuple[str, Problem]]) -> None:
        """`problems` pairs where (a step, or "workflow") with what is wrong there."""
        self.workflow = workflow
        self.problems = tuple(problems)
        lines = [f"  {where}: {problem}" for where, problem in self.problems]
        count = len(self.problems)
        super().__init__(
            f"workflow {workflow} cannot run under the AI-Stack scheduler "
            f"({count} problem{'s' if count != 1 else ''}):\n" + "\n".join(lines)
        )
