"""Experiment 1 (openb fragmentation): loaders, protocol, baselines, the core's scorer, the CLI."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from scheduler_service import cli
from scheduler_service.core import GPU, MILLI_GPU, Node, Queue, Request, Snapshot, Workload
from scheduler_service.core._fragmentation import Fragmentation, ShapeMix
from scheduler_service.core._placement import place
from scheduler_service.core._state import CycleState
from scheduler_service.sim._frag_baselines import BestFitPolicy, FgdPolicy, RandomPolicy, TaskMix
from scheduler_service.sim._frag_cluster import Choice, Shape
from scheduler_service.sim._fragmentation import (
    ARRIVED_PERCENT,
    CyclePolicy,
    arrivals,
    gpu_capacity_milli,
    run_policy,
)
from scheduler_service.sim._openb import OpenbPod, TraceError, load_nodes, load_pods

NODE_HEADER = "sn,cpu_milli,memory_mib,gpu,model\n"
POD_HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def gpu_node(name: str, gpus: int = 1, cpu_milli: int = 64_000) -> Node:
    return Node(
        name=name,
        pool="gpu",
        gpus=tuple(GPU(i, f"{name}-gpu{i}", "T4", 16_384) for i in range(gpus)),
        cpu_milli=cpu_milli,
        memory_mib=262_144,
    )


def slice_shape(milli: int, cpu_milli: int = 1000) -> Shape:
    return Shape(cpu_milli=cpu_milli, memory_mib=0, gpus=1, per_gpu_milli=milli)


# -- loaders ------------------------------------------------------------------------------


def test_nodes_map_to_core_nodes_with_published_memory(tmp_path: Path) -> None:
    path = write(tmp_path / "n.csv", NODE_HEADER + "a,32000,65536,2,V100M32\nb,8000,1024,0,\n")

    a, b = load_nodes(path)

    assert (a.pool, a.gpu_model, len(a.gpus), a.gpus[0].memory_mib) == (
        "V100M32",
        "V100M32",
        2,
        32_768,
    )
    assert (b.pool, b.gpus, b.cpu_milli) == ("cpu", (), 8000)


def test_pods_map_to_whole_gpus_slices_and_cpu_only(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.csv",
        POD_HEADER + "w,1000,10,2,1000,\nf,1000,10,1,1000,\ns,1000,10,1,460,T4|A10\nc,500,1,0,0,\n",
    )

    whole, full, share, cpu = load_pods(path)

    assert whole.request == Request(gpus=2, cpu_milli=1000, memory_mib=10)
    assert full.request.gpus == 1
    assert share.request.gpu_compute_percent == 46
    assert share.request.gpu_memory_mib == 16_384 * 460 // 1000  # the smaller of T4 and A10
    assert share.models == ("T4", "A10")
    assert (share.gpu_milli, whole.gpu_milli, cpu.gpu_milli) == (460, 2000, 0)
    assert cpu.request == Request(cpu_milli=500, memory_mib=1)


def test_gpu_spec_binds_gpu_pods_only_and_skips_empty_names(tmp_path: Path) -> None:
    # As the published simulator converts pods: a CPU-only pod's gpu_spec is dropped.
    path = write(tmp_path / "p.csv", POD_HEADER + "g,1,1,1,1000,V100M16||V100M32|\nc,1,1,0,0,T4\n")

    gpu, cpu = load_pods(path)

    assert gpu.models == ("V100M16", "V100M32")
    assert cpu.models == ()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("x,abc,10,1,1000,", "p.csv: line 2: cpu_milli must be an integer, got 'abc'"),
        ("x,1,10,9,1000,", "p.csv: line 2: num_gpu must be between 0 and 8, got 9"),
        ("x,1,10,2,500,", "p.csv: line 2: gpu_milli 500 < 1000 with num_gpu 2"),
        ("x,1,10,1,455,", "p.csv: line 2: gpu_milli 455 is not a multiple of 10"),
        ("x,1,10,0,300,", "p.csv: line 2: gpu_milli 300 given for a pod with num_gpu 0"),
        ("x,1,10,1,500,H100", "p.csv: line 2: gpu_spec names unknown model(s) ['H100']"),
        ("x,1,10,1", "p.csv: line 2: 4 fields, the header has 6"),
    ],
)
def test_invalid_pod_rows_name_file_line_and_problem(
    tmp_path: Path, row: str, message: str
) -> None:
    path = write(tmp_path / "p.csv", POD_HEADER + row + "\n")

    with pytest.raises(TraceError, match="^" + re.escape(message)):
        load_pods(path)


def test_invalid_node_rows_and_headers_are_named(tmp_path: Path) -> None:
    bad_model = write(tmp_path / "n.csv", NODE_HEADER + "a,1,1,1,T4\nb,1,1,2,H100\n")
    with pytest.raises(TraceError, match=r"^n.csv: line 3: unknown GPU model 'H100'"):
        load_nodes(bad_model)
    no_header = write(tmp_path / "m.csv", "sn,cpu_milli\n")
    with pytest.raises(TraceError, match=r"^m.csv: line 1: header lacks column\(s\)"):
        load_nodes(no_header)
    with pytest.raises(TraceError, match="cannot read"):
        load_nodes(tmp_path / "missing.csv")


# -- the protocol -------------------------------------------------------------------------


def pods_of(*milli: int) -> tuple[OpenbPod, ...]:
    pods = []
    for i, m in enumerate(milli):
        request = (
            Request(gpus=m // MILLI_GPU, cpu_milli=100)
            if m % MILLI_GPU == 0
            else Request(gpu_memory_mib=m, gpu_compute_percent=m // 10, cpu_milli=100)
        )
        pods.append(OpenbPod(f"p{i}", request, (), m))
    return tuple(pods)


def test_arrivals_resample_to_130_percent_and_are_deterministic() -> None:
    pods = pods_of(1000, 500, 250)
    capacity = 20 * MILLI_GPU

    first = arrivals(pods, capacity, seed=42)

    total = sum(p.gpu_milli for p in first)
    assert total >= capacity * ARRIVED_PERCENT // 100
    assert total - first[-1].gpu_milli < capacity * ARRIVED_PERCENT // 100
    assert first == arrivals(pods, capacity, seed=42)
    assert first != arrivals(pods, capacity, seed=43)
    assert {p.name for p in pods} <= {p.name for p in first}  # the list itself, then resamples


@pytest.mark.parametrize("policy", ["aistack", "aistack-known-mix", "fgd", "bestfit", "random"])
def test_a_run_is_a_function_of_its_seed(policy: str) -> None:
    nodes = tuple(gpu_node(f"n{i}", gpus=2) for i in range(4))
    pods = pods_of(1000, 500, 300, 700, 2000)

    run = run_policy(policy, nodes, pods, seed=7)

    assert run == run_policy(policy, nodes, pods, seed=7)
    assert len(run.allocated) == ARRIVED_PERCENT + 1
    assert 0 < run.final <= 1
    assert run.allocated == tuple(sorted(run.allocated))  # nothing ever leaves
    assert run.failed_pods > 0  # 130% cannot fit in 100%
    assert gpu_capacity_milli(nodes) == 8000


def test_the_aistack_policy_is_the_services_cycle_on_per_model_pools() -> None:
    """Each pod goes through `Scheduler.cycle` on the loader's pools, as the service runs."""
    t4 = tuple(gpu_node(f"t{i}", gpus=2) for i in range(2))
    a10 = tuple(
        Node(
            name=f"a{i}",
            pool="A10",
            gpus=tuple(GPU(g, f"a{i}-gpu{g}", "A10", 24_576) for g in range(2)),
            cpu_milli=64_000,
            memory_mib=262_144,
        )
        for i in range(2)
    )
    policy = CyclePolicy((*t4, *a10))
    placed = [policy.place(pod) for pod in pods_of(500, 1000, 300, 2000, 700, 2000, 2000)]
    assert placed.count(False) == 1  # 9 GPUs asked of 8: the third 2-GPU pod fits nowhere
    running = [w for w in policy.scheduler.snapshot().workloads if w.allocation]
    assert len(running) == placed.count(True)  # every admitted pod started, the others withdrawn
    snapshot = policy.scheduler.snapshot()
    assert {q.name for q in snapshot.queues} == {CyclePolicy.QUEUE}
    assert {n.pool for n in snapshot.nodes} == {"gpu", "A10"}
    assert snapshot.requests is not None
    assert {p.pool for p in snapshot.requests.pools} == {"gpu", "A10"}


