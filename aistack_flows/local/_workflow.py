"""An Argo Workflow run on one machine: the node tree, worked out again from what has happened.

Argo's controller keeps a workflow's progress as a flat list of nodes in its status and, on every
change, walks the templates from the entrypoint and decides from those nodes what comes next.
`Run` does the same, so that it can stop at any point (a crash, `kill -9`) and go on from the
nodes a database kept: `advance(now)` walks the templates, creates the nodes that can start
now, and completes the DAGs, steps, fan-outs and retries whose children are done. It does no I/O
and reads no clock: the runner starts the pods it creates, reports how they ended
(`pod_finished`), and saves the nodes that changed.

Node names follow Argo's (`wf.build`, `wf.train(1)`, `wf.shard(3:3)`, `wf[0].step`), so a
step's checkpoint directory and its gang's name come out as on a cluster. What a local run
cannot do is refused by `check` before anything starts (see `_support.py`).
"""

from __future__ import annotations

import enum
import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from aistack_flows.local._expr import (
    Depends,
    ExpressionError,
    TaskResult,
    condition,
    evaluate,
    parse_depends,
    substitute,
)
from aistack_flows.local._pods import PodSpec, pod_name, pod_spec

__all__ = [
    "COMPLETE",
    "MAX_RESULT_BYTES",
    "Node",
    "Phase",
    "Run",
    "RunError",
]

Json = dict[str, Any]

MAX_RESULT_BYTES = 256 * 1024
"""The most of a step's stdout kept as `outputs.result` (Argo keeps its result small too)."""

MAX_FAN_OUT = 10_000
"""The most members one `withItems`/`withParam`/`withSequence` may expand to."""


class RunError(ValueError):
    """The workflow cannot go on (a bad reference found while running); the message says where."""


