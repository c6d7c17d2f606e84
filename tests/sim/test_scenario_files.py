"""Scenario files: what a valid file becomes, and the message every kind of mistake gets."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from scheduler_service.core import Kind, PoolQuota, Request, TopologyWish
from scheduler_service.sim import (
    NodeChange,
    ScenarioError,
    Submission,
    bundled_scenario,
    load_scenario,
    parse_scenario,
)

CLUSTER = """
[cluster]
[[cluster.nodes]]
name = "n1"

[[queues]]
name = "team"
quota = 8
"""


def _parse(text: str, *, cluster: bool = True) -> object:
    return parse_scenario((CLUSTER if cluster else "") + textwrap.dedent(text), source="s.toml")


def test_a_full_scenario_becomes_nodes_queues_events_and_settings() -> None:
    scenario = parse_scenario(
        textwrap.dedent(
            """\
            # The story.
            #   Indented detail.

            [cluster]
            [[cluster.nodes]]
            name = "h"
            count = 2
            pool = "h100"
            gpus = 4
            gpu_memory_mib = 1000
            numa_nodes = 2
            topology = { block = "b1", rack = "r1" }
            labels = { disk = "nvme" }
            taints = ["dedicated"]

            [[cluster.nodes]]
            name = "a1"
            pool = "a100"
            model = "A100"

            [[queues]]
            name = "org"

            [[queues]]
            name = "team"
            parent = "org"
            priority = 3
            quotas = { h100 = { quota = 2, limit = 6, over_quota_weight = 2 } }
            reclaim_min_runtime_seconds = 60

            [policy]
            preempt_min_runtime_seconds = 30
            reserve_for_gangs = false

            [[events]]
            at = 5
            submit = "serve"
            count = 2
            queue = "team"
            kind = "infer"
            slice = { compute_percent = 25, memory_gib = 0.5 }
            duration_seconds = 60

            [[events]]
            at = 7.5
            submit = "gang"
            queue = "team"
            pods = 2
            gpus = 4
            priority = -1
            pools = ["h100", "a100"]
            models = ["H100"]
            preemptible = false
            topology = { level = "rack" }
            node_selector = { disk = "nvme" }
            tolerations = ["dedicated"]
            duration_seconds = 600

            [[events]]
            at = 100
            node_down = "h1"

            [[events]]
            at = 200
            node_up = "h1"

            [run]
            until = 1000
            cycle_seconds = 5
            eviction_grace_seconds = 0
            checkpoint_seconds = 120
            """
        ),
        source="full.toml",
    )

    assert scenario.description == "The story.\n  Indented detail."
    h1, h2, a1 = scenario.nodes
    assert (h1.name, h2.name, a1.name) == ("h1", "h2", "a1")
    assert [g.numa_node for g in h1.gpus] == [0, 0, 1, 1]
    assert h1.gpus[3].memory_mib == 1000
    assert h1.topology == (("block", "b1"), ("rack", "r1"))
    assert (h1.labels, h1.taints) == ((("disk", "nvme"),), ("dedicated",))
    assert (a1.pool, a1.gpu_model, len(a1.gpus), a1.gpus[0].memory_mib) == (
        "a100",
        "A100",
        8,
        80 * 1024,
    )
    team = scenario.queues[1]
    assert (team.parent, team.priority, team.reclaim_min_runtime_seconds) == ("org", 3, 60)
    assert team.quotas == (PoolQuota("h100", quota=2, limit=6, over_quota_weight=2),)
    assert not scenario.policy.reserve_for_gangs
    assert scenario.policy.preempt_min_runtime_seconds == 30

    serve_1, serve_2, gang, down, up = scenario.events
    assert isinstance(serve_1, Submission)
    assert isinstance(serve_2, Submission)
    assert isinstance(gang, Submission)
    assert (serve_1.workload.name, serve_2.workload.name) == ("serve-1", "serve-2")
    assert serve_1.workload.kind is Kind.INFER
    assert serve_1.workload.request == Request(gpu_memory_mib=512, gpu_compute_percent=25)
    assert (gang.at, gang.duration_seconds) == (7.5, 600)
    assert gang.workload.request == Request(gpus=4)
    assert gang.workload.topology == TopologyWish("rack", required=True)
    assert gang.workload.pools == ("h100", "a100")
    assert gang.workload.preemptible is False
    assert down == NodeChange(at=100, node="h1", ready=False)
    assert up == NodeChange(at=200, node="h1", ready=True)
    assert scenario.until == 1000
    assert scenario.settings.cycle_seconds == 5
    assert scenario.settings.eviction_grace_seconds == 0
    assert scenario.settings.checkpoint_seconds == 120


def test_defaults() -> None:
    scenario = parse_scenario(CLUSTER, source="s.toml")

    (node,) = scenario.nodes
    assert (node.pool, node.gpu_model, len(node.gpus)) == ("default", "H100", 8)
    assert scenario.queues[0].quotas == (PoolQuota("default", quota=8),)
    assert scenario.events == ()
    assert scenario.until is None
    assert scenario.settings.cycle_seconds == 10
    assert scenario.settings.eviction_grace_seconds == 30
    assert scenario.settings.checkpoint_seconds is None


SUBMIT = """
[[events]]
at = 0
submit = "w"
queue = "team"
duration_seconds = 10
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SUBMIT + "gpu = 2\n", "events[0]: unknown field 'gpu'; did you mean 'gpus'?"),
        (
            '[[events]]\nat = 0\nsubmit = "w"\nqueue = "team"\ngpus = 1\nduration = 5\n',
            "events[0]: unknown field 'duration'; did you mean 'duration_seconds'?",
        ),
        (SUBMIT + 'gpus = "4"\n', "events[0]: field 'gpus' must be a whole number, got the "),
        (SUBMIT + "gpus = true\n", "events[0]: field 'gpus' must be a whole number, got true"),
        (SUBMIT + "gpus = 0\n", "events[0]: field 'gpus' must be >= 1, got 0"),
        (SUBMIT, "events[0]: give gpus (whole GPUs per pod) or slice"),
        (
            SUBMIT + "gpus = 1\nslice = { compute_percent = 10, memory_gib = 1 }\n",
            "give gpus (whole GPUs per pod) or slice (a share of one GPU), exactly one",
        ),
        (
            SUBMIT + "slice = { compute_percent = 150, memory_gib = 1 }\n",
            "events[0].slice: field 'compute_percent' must be <= 100, got 150",
        ),
        (
            SUBMIT + "slice = { compute_percent = 10 }\n",
            "events[0].slice: missing field 'memory_gib' (or 'memory_mib')",
        ),
        (SUBMIT + 'gpus = 1\nkind = "batch"\n', "field 'kind' must be one of build, train, infer"),
        (SUBMIT + "gpus = 1\ntopology = { required = true }\n", "missing field 'level'"),
        (SUBMIT + "gpus = 1\nat = 1\n", "not valid TOML"),
        (
            '[[events]]\nat = 0\nnode_down = "n1"\nnode_up = "n1"\n',
            "events[0]: give exactly one of submit, node_down, node_up, got node_down, node_up",
        ),
        ('[[events]]\nat = 0\nnode_down = "n2"\n', "events[0]: no node 'n2' in the cluster"),
        (
            '[[events]]\nat = 5\nnode_down = "n1"\n[[events]]\nat = 9\nnode_down = "n1"\n',
            "events[1]: node 'n1' is already down (since events[0])",
        ),
        ('[[events]]\nat = 5\nnode_up = "n1"\n', "events[0]: node 'n1' is not down at t=5"),
        (
            SUBMIT + "gpus = 1\n" + SUBMIT + "gpus = 2\n",
            "events[1]: workload 'w' is already submitted by events[0]",
        ),
        (SUBMIT + "gpus = 1\n[run]\nuntil = -1\n", "run: field 'until' must be >= 0, got -1"),
        (
            SUBMIT.replace("at = 0", "at = 50") + "gpus = 1\n[run]\nuntil = 10\n",
            "events[0]: at=50 is after run.until=10; it would never happen",
        ),
        ("[run]\ncycle_seconds = 0\n", "run: field 'cycle_seconds' must be > 0, got 0"),
        ("[run]\ncheckpoint = 60\n", "run: unknown field 'checkpoint'; did you mean"),
        ("[polcy]\n", "top level: unknown field 'polcy'; did you mean 'policy'?"),
        ("[policy]\nreserve_for_gangs = 1\n", "field 'reserve_for_gangs' must be true or false"),
    ],
)
def test_mistakes_in_events_run_and_policy_are_named(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as error:
        _parse(text)

    assert str(error.value).startswith("s.toml: ")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "top level: missing table [cluster]"),
        ("[cluster]\n", "cluster: needs at least one [[cluster.nodes]] entry"),
        ("[cluster]\nnodes = 3\n", "cluster: field 'nodes' must be an array of tables"),
        ("[[cluster.nodes]]\ngpus = 2\n", "cluster.nodes[0]: missing field 'name'"),
        (
            '[[cluster.nodes]]\nname = "n"\ngpus = 3\nnuma_nodes = 2\n',
            "gpus (3) must divide evenly into numa_nodes (2)",
        ),
        (
            '[[cluster.nodes]]\nname = "n"\ngpu_memory_gib = 80\ngpu_memory_mib = 1\n',
            "give gpu_memory_gib or gpu_memory_mib, not both",
        ),
        (
            '[[cluster.nodes]]\nname = "n"\ncount = 2\n[[cluster.nodes]]\nname = "n2"\n',
            "cluster.nodes[1]: node 'n2' is already defined by cluster.nodes[0]",
        ),
        (
            '[[cluster.nodes]]\nname = "n"\ntopology = { rack = 1 }\n',
            "field 'topology' must be a table of non-empty strings",
        ),
        (
            '[[cluster.nodes]]\nname = "n"\npool = "h100"\n'
            '[[queues]]\nname = "q"\nquotas = { h10 = { quota = 1 } }\n',
            "queues[0].quotas: unknown pool 'h10'; did you mean 'h100'?",
        ),
        (
            '[[cluster.nodes]]\nname = "n"\n[[queues]]\nname = "q"\nquota = 4\nlimit = 2\n',
            "queues[0]: limit (2) must be >= quota (4)",
        ),
        (
            '[[cluster.nodes]]\nname = "n"\n[[queues]]\nname = "q"\nquota = 1\n'
            "quotas = { default = { quota = 1 } }\n",
            "give quota for every pool, or quotas per pool, not both",
        ),
        (
            '[[cluster.nodes]]\nname = "n"\n[[queues]]\nname = "q"\nparent = "org"\n',
            "queue 'q': parent 'org' does not exist",
        ),
        (
            '[[cluster.nodes]]\nname = "n"\n[[queues]]\nname = "q"\n[[queues]]\nname = "q"\n',
            "duplicate queue 'q'",
        ),
    ],
)
def test_mistakes_in_the_cluster_and_queues_are_named(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as error:
        _parse(text, cluster=False)

    assert str(error.value).startswith("s.toml: ")
    assert message in str(error.value)


def test_a_missing_file_is_a_scenario_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ScenarioError, match=r"nope\.toml: cannot read the scenario"):
        load_scenario(missing)


def test_a_binary_file_is_a_scenario_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00")

    with pytest.raises(ScenarioError, match="not a text file"):
        load_scenario(path)


def test_errors_name_the_file_as_given(tmp_path: Path) -> None:
    path = tmp_path / "three_researchers.toml"
    path.write_text(CLUSTER + SUBMIT + "gpu = 2\n", encoding="utf-8")

    with pytest.raises(ScenarioError) as error:
        load_scenario(path)

    assert str(error.value) == (f"{path}: events[0]: unknown field 'gpu'; did you mean 'gpus'?")


def test_unknown_bundled_scenario() -> None:
    with pytest.raises(ScenarioError, match="no bundled scenario 'nope'"):
        bundled_scenario("nope")