# -- the baselines ------------------------------------------------------------------------


def test_bestfit_picks_the_tightest_node() -> None:
    policy = BestFitPolicy((gpu_node("roomy", gpus=2), gpu_node("tight", gpus=2)))
    policy.cluster.take(Shape(1000, 0, 1, MILLI_GPU), Choice(1, (0,)))

    assert policy.place(Shape(1000, 0, 1, MILLI_GPU))

    assert policy.cluster.nodes[1].free_gpus == [0, 0]
    assert policy.cluster.nodes[0].free_gpus == [1000, 1000]


def test_bestfit_packs_a_slice_on_the_tightest_gpu_and_fgd_avoids_stranding() -> None:
    nodes = (gpu_node("shared"), gpu_node("fresh"))
    half = slice_shape(500)
    bestfit = BestFitPolicy(nodes)
    fgd = FgdPolicy(nodes, TaskMix([half]))  # the workload: 50% slices only
    for policy in (bestfit, fgd):
        policy.cluster.take(slice_shape(400), Choice(0, (0,)))  # 600 milli left on "shared"

        assert policy.place(half)

    # BestFit fills the tighter GPU and strands 100 milli that no 50% slice can use;
    # FGD opens the fresh GPU, whose 500 milli left still fit the next slice.
    assert bestfit.cluster.nodes[0].free_gpus == [100]
    assert fgd.cluster.nodes[0].free_gpus == [600]
    assert fgd.cluster.nodes[1].free_gpus == [500]


