"""Scenario files: a cluster, its queues and a list of timed events, in TOML a person can read.

Times are virtual seconds: `at` and `until` are points on the clock, fields ending in
`_seconds` are lengths of time. Layout (every field is checked; unknown fields are errors):

    [cluster]
    [[cluster.nodes]]      name, pool ("default"), model ("H100"), gpus (8),
                           gpu_memory_gib (80) or gpu_memory_mib, numa_nodes (1),
                           topology = { block = "b1", rack = "r1" } (widest level first),
                           labels = { key = "value" }, taints = ["key"],
                           count: N nodes named name1 .. nameN
    [[queues]]             name, parent, priority, reclaim_min_runtime_seconds,
                           preempt_min_runtime_seconds, and per pool either
                           quota / limit / over_quota_weight (the same in every pool) or
                           quotas = { h100 = { quota = 2, limit = 4, over_quota_weight = 1 } }
    [policy]               reclaim_min_runtime_seconds, preempt_min_runtime_seconds,
                           reserve_for_gangs
    [[events]]             at, and one of:
                           submit = "name": queue, duration_seconds, kind ("train"),
                             gpus or slice = { compute_percent = 20, memory_gib = 10 },
                             pods (1), priority (0), pools, models, preemptible,
                             topology = { level = "rack", required = true },
                             node_selector = { key = "value" }, tolerations,
                             count: N workloads named name-1 .. name-N
                           node_down = "name" | node_up = "name"
    [run]                  until, cycle_seconds (10), eviction_grace_seconds (30),
                           checkpoint_seconds (absent: no checkpoints)

Errors are `ScenarioError`s naming the file, the entry and the problem.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from scheduler_service.core import (
    GPU,
    Kind,
    Node,
    Policy,
    PoolQuota,
    Queue,
    Request,
    Snapshot,
    SnapshotError,
    TopologyWish,
    Workload,
)
from scheduler_service.sim._engine import Engine
from scheduler_service.sim._fields import Fields, ScenarioError
from scheduler_service.sim._inputs import EngineSettings, Faults, NodeChange, Submission
from scheduler_service.sim._result import SimulationResult

__all__ = [
    "BUNDLED_SCENARIOS",
    "Scenario",
    "bundled_scenario",
    "load_scenario",
    "parse_scenario",
    "run_scenario",
]

BUNDLED_SCENARIOS = ("three_researchers",)
"""Scenarios shipped inside the package (`scheduler_service/sim/scenarios/<name>.toml`)."""

_MIB_PER_GIB = 1024
_TOP = ("cluster", "queues", "policy", "events", "run")
_NODE = (
    "name",
    "count",
    "pool",
    "model",
    "gpus",
    "gpu_memory_gib",
    "gpu_memory_mib",
    "numa_nodes",
    "topology",
    "labels",
    "taints",
)
_SHARE = ("quota", "limit", "over_quota_weight")
_QUEUE = (
    "name",
    "parent",
    "priority",
    "quotas",
    "reclaim_min_runtime_seconds",
    "preempt_min_runtime_seconds",
    *_SHARE,
)
_POLICY = ("reclaim_min_runtime_seconds", "preempt_min_runtime_seconds", "reserve_for_gangs")
_SUBMIT = (
    "at",
    "submit",
    "count",
    "queue",
    "duration_seconds",
    "kind",
    "gpus",
    "slice",
    "pods",
    "priority",
    "pools",
    "models",
    "preemptible",
    "topology",
    "node_selector",
    "tolerations",
)
_NODE_EVENT = ("at", "node_down", "node_up")
_ACTIONS = ("submit", "node_down", "node_up")
_RUN = ("until", "cycle_seconds", "eviction_grace_seconds", "checkpoint_seconds")


@dataclass(frozen=True, slots=True)
class Scenario:
    """A parsed, validated scenario: what to build, what happens when, and how long to run.

    `description` is the file's leading comment block (the story the scenario tells), without
    the `#`s. `until` None runs until nothing can change any more (see `Engine.advance`).
    """

    source: str
    description: str
    nodes: tuple[Node, ...]
    queues: tuple[Queue, ...]
    policy: Policy
    events: tuple[Submission | NodeChange, ...]
    settings: EngineSettings
    until: float | None


def load_scenario(path: Path | str) -> Scenario:
    """Read and validate a scenario file; `ScenarioError` if it is missing or invalid."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read the scenario: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not a text file (UTF-8 expected)") from None
    return parse_scenario(text, source=str(path))


