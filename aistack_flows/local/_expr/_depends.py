"""A DAG task's `depends` expression (or `dependencies` list): parsed, and evaluated on results."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, assert_never

from aistack_flows.local._expr._errors import ExpressionError, _did_you_mean, _Error, _known
from aistack_flows.local._expr._limits import MAX_EXPRESSION_CHARS, MAX_NESTING
from aistack_flows.local._expr._token import _Token

_PHASES: Final = frozenset(
    {"Pending", "Running", "Succeeded", "Failed", "Error", "Skipped", "Omitted"}
)


@dataclass(frozen=True, slots=True)
class TaskResult:
    """How a DAG task ended, as the `depends` of the tasks after it sees it.

    Attributes:
        phase: the task node's Argo phase: "Succeeded", "Failed", "Error", "Skipped" or
            "Omitted" once complete ("Running" still counts for a daemoned task).
        children: the phases of a fan-out's members (withItems, withParam, withSequence), which
            `.AnySucceeded` and `.AllFailed` read; empty for a task that did not fan out.
        daemoned: the task's template is a daemon; `.Daemoned` holds once it is past Pending.
        continues_on: the phases ("Failed", "Error") that the task's `continueOn` lets its
            dependents pass: a bare reference to the task accepts them as well, as Argo
            expands it.

    Raises:
        ValueError: a phase that Argo does not have.
    """

    phase: str
    children: tuple[str, ...] = ()
    daemoned: bool = False
    continues_on: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = {self.phase, *self.children} - _PHASES
        if unknown:
            raise ValueError(
                f"TaskResult: unknown phase(s) {sorted(unknown)}; Argo's are {sorted(_PHASES)}"
            )
        if not self.continues_on <= {"Failed", "Error"}:
            raise ValueError(
                f"TaskResult: continues_on {sorted(self.continues_on)} may hold only "
                "'Failed' and 'Error' (continueOn's failed and error)"
            )


def _bare(result: TaskResult) -> bool:
    """An unqualified `task`: Argo's `(task.Succeeded || task.Skipped || task.Daemoned)`."""
    return (
        result.phase in ("Succeeded", "Skipped")
        or _RESULTS["Daemoned"](result)
        or result.phase in result.continues_on
    )


_RESULTS: Final[dict[str, Callable[[TaskResult], bool]]] = {
    "Succeeded": lambda r: r.phase == "Succeeded",
    "Failed": lambda r: r.phase == "Failed",
    "Errored": lambda r: r.phase == "Error",
    "Skipped": lambda r: r.phase == "Skipped",
    "Omitted": lambda r: r.phase == "Omitted",
    "Daemoned": lambda r: r.daemoned and r.phase != "Pending",
    "AnySucceeded": lambda r: any(phase == "Succeeded" for phase in r.children),
    "AllFailed": lambda r: bool(r.children) and all(phase == "Failed" for phase in r.children),
}
"""What each `task.Result` of a `depends` means, as Argo's DAG evaluation decides it."""


@dataclass(frozen=True, slots=True)
class _Reference:
    task: str
    result: str | None  # None: a bare `task`


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Condition


@dataclass(frozen=True, slots=True)
class _AllOf:
    operands: tuple[_Condition, ...]


@dataclass(frozen=True, slots=True)
class _AnyOf:
    operands: tuple[_Condition, ...]


_Condition = _Reference | _Not | _AllOf | _AnyOf

_DEPENDS_LEXEME: Final = re.compile(
    r"(?P<space>\s+)|(?P<op>&&|\|\||[!()])"
    r"|(?P<task>[A-Za-z0-9_][A-Za-z0-9_-]*)(?:\.(?P<result>[A-Za-z]\w*))?"
)
_TASK_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def _depends_tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    at = 0
    while at < len(text):
        match = _DEPENDS_LEXEME.match(text, at)
        if match is None:
            raise _Error(
                f"unexpected {text[at]!r} at column {at + 1}",
                "write task names joined by &&, || and !, e.g. a && (b.Failed || !c)",
            )
        if match.lastgroup == "op":
            tokens.append(_Token("op", match.group(), match.group(), at))
        elif match.group("task") is not None:
            result = match.group("result")
            if result is not None and result not in _RESULTS:
                task = match.group("task")
                hint = (
                    f"Argo has no .Completed; for 'finished either way' write "
                    f"({task}.Succeeded || {task}.Failed)"
                    if result == "Completed"
                    else _did_you_mean(result, _RESULTS, f"use one of: {', '.join(_RESULTS)}")
                )
                raise _Error(f"{match.group()!r} is not a task result Argo knows", hint)
            tokens.append(
                _Token("task", match.group(), _Reference(match.group("task"), result), at)
            )
        at = match.end()
    tokens.append(_Token("end", "end of depends", None, len(text)))
    return tokens