def test_fgd_counts_gpus_behind_exhausted_cpu_as_fragments() -> None:
    mix = TaskMix([Shape(4000, 0, 1, MILLI_GPU)])

    assert mix.fragmentation("T4", 8000, (1000, 1000)) == 0.0
    assert mix.fragmentation("T4", 3000, (1000, 1000)) == 2000.0  # no task fits the CPU left
    assert mix.fragmentation("T4", 8000, (300, 1000)) == 300.0


def test_fgd_task_types_are_the_most_popular_ones_with_cpu_only_types() -> None:
    whole = Shape(1000, 0, 1, MILLI_GPU)
    rare = slice_shape(500)  # 1 pod in 20: outside the 95% most popular, dropped
    cpu_only = Shape(1000, 0, 0, 0)

    assert TaskMix([whole] * 19 + [rare]).fragmentation("T4", 8000, (500, 1000)) == 500.0
    kept = TaskMix([whole] * 19 + [rare], popularity_percent=100)
    assert kept.fragmentation("T4", 8000, (500, 1000)) == 0.95 * 500
    # A CPU-only type can use no GPU: all the free GPU capacity counts, for its share.
    assert TaskMix([whole, cpu_only]).fragmentation("T4", 8000, (1000, 1000)) == 1000.0


def test_fgd_gives_equal_scores_to_the_node_with_the_smallest_name() -> None:
    # "b" comes first in the node list and in another node class than "a"; a 1-GPU pod
    # strands nothing on either (score 50 on both), and the published simulator's scheduler
    # then takes the smallest name, not the first node or a random one.
    nodes = (gpu_node("b", gpus=2, cpu_milli=128_000), gpu_node("a", gpus=2))
    one = Shape(4000, 0, 1, MILLI_GPU)
    fgd = FgdPolicy(nodes, TaskMix([one]))

    assert fgd.place(one)
    assert fgd.place(one)  # "a" again: it still strands nothing and keeps the smaller name

    assert [n.free_gpus for n in fgd.cluster.nodes] == [[1000, 1000], [0, 0]]


def test_fgd_scores_near_equal_gradients_alike_as_kubernetes_does() -> None:
    # The score is int(100 * sigmoid(-increase / 1000 milli)): a 30% slice strands 10 milli on
    # "b" and 30 on "a", both score 49, and the smaller name wins where the exact gradient
    # would have chosen "b".
    nodes = (gpu_node("b"), gpu_node("a"))
    fgd = FgdPolicy(nodes, TaskMix([slice_shape(300)]))
    fgd.cluster.take(slice_shape(690), Choice(0, (0,)))  # "b": 310 left
    fgd.cluster.take(slice_shape(670), Choice(1, (0,)))  # "a": 330 left

    assert fgd.place(slice_shape(300))

    assert [n.free_gpus for n in fgd.cluster.nodes] == [[310], [30]]


def test_random_places_only_where_the_pod_fits_and_replays_by_seed() -> None:
    nodes = (gpu_node("full"), gpu_node("a"), gpu_node("b"))
    choices = []
    for _ in range(2):
        policy = RandomPolicy(nodes, random.Random(3))
        policy.cluster.take(Shape(0, 0, 1, MILLI_GPU), Choice(0, (0,)))
        assert policy.place(slice_shape(600))
        assert policy.place(slice_shape(600))
        assert not policy.place(slice_shape(600))
        choices.append([n.free_gpus for n in policy.cluster.nodes])
    assert choices[0] == choices[1] == [[0], [400], [400]]


# -- the core's fragmentation-aware placement ---------------------------------------------


def test_core_placement_with_a_mix_avoids_stranding_a_gpu_fraction() -> None:
    nodes = (gpu_node("a-shared"), gpu_node("b-fresh"))  # the first slice goes to "a-"
    half = Request(gpu_memory_mib=8192, gpu_compute_percent=50, cpu_milli=1000)
    small = Request(gpu_memory_mib=6553, gpu_compute_percent=40, cpu_milli=1000)
    chosen = []
    for scorer in (Fragmentation(ShapeMix([(half, (), 1)])), None):
        state = CycleState(Snapshot(nodes=nodes, queues=(Queue("q"),)))
        first = place(state, Workload("w0", "q", request=small), "gpu")
        assert first is not None
        assert first[0].node == "a-shared"

        allocation = place(state, Workload("w1", "q", request=half), "gpu", scorer=scorer)

        assert allocation is not None
        chosen.append(allocation[0].node)
    # With the mix the 50% slice opens the fresh GPU (the 60% left still fits the next one);
    # without it the core packs the shared GPU (the tightest fit), stranding 10%.
    assert chosen == ["b-fresh", "a-shared"]