def bundled_scenario(name: str) -> Scenario:
    """One of `BUNDLED_SCENARIOS`, read from inside the installed package."""
    if name not in BUNDLED_SCENARIOS:
        raise ScenarioError(
            f"no bundled scenario {name!r} (bundled: {', '.join(BUNDLED_SCENARIOS)})"
        )
    folder = resources.files("scheduler_service.sim").joinpath("scenarios")
    text = folder.joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return parse_scenario(text, source=f"{name}.toml")


def run_scenario(scenario: Scenario, faults: Faults | None = None) -> SimulationResult:
    """Replay the scenario's events on a fresh `Engine` and return what happened.

    `faults` injects failed patches and crashed pods from its seed (see `Faults`).
    """
    engine = Engine(
        nodes=scenario.nodes,
        queues=scenario.queues,
        policy=scenario.policy,
        settings=scenario.settings,
        faults=faults,
    )
    for event in scenario.events:
        engine.post(event)
    engine.advance(scenario.until)
    return engine.result()


def parse_scenario(text: str, *, source: str) -> Scenario:
    """Validate scenario `text`; `source` names it in error messages (usually the path)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{source}: not valid TOML: {error}") from None
    top = Fields(data, source=source, where="top level", allowed=_TOP)
    nodes = _nodes(top)
    pools = sorted({node.pool for node in nodes})
    queues = tuple(
        _queue(Fields(entry, source=source, where=f"queues[{i}]", allowed=_QUEUE), pools)
        for i, entry in enumerate(top.tables("queues"))
    )
    policy = _policy(top.table("policy", _POLICY)) if top.has("policy") else Policy()
    try:
        Snapshot(nodes=nodes, queues=queues, policy=policy)
    except SnapshotError as error:
        raise ScenarioError(f"{source}: {error}") from None
    run = (
        top.table("run", _RUN)
        if top.has("run")
        else Fields({}, source=source, where="run", allowed=_RUN)
    )
    until = run.optional_number("until")
    settings = EngineSettings(
        cycle_seconds=run.number("cycle_seconds", 10.0, positive=True),
        eviction_grace_seconds=run.number("eviction_grace_seconds", 30.0),
        checkpoint_seconds=run.optional_number("checkpoint_seconds", positive=True),
    )
    events = _events(top, {node.name for node in nodes}, until)
    return Scenario(
        source=source,
        description=_description(text),
        nodes=nodes,
        queues=queues,
        policy=policy,
        events=events,
        settings=settings,
        until=until,
    )


def _description(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(lines).strip()


# -- cluster -----------------------------------------------------------------------------------


def _nodes(top: Fields) -> tuple[Node, ...]:
    if not top.has("cluster"):
        raise top.error("missing table [cluster] (with [[cluster.nodes]] entries)")
    cluster = top.table("cluster", ("nodes",), where="cluster")
    entries = cluster.tables("nodes")
    if not entries:
        raise cluster.error("needs at least one [[cluster.nodes]] entry")
    nodes: list[Node] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(entries):
        fields = Fields(entry, source=top.source, where=f"cluster.nodes[{i}]", allowed=_NODE)
        for node in _node_group(fields):
            if node.name in seen:
                raise fields.error(f"node {node.name!r} is already defined by {seen[node.name]}")
            seen[node.name] = fields.where
            nodes.append(node)
    return tuple(nodes)


def _node_group(fields: Fields) -> list[Node]:
    name = fields.string("name")
    count = fields.integer("count", minimum=1) if fields.has("count") else None
    gpus = fields.integer("gpus", 8)
    numa_nodes = fields.integer("numa_nodes", 1, minimum=1)
    if gpus % numa_nodes:
        raise fields.error(f"gpus ({gpus}) must divide evenly into numa_nodes ({numa_nodes})")
    memory_mib = _memory_mib(fields, "gpu_memory", default_gib=80)
    names = [name] if count is None else [f"{name}{i}" for i in range(1, count + 1)]
    model = fields.string("model", "H100")
    try:
        return [
            Node(
                name=node_name,
                pool=fields.string("pool", "default"),
                gpus=tuple(
                    GPU(
                        index=i,
                        uuid=f"GPU-{node_name}-{i}",
                        model=model,
                        memory_mib=memory_mib,
                        numa_node=i * numa_nodes // gpus,
                    )
                    for i in range(gpus)
                ),
                labels=fields.string_table("labels"),
                taints=fields.strings("taints"),
                topology=fields.string_table("topology"),
            )
            for node_name in names
        ]
    except SnapshotError as error:
        raise fields.error(str(error)) from None


def _memory_mib(fields: Fields, prefix: str, *, default_gib: int | None) -> int:
    gib, mib = f"{prefix}_gib", f"{prefix}_mib"
    if fields.has(gib) and fields.has(mib):
        raise fields.error(f"give {gib} or {mib}, not both")
    if fields.has(mib):
        return fields.integer(mib, minimum=1)
    if fields.has(gib):
        return round(fields.number(gib, positive=True) * _MIB_PER_GIB)
    if default_gib is None:
        raise fields.error(f"missing field {gib!r} (or {mib!r})")
    return default_gib * _MIB_PER_GIB


# -- queues and policy -------------------------------------------------------------------------


def _queue(fields: Fields, pools: list[str]) -> Queue:
    name = fields.string("name")
    shorthand = [key for key in _SHARE if fields.has(key)]
    if shorthand and fields.has("quotas"):
        raise fields.error(
            f"give {', '.join(shorthand)} for every pool, or quotas per pool, not both"
        )
    if shorthand:
        quotas = tuple(_pool_quota(fields, pool) for pool in pools)
    elif fields.has("quotas"):
        table = fields.table("quotas", pools, noun="pool")
        quotas = tuple(
            _pool_quota(table.table(pool, _SHARE), pool) for pool in pools if table.has(pool)
        )
    else:
        quotas = ()
    try:
        return Queue(
            name=name,
            parent=fields.optional_string("parent"),
            priority=fields.integer("priority", 0, minimum=-(2**31)),
            quotas=quotas,
            reclaim_min_runtime_seconds=fields.optional_number("reclaim_min_runtime_seconds"),
            preempt_min_runtime_seconds=fields.optional_number("preempt_min_runtime_seconds"),
        )
    except SnapshotError as error:
        raise fields.error(str(error)) from None


def _pool_quota(fields: Fields, pool: str) -> PoolQuota:
    quota = fields.number("quota", 0.0)
    limit = fields.optional_number("limit")
    if limit is not None and limit < quota:
        raise fields.error(f"limit ({limit:g}) must be >= quota ({quota:g})")
    return PoolQuota(
        pool=pool,
        quota=quota,
        limit=limit,
        over_quota_weight=fields.number("over_quota_weight", 1.0),
    )


def _policy(fields: Fields) -> Policy:
    return Policy(
        reclaim_min_runtime_seconds=fields.number("reclaim_min_runtime_seconds", 0.0),
        preempt_min_runtime_seconds=fields.number("preempt_min_runtime_seconds", 0.0),
        reserve_for_gangs=fields.boolean("reserve_for_gangs", True),
    )


# -- events ------------------------------------------------------------------------------------


def _events(
    top: Fields, node_names: set[str], until: float | None
) -> tuple[Submission | NodeChange, ...]:
    events: list[Submission | NodeChange] = []
    submitted: dict[str, str] = {}
    node_changes: list[tuple[float, int, NodeChange]] = []
    for i, entry in enumerate(top.tables("events")):
        where = f"events[{i}]"
        actions = [a for a in _ACTIONS if isinstance(entry, dict) and a in entry]
        if len(actions) != 1:
            Fields(entry, source=top.source, where=where, allowed=(*_SUBMIT, *_NODE_EVENT))
            raise ScenarioError(
                f"{top.source}: {where}: give exactly one of "
                f"{', '.join(_ACTIONS)}, got {', '.join(actions) or 'none'}"
            )
        allowed = _SUBMIT if actions == ["submit"] else _NODE_EVENT
        fields = Fields(entry, source=top.source, where=where, allowed=allowed)
        at = fields.number("at")
        if until is not None and at > until:
            raise fields.error(f"at={at:g} is after run.until={until:g}; it would never happen")
        if actions == ["submit"]:
            for submission in _submissions(fields, at):
                name = submission.workload.name
                if name in submitted:
                    raise fields.error(
                        f"workload {name!r} is already submitted by {submitted[name]}"
                    )
                submitted[name] = where
                events.append(submission)
        else:
            node = fields.string(actions[0])
            if node not in node_names:
                raise fields.error(
                    f"no node {node!r} in the cluster (nodes: {', '.join(sorted(node_names))})"
                )
            change = NodeChange(at=at, node=node, ready=actions[0] == "node_up")
            node_changes.append((at, i, change))
            events.append(change)
    _check_node_changes(top, node_changes)
    return tuple(events)


def _check_node_changes(top: Fields, changes: list[tuple[float, int, NodeChange]]) -> None:
    """Nodes go down only when up and come up only when down, in time order."""
    down_since: dict[str, int] = {}
    for _, index, change in sorted(changes, key=lambda item: (item[0], item[1])):
        where = f"{top.source}: events[{index}]"
        if not change.ready and change.node in down_since:
            raise ScenarioError(
                f"{where}: node {change.node!r} is already down "
                f"(since events[{down_since[change.node]}])"
            )
        if change.ready and change.node not in down_since:
            raise ScenarioError(f"{where}: node {change.node!r} is not down at t={change.at:g}")
        if change.ready:
            del down_since[change.node]
        else:
            down_since[change.node] = index


def _submissions(fields: Fields, at: float) -> list[Submission]:
    name = fields.string("submit")
    count = fields.integer("count", minimum=1) if fields.has("count") else None
    names = [name] if count is None else [f"{name}-{i}" for i in range(1, count + 1)]
    kind_text = fields.string("kind", "train")
    kinds = [kind.value for kind in Kind]
    if kind_text not in kinds:
        raise fields.error(f"field 'kind' must be one of {', '.join(kinds)}, got {kind_text!r}")
    duration = fields.number("duration_seconds", positive=True)
    try:
        workloads = [
            Workload(
                name=workload_name,
                queue=fields.string("queue"),
                kind=Kind(kind_text),
                request=_request(fields),
                pods=fields.integer("pods", 1, minimum=1),
                priority=fields.integer("priority", 0, minimum=-(2**31)),
                submitted_at=at,
                pools=fields.strings("pools"),
                models=fields.strings("models"),
                topology=_topology(fields),
                node_selector=fields.string_table("node_selector"),
                tolerations=fields.strings("tolerations"),
                preemptible=fields.optional_boolean("preemptible"),
            )
            for workload_name in names
        ]
    except SnapshotError as error:
        raise fields.error(str(error)) from None
    return [Submission(at=at, workload=w, duration_seconds=duration) for w in workloads]


def _request(fields: Fields) -> Request:
    if fields.has("gpus") == fields.has("slice"):
        raise fields.error(
            "give gpus (whole GPUs per pod) or slice (a share of one GPU), exactly one"
        )
    if fields.has("gpus"):
        return Request(gpus=fields.integer("gpus", minimum=1))
    share = fields.table("slice", ("compute_percent", "memory_gib", "memory_mib"))
    compute = share.integer("compute_percent", minimum=1)
    if compute > 100:
        raise share.error(f"field 'compute_percent' must be <= 100, got {compute}")
    return Request(
        gpu_memory_mib=_memory_mib(share, "memory", default_gib=None), gpu_compute_percent=compute
    )


def _topology(fields: Fields) -> TopologyWish | None:
    if not fields.has("topology"):
        return None
    wish = fields.table("topology", ("level", "required"))
    return TopologyWish(level=wish.string("level"), required=wish.boolean("required", True))