class _DependsParser:
    """`depends` grammar: `||` binds loosest, then `&&`, then `!`; parentheses group."""

    def __init__(self, text: str) -> None:
        self._tokens = _depends_tokens(text)
        self._at = 0
        self._level = 0

    def parse(self) -> _Condition | None:
        if self._tokens[0].kind == "end":
            return None
        condition_ = self._any()
        token = self._tokens[self._at]
        if token.kind != "end":
            raise _Error(
                f"unexpected {token.text!r} at column {token.at + 1}",
                "join task names with && or ||",
            )
        return condition_

    def _is_op(self, text: str) -> bool:
        token = self._tokens[self._at]
        return token.kind == "op" and token.text == text

    def _any(self) -> _Condition:
        operands = [self._all()]
        while self._is_op("||"):
            self._at += 1
            operands.append(self._all())
        return operands[0] if len(operands) == 1 else _AnyOf(tuple(operands))

    def _all(self) -> _Condition:
        operands = [self._unary()]
        while self._is_op("&&"):
            self._at += 1
            operands.append(self._unary())
        return operands[0] if len(operands) == 1 else _AllOf(tuple(operands))

    def _unary(self) -> _Condition:
        token = self._tokens[self._at]
        self._at += 1
        if token.kind == "task":
            reference: _Reference = token.value
            return reference
        if token.kind == "op" and token.text in ("!", "("):
            self._level += 1
            if self._level > MAX_NESTING:
                raise _Error(f"depends nests deeper than {MAX_NESTING} levels", "simplify it")
            if token.text == "!":
                operand: _Condition = _Not(self._unary())
            else:
                operand = self._any()
                if not self._is_op(")"):
                    closing = self._tokens[self._at]
                    raise _Error(
                        f"expected ')' at column {closing.at + 1}", "balance the parentheses"
                    )
                self._at += 1
            self._level -= 1
            return operand
        raise _Error(
            f"unexpected {token.text!r} at column {token.at + 1}", "a task name is missing here"
        )


def _named_tasks(root: _Condition | None) -> frozenset[str]:
    match root:
        case None:
            return frozenset()
        case _Reference(task=task):
            return frozenset({task})
        case _Not(operand=operand):
            return _named_tasks(operand)
        case _AllOf(operands=operands) | _AnyOf(operands=operands):
            return frozenset(task for operand in operands for task in _named_tasks(operand))
        case _:
            assert_never(root)


def _holds(root: _Condition, results: Mapping[str, TaskResult]) -> bool:
    match root:
        case _Reference(task=task, result=result):
            return (_bare if result is None else _RESULTS[result])(results[task])
        case _Not(operand=operand):
            return not _holds(operand, results)
        case _AllOf(operands=operands):
            return all(_holds(operand, results) for operand in operands)
        case _AnyOf(operands=operands):
            return any(_holds(operand, results) for operand in operands)
        case _:
            assert_never(root)


@dataclass(frozen=True, slots=True, repr=False)
class Depends:
    """A DAG task's `depends` (or `dependencies`), parsed: what it waits for, and whether it runs.

    Build one with `parse_depends` or `Depends.from_dependencies`. Two are equal when their text
    is.

    Attributes:
        text: the expression as written (`dependencies: [a, b]` reads as "a && b").
        where: where it came from, for messages.
        tasks: the task names it refers to.
    """

    text: str
    where: str = field(compare=False)
    tasks: frozenset[str] = field(compare=False)
    _root: _Condition | None = field(compare=False)

    def __repr__(self) -> str:
        return f"Depends({self.text!r})"

    @classmethod
    def from_dependencies(cls, names: Sequence[str], *, where: str = "dependencies") -> Depends:
        """The older `dependencies: [a, b]` list: each task, bare, all of them (`a && b`).

        An empty list depends on nothing and always holds.

        Raises:
            ExpressionError: a name that is not a task name.
        """
        for name in names:
            if _TASK_NAME.fullmatch(name) is None:
                raise ExpressionError(
                    where,
                    name,
                    "not a task name",
                    "task names hold letters, digits, '-' and '_'; for logic, use depends",
                )
        return parse_depends(" && ".join(names), where=where)

    def evaluate(self, results: Mapping[str, TaskResult]) -> bool:
        """Whether the task runs, given how each task in `tasks` ended.

        A bare `a` holds when a succeeded, was skipped or is a running daemon (or ended in a
        phase its continueOn allows); `a.Failed` and the rest test one result; `.AnySucceeded`
        and `.AllFailed` test a fan-out's members. Nothing is named: it holds.

        Raises:
            ExpressionError: a task in `tasks` has no result; call this only once all are
                complete.
        """
        missing = sorted(self.tasks - results.keys())
        if missing:
            raise ExpressionError(
                self.where,
                self.text,
                f"no result for task(s) {', '.join(missing)} ({_known(results)})",
                "evaluate depends only once every task it names is complete",
            )
        return self._root is None or _holds(self._root, results)


def parse_depends(text: str, *, where: str) -> Depends:
    """A DAG task's `depends` expression, parsed.

    Task names (letters, digits, '-', '_'), each bare or with one of `.Succeeded`, `.Failed`,
    `.Errored`, `.Skipped`, `.Omitted`, `.Daemoned`, `.AnySucceeded`, `.AllFailed`, joined by
    `&&`, `||`, `!` and parentheses. Blank text depends on nothing.

    Raises:
        ExpressionError: the text does not parse, or names a result Argo does not have (such as
            `.Completed`, which Argo rejects too).
    """
    try:
        if len(text) > MAX_EXPRESSION_CHARS:
            raise _Error(
                f"depends is {len(text)} characters long, over {MAX_EXPRESSION_CHARS}",
                "simplify it",
            )
        root = _DependsParser(text).parse()
    except _Error as failure:
        raise ExpressionError(where, text, failure.problem, failure.hint) from None
    return Depends(text, where, _named_tasks(root), root)