@pytest.mark.parametrize("gpus", [2, 3])
def test_lookahead_sees_the_cpu_a_node_needs_for_its_last_gpu(gpus: int) -> None:
    # Pods of the mix take a GPU and 4 CPUs. "tight" has CPU for all its GPUs only if it takes
    # the 2-CPU pod now; "roomy" has CPU to spare. Looking `gpus - 2` pods ahead both stay
    # usable (gradient 0, a tie that goes to the first node); `gpus - 1` pods ahead sees
    # "tight" strand its last GPU unless it takes the small pod.
    tight_cpu = 4000 * gpus - 2000
    nodes = (
        gpu_node("roomy", gpus=gpus, cpu_milli=tight_cpu + 4000),
        gpu_node("tight", gpus=gpus, cpu_milli=tight_cpu),
    )
    small = Request(gpus=1, cpu_milli=2000)
    usual = Request(gpus=1, cpu_milli=4000)
    mix = ShapeMix([(usual, (), 1)])
    placed = []
    for ahead in (gpus - 2, gpus - 1):
        scorer = Fragmentation(mix, lookahead=ahead)
        state = CycleState(Snapshot(nodes=nodes, queues=(Queue("q"),)))
        first = place(state, Workload("w0", "q", request=small), "gpu", scorer=scorer)
        assert first is not None
        later = [
            place(state, Workload(f"w{i}", "q", request=usual), "gpu", scorer=scorer)
            for i in range(1, 2 * gpus)
        ]
        placed.append((first[0].node, sum(a is not None for a in later)))
    # Looking one pod too few ahead strands a GPU of "tight".
    assert placed == [("roomy", 2 * gpus - 2), ("tight", 2 * gpus - 1)]


def test_a_mix_by_demand_weighs_shapes_by_the_gpus_they_ask_for() -> None:
    one, eight = Request(gpus=1, cpu_milli=1000), Request(gpus=8, cpu_milli=1000)
    shapes = [(one, (), 4), (eight, (), 1)]
    seven_free = ("T4", 64_000, (0,) + (100,) * 7)  # fits the 1-GPU pods, not the 8-GPU one

    assert ShapeMix(shapes).fragmentation(seven_free) == pytest.approx(700 * 1 / 5)
    assert ShapeMix(shapes, by_demand=True).fragmentation(seven_free) == pytest.approx(700 * 8 / 12)


# -- the command line ---------------------------------------------------------------------


def test_cli_runs_the_experiment_on_a_tiny_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [f"n{i},32000,131072,{2 if i % 2 else 4},{'T4' if i % 2 else 'G2'}" for i in range(6)]
    write(tmp_path / "openb_node_list_gpu_node.csv", NODE_HEADER + "\n".join(rows) + "\n")
    shapes = ["1,1000", "1,500", "1,300", "2,1000", "0,0", "1,810"]
    pods = [f"p{i},2000,4096,{shapes[i % len(shapes)]}," for i in range(30)]
    write(tmp_path / "openb_pod_list_tiny.csv", POD_HEADER + "\n".join(pods) + "\n")
    out = tmp_path / "out"

    status = cli.main(
        [
            "sim",
            "fragmentation",
            "--data",
            str(tmp_path),
            "--trace",
            "tiny",
            "--seeds",
            "1-2",
            "--workers",
            "1",
            "--out",
            str(out),
        ]
    )

    stdout, stderr = capsys.readouterr()
    assert status == 0, stderr
    assert "policy    mean %   min %   max %  failed pods  published %" in stdout
    assert "[8/8] tiny" in stderr
    result = json.loads((out / "fragmentation_tiny.json").read_text())
    assert set(result["policies"]) == {"aistack", "fgd", "bestfit", "random"}
    assert len(result["policies"]["fgd"]["mean_curve_percent"]) == ARRIVED_PERCENT + 1
    assert (out / "fragmentation_tiny.png").stat().st_size > 1000


def test_cli_rejects_bad_seeds_and_names_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["sim", "fragmentation", "--seeds", "x"]) == 2
    assert cli.main(["sim", "fragmentation", "--data", str(tmp_path)]) == 2
    _, err = capsys.readouterr()
    assert "--seeds: expected e.g. 42-51" in err
    assert "openb_node_list_gpu_node.csv: cannot read" in err