class Phase(enum.StrEnum):
    """A node's phase, as Argo names them."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERROR = "Error"
    SKIPPED = "Skipped"
    OMITTED = "Omitted"


COMPLETE = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.ERROR, Phase.SKIPPED, Phase.OMITTED})
_FULFILLED = frozenset({Phase.SUCCEEDED, Phase.SKIPPED, Phase.OMITTED})
_UNSUCCESSFUL = frozenset({Phase.FAILED, Phase.ERROR})


@dataclass(slots=True)
class Node:
    """One node of the run's tree, as Argo keeps it in `status.nodes` (saved after each change)."""

    id: str
    name: str
    type: str
    """Pod, DAG, Steps, StepGroup, TaskGroup, Retry, Skipped."""
    template: str
    parent: str | None
    phase: Phase = Phase.PENDING
    message: str = ""
    children: list[str] = field(default_factory=list)
    inputs: Json = field(default_factory=dict)
    outputs: Json = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    not_before: float | None = None
    """A retry node's backoff: the next attempt starts at this time."""
    pod: PodSpec | None = None

    @property
    def complete(self) -> bool:
        return self.phase in COMPLETE

    def to_json(self) -> Json:
        data = asdict(self)
        data["phase"] = self.phase.value
        data["pod"] = None if self.pod is None else self.pod.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Node:
        values = dict(data)
        values["phase"] = Phase(values["phase"])
        values["pod"] = None if values.get("pod") is None else PodSpec.from_json(values["pod"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class _Call:
    """One template call: the node to create, its template, its arguments, who calls it."""

    node_id: str
    display: str
    template: str
    parameters: Mapping[str, str]
    artifacts: Mapping[str, Json]
    parent: str
    retryable: bool = True
    attempt: int = 0
    node_name: str = ""
    """Argo's `node.name` for the call: an attempt's is its retry node's (every attempt of a
    step sees the same one, which is what keeps its checkpoint directory)."""


class Run:
    """One workflow run: the manifest (fixed at submission) and its nodes (what happened).

    The manifest is the managed one (`aistack_flows.manage`), already checked by `check`.
    `advance` may be called any number of times; it only adds nodes and completes them.
    """

    def __init__(
        self,
        manifest: Mapping[str, Any],
        *,
        name: str,
        uid: str,
        directory: str,
        created_at: float,
        nodes: Mapping[str, Node] = {},
        parameters: Mapping[str, str] = {},
    ) -> None:
        self.manifest = manifest
        self.name = name
        self.uid = uid
        self.directory = directory
        self.created_at = created_at
        self.nodes: dict[str, Node] = dict(nodes)
        self.changed: set[str] = set()
        spec: Mapping[str, Any] = manifest.get("spec") or {}
        self._spec = spec
        self._templates: dict[str, Json] = {t["name"]: t for t in spec.get("templates") or ()}
        given = {p["name"]: p for p in (spec.get("arguments") or {}).get("parameters") or ()}
        self.parameters = {
            name: str(parameters.get(name, p.get("value", p.get("default", ""))))
            for name, p in given.items()
        }
        self._parallelism = _optional_int(spec.get("parallelism"))

    # -- the walk -------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """The run's phase: the entrypoint's, then the exit handler's failure if it fails."""
        root = self.nodes.get(self.name)
        if root is None or not root.complete:
            return Phase.RUNNING if root is not None else Phase.PENDING
        handler = self._spec.get("onExit")
        if handler:
            exit_node = self.nodes.get(f"{self.name}.onExit")
            if exit_node is None or not exit_node.complete:
                return Phase.RUNNING
            if exit_node.phase in _UNSUCCESSFUL and root.phase is Phase.SUCCEEDED:
                return exit_node.phase
        return Phase.SUCCEEDED if root.phase in _FULFILLED else root.phase

    def advance(self, now: float) -> None:
        """Create every node that can start now and complete every node whose children are done."""
        self._now = now
        root = self._execute(
            _Call(
                node_id=self.name,
                display=self.name,
                template=str(self._spec["entrypoint"]),
                parameters=self.parameters,
                artifacts={},
                parent="",
            )
        )
        handler = self._spec.get("onExit")
        if root.complete and handler:
            self._status = Phase.SUCCEEDED.value if root.phase in _FULFILLED else root.phase.value
            self._execute(
                _Call(
                    node_id=f"{self.name}.onExit",
                    display=f"{self.name}.onExit",
                    template=str(handler),
                    parameters={},
                    artifacts={},
                    parent="",
                )
            )

    def pods(self) -> Iterator[Node]:
        """The run's pod nodes, in creation order."""
        return (node for node in self.nodes.values() if node.type == "Pod")

    def running_pods(self) -> int:
        return sum(1 for node in self.pods() if not node.complete)

    def pod_finished(
        self, node_id: str, phase: Phase, message: str, outputs: Json, now: float
    ) -> None:
        """The runner's report: a pod's step ended (outputs already collected)."""
        node = self.nodes[node_id]
        node.phase = phase
        node.message = message
        node.outputs = outputs
        node.finished_at = now
        self._touch(node)

    def pod_started(self, node_id: str, now: float, message: str = "") -> None:
        node = self.nodes[node_id]
        node.phase = Phase.RUNNING
        node.started_at = now
        node.message = message
        self._touch(node)

    # -- templates --------------------------------------------------------------------------

    def _execute(self, call: _Call) -> Node:
        existing = self.nodes.get(call.node_id)
        if existing is not None and existing.complete:
            return existing
        template = self._template(call.template, call.node_id)
        if call.retryable and template.get("retryStrategy"):
            return self._retry(call, template)
        inputs = self._inputs(template, call)
        if "dag" in template:
            return self._dag(call, template, inputs, existing)
        if "steps" in template:
            return self._steps(call, template, inputs, existing)
        return existing or self._pod(call, template, inputs)

    def _template(self, name: str, where: str) -> Json:
        template = self._templates.get(name)
        if template is None:
            raise RunError(f"{where}: no template named {name!r}")
        return template

    def _node(self, call: _Call, kind: str, **values: Any) -> Node:
        node = Node(
            id=call.node_id,
            name=call.display,
            type=kind,
            template=call.template,
            parent=call.parent or None,
            started_at=self._now,
            **values,
        )
        self.nodes[node.id] = node
        parent = self.nodes.get(call.parent)
        if parent is not None and node.id not in parent.children:
            parent.children.append(node.id)
            self._touch(parent)
        self._touch(node)
        return node

    def _touch(self, node: Node) -> None:
        self.changed.add(node.id)

    def _complete(
        self, node: Node, phase: Phase, message: str = "", outputs: Json | None = None
    ) -> Node:
        node.phase = phase
        node.message = message or node.message
        if outputs is not None:
            node.outputs = outputs
        node.finished_at = self._now
        self._touch(node)
        return node

    def _inputs(self, template: Mapping[str, Any], call: _Call) -> Json:
        """The template's inputs from the call's arguments and the declared defaults."""
        declared = template.get("inputs") or {}
        parameters: dict[str, str] = {}
        for parameter in declared.get("parameters") or ():
            name = parameter["name"]
            if name in call.parameters:
                value = str(call.parameters[name])
            elif "value" in parameter:
                value = str(parameter["value"])
            elif "default" in parameter:
                value = str(parameter["default"])
            else:
                raise RunError(
                    f"{call.node_id}: template {call.template} needs input parameter {name!r} "
                    "and the caller gives none"
                )
            allowed = parameter.get("enum")
            if allowed and value not in [str(v) for v in allowed]:
                raise RunError(
                    f"{call.node_id}: input parameter {name}={value!r} is not one of {allowed}"
                )
            parameters[name] = value
        artifacts: dict[str, Json] = {}
        for artifact in declared.get("artifacts") or ():
            name = artifact["name"]
            given = call.artifacts.get(name)
            if given is None and "raw" in artifact:
                given = {"raw": artifact["raw"].get("data", "")}
            if given is None and not artifact.get("optional"):
                raise RunError(
                    f"{call.node_id}: template {call.template} needs input artifact {name!r} "
                    "and the caller gives none"
                )
            if given is not None:
                artifacts[name] = {**given, "path": artifact.get("path", "")}
        return {"parameters": parameters, "artifacts": artifacts}

    # -- retries ----------------------------------------------------------------------------

    def _retry(self, call: _Call, template: Json) -> Node:
        node = self.nodes.get(call.node_id) or self._node(call, "Retry")
        strategy: Mapping[str, Any] = template["retryStrategy"]
        attempts = [self.nodes[c] for c in node.children]
        if attempts and not attempts[-1].complete:
            self._execute(self._attempt(call, len(attempts) - 1))
            attempts[-1] = self.nodes[node.children[-1]]
        if attempts and not attempts[-1].complete:
            return node
        if attempts:
            last = attempts[-1]
            if last.phase in _FULFILLED:
                return self._complete(node, last.phase, last.message, last.outputs)
            if not self._retries_left(strategy, attempts, call):
                return self._complete(node, last.phase, last.message, last.outputs)
            if node.not_before is None:
                node.not_before = self._now + _backoff(strategy, len(attempts), call.node_id)
                self._touch(node)
            if self._now < node.not_before:
                node.message = f"retrying in {node.not_before - self._now:.0f} s: {last.message}"
                return node
            node.not_before = None
        child = self._execute(self._attempt(call, len(attempts)))
        if child.complete and child.phase in _FULFILLED:
            return self._complete(node, child.phase, child.message, child.outputs)
        return node

    def _attempt(self, call: _Call, number: int) -> _Call:
        return _Call(
            node_id=f"{call.node_id}({number})",
            display=f"{call.display}({number})",
            template=call.template,
            parameters=call.parameters,
            artifacts=call.artifacts,
            parent=call.node_id,
            retryable=False,
            attempt=number,
            node_name=call.node_id,
        )

    def _retries_left(
        self, strategy: Mapping[str, Any], attempts: Sequence[Node], call: _Call
    ) -> bool:
        last = attempts[-1]
        limit = _optional_int(strategy.get("limit"))
        if limit is not None and len(attempts) > limit:
            return False
        policy = strategy.get("retryPolicy") or (
            "Always" if strategy.get("expression") else "OnFailure"
        )
        allowed = {
            "Always": _UNSUCCESSFUL,
            "OnFailure": {Phase.FAILED},
            "OnError": {Phase.ERROR},
            "OnTransientError": {Phase.ERROR},
        }.get(policy, {Phase.FAILED})
        if last.phase not in allowed:
            return False
        expression = strategy.get("expression")
        if not expression:
            return True
        started = last.started_at or self._now
        scope = {
            "lastRetry": {
                "exitCode": str(last.outputs.get("exitCode", "-1")),
                "status": last.phase.value,
                "duration": str(int((last.finished_at or self._now) - started)),
                "message": last.message,
            }
        }
        try:
            return bool(
                evaluate(str(expression), scope, where=f"{call.node_id} retryStrategy.expression")
            )
        except ExpressionError as error:
            raise RunError(str(error)) from error

    # -- DAGs -------------------------------------------------------------------------------

    def _dag(self, call: _Call, template: Json, inputs: Json, existing: Node | None) -> Node:
        node = existing or self._node(call, "DAG", inputs=inputs)
        tasks: list[Json] = template["dag"]["tasks"]
        by_name = {task["name"]: task for task in tasks}
        fail_fast = template["dag"].get("failFast", True)
        scope = self._scope(inputs)
        progress = True
        while progress:
            progress = False
            failed = self._unhandled_failures(node, tasks)
            for task in tasks:
                task_id = f"{call.node_id}.{task['name']}"
                current = self.nodes.get(task_id)
                if current is not None and current.complete:
                    continue
                if current is None:
                    if failed and fail_fast:
                        continue
                    depends = _depends(task, f"{call.node_id} task {task['name']}")
                    results = self._results(call.node_id, depends.tasks, by_name)
                    if results is None:
                        continue
                    if not depends.evaluate(results):
                        self._skip(task_id, task, call.node_id, Phase.OMITTED, "omitted: depends")
                        progress = True
                        continue
                    if self._limited(node):
                        continue
                scope["tasks"] = self._outputs_scope(call.node_id, by_name)
                before = self.nodes.get(task_id)
                after = self._call_task(task, task_id, scope, node)
                progress = progress or (
                    after is not None and after.complete and (before is None or not before.complete)
                )
        done = all(
            (n := self.nodes.get(f"{call.node_id}.{t['name']}")) is not None and n.complete
            for t in tasks
        )
        failed = self._unhandled_failures(node, tasks)
        if (
            failed
            and fail_fast
            and not any(not self.nodes[c].complete for c in node.children if c in self.nodes)
        ):
            return self._complete(
                node,
                Phase.FAILED,
                f"child {failed[0]} failed",
                self._template_outputs(template, scope, call),
            )
        if done:
            phase = Phase.FAILED if failed else Phase.SUCCEEDED
            message = f"child {failed[0]} failed" if failed else ""
            scope["tasks"] = self._outputs_scope(call.node_id, by_name)
            return self._complete(
                node, phase, message, self._template_outputs(template, scope, call)
            )
        return node

    def _call_task(self, task: Json, task_id: str, scope: Json, parent: Node) -> Node | None:
        """Run one DAG task or step: its `when`, its fan-out, then its template."""
        where = f"{parent.id} task {task['name']}"
        existing = self.nodes.get(task_id)
        if existing is None and "when" in task:
            text = self._substitute(str(task["when"]), scope, where=f"{where} when")
            try:
                go = condition(text, where=f"{where} when")
            except ExpressionError as error:
                raise RunError(str(error)) from error
            if not go:
                return self._skip(
                    task_id, task, parent.id, Phase.SKIPPED, f"when '{text}' evaluated false"
                )
        items = (
            self._items(task, scope, where)
            if existing is None or existing.type == "TaskGroup"
            else None
        )
        if items is not None:
            return self._fan_out(task, task_id, items, scope, parent)
        return self._execute(self._task_call(task, task_id, scope, parent.id, display=None))

    def _task_call(
        self, task: Json, task_id: str, scope: Json, parent: str, display: str | None
    ) -> _Call:
        where = f"{task_id} arguments"
        arguments = task.get("arguments") or {}
        parameters = {
            p["name"]: self._substitute(
                str(p.get("value", "")), scope, where=f"{where} {p['name']}"
            )
            for p in arguments.get("parameters") or ()
        }
        artifacts: dict[str, Json] = {}
        for artifact in arguments.get("artifacts") or ():
            if "from" in artifact:
                source = self._substitute(
                    str(artifact["from"]), scope, where=f"{where} {artifact['name']}"
                )
                artifacts[artifact["name"]] = {"from": source}
            elif "raw" in artifact:
                artifacts[artifact["name"]] = {
                    "raw": self._substitute(
                        str(artifact["raw"].get("data", "")), scope, where=where
                    )
                }
        if "template" not in task:
            raise RunError(f"{task_id}: a task must name its template")
        local_name = task_id.rpartition(".")[2]
        return _Call(
            node_id=task_id,
            display=display or local_name,
            template=str(task["template"]),
            parameters=parameters,
            artifacts=artifacts,
            parent=parent,
        )

    def _items(self, task: Json, scope: Json, where: str) -> list[Any] | None:
        if "withItems" in task:
            items = [
                self._substitute(item, scope, where=f"{where} withItems")
                if isinstance(item, str)
                else item
                for item in task["withItems"]
            ]
        elif "withParam" in task:
            text = self._substitute(str(task["withParam"]), scope, where=f"{where} withParam")
            try:
                items = json.loads(text)
            except json.JSONDecodeError as error:
                raise RunError(
                    f"{where}: withParam is not a JSON list: {text[:200]!r} ({error})"
                ) from None
            if not isinstance(items, list):
                raise RunError(f"{where}: withParam must give a JSON list, got {text[:200]!r}")
        elif "withSequence" in task:
            items = self._sequence(task["withSequence"], scope, where)
        else:
            return None
        if len(items) > MAX_FAN_OUT:
            raise RunError(f"{where}: fans out to {len(items)} members; the most is {MAX_FAN_OUT}")
        return items

    def _sequence(self, sequence: Mapping[str, Any], scope: Json, where: str) -> list[Any]:
        def number(key: str) -> int | None:
            if key not in sequence:
                return None
            text = self._substitute(str(sequence[key]), scope, where=f"{where} withSequence.{key}")
            try:
                return int(text)
            except ValueError:
                raise RunError(
                    f"{where}: withSequence.{key} must be a whole number, got {text!r}"
                ) from None

        count, start, end = number("count"), number("start"), number("end")
        first = start or 0
        if count is not None:
            values = list(range(first, first + count))
        elif end is not None:
            step = 1 if end >= first else -1
            values = list(range(first, end + step, step))
        else:
            raise RunError(f"{where}: withSequence needs count or end")
        pattern = sequence.get("format")
        return [_go_format(str(pattern), v, where) if pattern else str(v) for v in values]

    def _fan_out(
        self, task: Json, task_id: str, items: list[Any], scope: Json, parent: Node
    ) -> Node:
        call = _Call(
            node_id=task_id,
            display=task["name"],
            template=str(task.get("template", "")),
            parameters={},
            artifacts={},
            parent=parent.id,
        )
        group = self.nodes.get(task_id) or self._node(
            call, "TaskGroup", inputs={"items": len(items)}
        )
        for index, item in enumerate(items):
            label = item if isinstance(item, str) else json.dumps(item, separators=(",", ":"))
            member_id = f"{task_id}({index}:{label})"
            member = self.nodes.get(member_id)
            if member is not None and member.complete:
                continue
            if member is None and self._limited(group):
                break
            member_scope = {**scope, "item": item}
            member_call = self._task_call(
                task, member_id, member_scope, group.id, display=f"{task['name']}({index}:{label})"
            )
            self._execute(member_call)
        members = [self.nodes[c] for c in group.children]
        if len(members) == len(items) and all(m.complete for m in members):
            failed = [m for m in members if m.phase in _UNSUCCESSFUL]
            phase = Phase.FAILED if failed else Phase.SUCCEEDED
            return self._complete(
                group,
                phase,
                f"{len(failed)} of {len(items)} failed" if failed else "",
                _aggregate(members),
            )
        return group

    def _skip(self, task_id: str, task: Json, parent: str, phase: Phase, message: str) -> Node:
        call = _Call(
            node_id=task_id,
            display=task["name"],
            template=str(task.get("template", "")),
            parameters={},
            artifacts={},
            parent=parent,
        )
        node = self._node(call, "Skipped")
        return self._complete(node, phase, message)

    def _limited(self, node: Node) -> bool:
        """Whether a parallelism allows no new pod under `node` now.

        The parallelism of `node`'s template, of every enclosing one, and the workflow's.
        """
        if self._parallelism is not None and self.running_pods() >= self._parallelism:
            return True
        current: Node | None = node
        while current is not None:
            template = (
                self._templates.get(current.template) if current.type in {"DAG", "Steps"} else None
            )
            limit = _optional_int((template or {}).get("parallelism"))
            if limit is not None and self._incomplete_pods_under(current.id) >= limit:
                return True
            current = self.nodes.get(current.parent or "")
        return False

    def _incomplete_pods_under(self, node_id: str) -> int:
        count = 0
        stack = list(self.nodes[node_id].children)
        while stack:
            child = self.nodes[stack.pop()]
            if child.type == "Pod":
                count += not child.complete
            elif not child.complete:
                stack.extend(child.children)
        return count

    def _results(
        self, parent: str, names: frozenset[str], tasks: Mapping[str, Json]
    ) -> dict[str, TaskResult] | None:
        """The results of the named sibling tasks, or None while one of them is not complete."""
        results: dict[str, TaskResult] = {}
        for name in names:
            if name not in tasks:
                raise RunError(f"{parent}: depends on {name!r}, which is not a task of this DAG")
            node = self.nodes.get(f"{parent}.{name}")
            if node is None or not node.complete:
                return None
            children = (
                tuple(self.nodes[c].phase.value for c in node.children)
                if node.type == "TaskGroup"
                else ()
            )
            results[name] = TaskResult(phase=node.phase.value, children=children)
        return results

    def _unhandled_failures(self, node: Node, tasks: Sequence[Json]) -> list[str]:
        """Failed tasks that no other task expects to fail (by `depends` or `continueOn`)."""
        handled: set[str] = set()
        for task in tasks:
            if (task.get("continueOn") or {}).get("failed") or (task.get("continueOn") or {}).get(
                "error"
            ):
                handled.add(task["name"])
            text = str(task.get("depends") or "")
            handled.update(
                re.findall(
                    r"([A-Za-z0-9_-]+)\.(?:Failed|Errored|Completed|AllFailed|AnySucceeded)\b", text
                )
            )
        failed = []
        for task in tasks:
            child = self.nodes.get(f"{node.id}.{task['name']}")
            if child is not None and child.phase in _UNSUCCESSFUL and task["name"] not in handled:
                failed.append(child.name)
        return failed

    # -- steps ------------------------------------------------------------------------------

    def _steps(self, call: _Call, template: Json, inputs: Json, existing: Node | None) -> Node:
        node = existing or self._node(call, "Steps", inputs=inputs)
        scope = self._scope(inputs)
        scope["steps"] = {}
        groups: list[list[Json]] = template["steps"]
        for index, group in enumerate(groups):
            group_call = _Call(
                node_id=f"{call.node_id}[{index}]",
                display=f"[{index}]",
                template=call.template,
                parameters={},
                artifacts={},
                parent=call.node_id,
            )
            group_node = self.nodes.get(group_call.node_id) or self._node(group_call, "StepGroup")
            for step in group:
                step_id = f"{group_call.node_id}.{step['name']}"
                if self.nodes.get(step_id) is None and self._limited(node):
                    continue
                self._call_task(step, step_id, scope, group_node)
            results = [self.nodes.get(f"{group_call.node_id}.{s['name']}") for s in group]
            if not all(r is not None and r.complete for r in results):
                return node
            failed = [
                r.name
                for r, s in zip(results, group, strict=True)
                if r is not None
                and r.phase in _UNSUCCESSFUL
                and not (s.get("continueOn") or {}).get("failed")
            ]
            if group_node.phase not in COMPLETE:
                self._complete(group_node, Phase.FAILED if failed else Phase.SUCCEEDED)
            for step, result in zip(group, results, strict=True):
                assert result is not None
                scope["steps"][step["name"]] = _task_scope(result)
            if failed:
                return self._complete(
                    node,
                    Phase.FAILED,
                    f"child {failed[0]} failed",
                    self._template_outputs(template, scope, call),
                )
        return self._complete(
            node, Phase.SUCCEEDED, "", self._template_outputs(template, scope, call)
        )

    # -- outputs and scopes -----------------------------------------------------------------

    def _scope(self, inputs: Json) -> Json:
        workflow = {
            "name": self.name,
            "namespace": "local",
            "uid": self.uid,
            "parameters": dict(self.parameters),
            "labels": dict((self.manifest.get("metadata") or {}).get("labels") or {}),
            "annotations": dict((self.manifest.get("metadata") or {}).get("annotations") or {}),
            "creationTimestamp": _rfc3339(self.created_at),
            "mainEntrypoint": self._spec.get("entrypoint"),
        }
        status = getattr(self, "_status", None)
        if status is not None:
            workflow["status"] = status
            workflow["failures"] = json.dumps(self._failures(), separators=(",", ":"))
            workflow["duration"] = f"{self._now - self.created_at:.3f}"
        return {
            "workflow": workflow,
            "inputs": {
                "parameters": dict(inputs.get("parameters") or {}),
                "artifacts": dict(inputs.get("artifacts") or {}),
            },
        }

    def _failures(self) -> list[Json]:
        return [
            {
                "displayName": n.name,
                "message": n.message,
                "templateName": n.template,
                "phase": n.phase.value,
                "podName": n.pod.name if n.pod else "",
            }
            for n in self.nodes.values()
            if n.type == "Pod" and n.phase in _UNSUCCESSFUL
        ]

    def _outputs_scope(self, parent: str, tasks: Mapping[str, Json]) -> Json:
        scope: Json = {}
        for name in tasks:
            node = self.nodes.get(f"{parent}.{name}")
            if node is not None and node.complete:
                scope[name] = _task_scope(node)
        return scope

    def _template_outputs(self, template: Json, scope: Json, call: _Call) -> Json:
        """A DAG's or steps' own outputs: parameters `valueFrom.parameter` of its children."""
        outputs: Json = {"parameters": {}, "artifacts": {}}
        declared = template.get("outputs") or {}
        for parameter in declared.get("parameters") or ():
            source = (parameter.get("valueFrom") or {}).get("parameter")
            if source is None:
                continue
            try:
                outputs["parameters"][parameter["name"]] = self._substitute(
                    str(source), scope, where=f"{call.node_id} outputs"
                )
            except RunError:
                default = (parameter.get("valueFrom") or {}).get("default")
                if default is None:
                    raise
                outputs["parameters"][parameter["name"]] = str(default)
        for artifact in declared.get("artifacts") or ():
            source = artifact.get("from")
            if source:
                outputs["artifacts"][artifact["name"]] = self._substitute(
                    str(source), scope, where=f"{call.node_id} outputs"
                )
        return outputs

    def _substitute(self, text: str, scope: Mapping[str, Any], *, where: str) -> str:
        try:
            return substitute(text, scope, where=where)
        except ExpressionError as error:
            raise RunError(str(error)) from error

    # -- pods -------------------------------------------------------------------------------

    def _pod(self, call: _Call, template: Json, inputs: Json) -> Node:
        name = pod_name(self.name, call.template, call.node_id)
        directory = f"{self.directory}/pods/{name}"
        artifacts = inputs.get("artifacts") or {}
        scope = self._scope(inputs)
        scope["inputs"]["artifacts"] = {
            n: {"path": a.get("path", "")} for n, a in artifacts.items()
        }
        scope["retries"] = call.attempt
        scope["node"] = {"name": call.node_name or call.node_id}
        scope["pod"] = {"name": name}
        scope["outputs"] = {
            "parameters": {
                p["name"]: {"path": (p.get("valueFrom") or {}).get("path", "")}
                for p in (template.get("outputs") or {}).get("parameters") or ()
            },
            "artifacts": {
                a["name"]: {"path": a.get("path", "")}
                for a in (template.get("outputs") or {}).get("artifacts") or ()
            },
        }
        resolved = self._resolve(template, scope, call.node_id)
        workflow_volumes = {v["name"]: v for v in self._spec.get("volumes") or ()}
        spec = pod_spec(
            resolved,
            name=name,
            directory=directory,
            artifacts=artifacts,
            volumes=workflow_volumes | {v["name"]: v for v in resolved.get("volumes") or ()},
            claims={c["metadata"]["name"] for c in self._spec.get("volumeClaimTemplates") or ()},
            run_directory=self.directory,
        )
        node = self._node(call, "Pod", inputs=inputs, pod=spec)
        node.started_at = None
        return node

    def _resolve(self, value: Any, scope: Mapping[str, Any], where: str) -> Any:
        """The template with every placeholder replaced (nested DAGs and steps are not pods)."""
        if isinstance(value, str):
            return self._substitute(value, scope, where=where) if "{{" in value else value
        if isinstance(value, list):
            return [self._resolve(v, scope, where) for v in value]
        if isinstance(value, dict):
            return {
                k: v if k in {"retryStrategy"} else self._resolve(v, scope, f"{where} {k}")
                for k, v in value.items()
            }
        return value


# -- helpers ----------------------------------------------------------------------------------


def _task_scope(node: Node) -> Json:
    outputs = node.outputs or {}
    scope: Json = {
        "status": node.phase.value,
        "id": node.id,
        "outputs": {
            "parameters": dict(outputs.get("parameters") or {}),
            "artifacts": dict(outputs.get("artifacts") or {}),
        },
        "exitCode": str(outputs.get("exitCode", "")),
        "startedAt": _rfc3339(node.started_at or 0),
        "finishedAt": _rfc3339(node.finished_at or 0),
    }
    if "result" in outputs:
        scope["outputs"]["result"] = outputs["result"]
    return scope


def _aggregate(members: Sequence[Node]) -> Json:
    """A fan-out's outputs: each parameter and the results as JSON lists, in member order."""
    names: dict[str, None] = {}
    for member in members:
        names.update(dict.fromkeys(member.outputs.get("parameters") or {}))
    parameters = {
        name: json.dumps(
            [(m.outputs.get("parameters") or {}).get(name) for m in members], separators=(",", ":")
        )
        for name in names
    }
    outputs: Json = {"parameters": parameters, "artifacts": {}}
    results = [m.outputs.get("result") for m in members if "result" in m.outputs]
    if results:
        outputs["result"] = json.dumps([_maybe_json(r) for r in results], separators=(",", ":"))
    return outputs


def _maybe_json(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _depends(task: Mapping[str, Any], where: str) -> Depends:
    try:
        if "depends" in task:
            return parse_depends(str(task["depends"]), where=where)
        return Depends.from_dependencies([str(d) for d in task.get("dependencies") or ()])
    except ExpressionError as error:
        raise RunError(str(error)) from error


def _backoff(strategy: Mapping[str, Any], attempts: int, where: str) -> float:
    backoff = strategy.get("backoff") or {}
    if not backoff:
        return 0.0
    duration = _duration(backoff.get("duration", "0"), where)
    factor = float(backoff.get("factor", 1) or 1)
    delay = duration * factor ** (attempts - 1)
    cap = backoff.get("maxDuration")
    return min(delay, _duration(cap, where)) if cap else delay


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")


def _duration(text: Any, where: str) -> float:
    match = _DURATION.match(str(text).strip())
    if match is None:
        raise RunError(f"{where}: retryStrategy.backoff duration {text!r}: use e.g. 10s, 2m, 1h")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    return float(match.group(1)) * scale


def _optional_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


def _go_format(pattern: str, value: int, where: str) -> str:
    """`withSequence.format`, a printf pattern such as "shard-%02d" (Python's % is printf's)."""
    try:
        return pattern % value
    except (TypeError, ValueError):
        raise RunError(f"{where}: withSequence.format {pattern!r} must hold one %d") from None


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
