"""The admission webhooks' decisions, on the JSON the API server sends."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from scheduler_service import pod_contract as keys
from scheduler_service.api import AdmissionDecision
from scheduler_service.core import GPU, Node, Queue
from scheduler_service.gpu_sharing import GpuSharing
from scheduler_service.kube import KubeWebhooks
from scheduler_service.kube._admission import QueueUnreadableError
from tests.kube.objects import make_pod, make_queue

QUEUES = {
    "org": Queue("org"),
    "a": Queue("a", parent="org"),
    "b": Queue("b", parent="org"),
}


def hooks(workloads: int = 0) -> KubeWebhooks:
    return KubeWebhooks(lambda: QUEUES, lambda _queue: workloads)


def apply_patch(document: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply RFC 6902 `add` operations (all the pod webhook emits)."""
    result = copy.deepcopy(document)
    for op in patch:
        assert op["op"] == "add"
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"][1:].split("/")
        ]
        target: Any = result
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target.append(op["value"]) if last == "-" else target.insert(int(last), op["value"])
        else:
            target[last] = op["value"]
    return result


def pod_create(pod: dict[str, Any]) -> dict[str, Any]:
    created = copy.deepcopy(pod)
    created["spec"].pop("schedulingGates", None)
    created["metadata"]["labels"].pop(keys.MANAGED_LABEL, None)
    return {"operation": "CREATE", "object": created, "namespace": "team"}


def test_a_slice_pod_is_gated_and_wired_to_its_allocation_annotations() -> None:
    pod = make_pod("s", "a", gpu_memory_mib=4096, gpu_compute_percent=30)
    pod["spec"]["containers"][0]["env"] = [
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
        {"name": "KEEP", "value": "me"},
    ]
    decision = hooks().mutate_pod(pod_create(pod))
    assert decision.allowed
    mutated = apply_patch(pod_create(pod)["object"], decision.patch)
    assert mutated["spec"]["schedulingGates"] == [{"name": keys.SCHEDULING_GATE}]
    assert mutated["metadata"]["labels"][keys.MANAGED_LABEL] == "true"
    env = {e["name"]: e for e in mutated["spec"]["containers"][0]["env"]}
    assert env["KEEP"] == {"name": "KEEP", "value": "me"}
    assert env["NVIDIA_VISIBLE_DEVICES"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        f"metadata.annotations['{keys.DEVICE_ANNOTATION}']"
    )
    assert "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT" in env
    assert any("removed NVIDIA_VISIBLE_DEVICES" in w for w in decision.warnings)


def test_a_whole_gpu_pod_leaves_the_devices_to_the_device_plugin() -> None:
    pod = make_pod("w", "a", gpus=2)
    decision = hooks().mutate_pod(pod_create(pod))
    mutated = apply_patch(pod_create(pod)["object"], decision.patch)
    names = [e["name"] for e in mutated["spec"]["containers"][0]["env"]]
    assert names == ["AISTACK_GPUS"]


def test_a_second_invocation_adds_nothing_twice() -> None:
    pod = make_pod("w", "a", gpus=1)
    once = apply_patch(pod_create(pod)["object"], hooks().mutate_pod(pod_create(pod)).patch)
    again = hooks().mutate_pod({"operation": "CREATE", "object": once})
    twice = apply_patch(once, again.patch)
    assert twice["spec"]["schedulingGates"] == [{"name": keys.SCHEDULING_GATE}]
    assert [e["name"] for e in twice["spec"]["containers"][0]["env"]] == ["AISTACK_GPUS"]
    assert again.warnings == ()


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        ("nope", "queue 'nope' does not exist (leaf queues: a, b)"),
        ("org", "queue 'org' is a parent queue (children: a, b)"),
    ],
)
def test_pods_for_unknown_or_parent_queues_are_refused(queue: str, message: str) -> None:
    decision = hooks().mutate_pod(pod_create(make_pod("p", queue, gpus=1)))
    assert not decision.allowed
    assert message in decision.message


def test_a_queue_the_watch_has_not_brought_yet_is_read_from_the_api_server() -> None:
    # A queue created a moment before its first pod: the cache lacks it, the API server has it.
    asked: list[str] = []

    def read_queue(name: str) -> Queue | None:
        asked.append(name)
        return Queue(name) if name == "new" else None

    webhooks = KubeWebhooks(lambda: QUEUES, lambda _queue: 0, read_queue)
    assert webhooks.mutate_pod(pod_create(make_pod("p", "new", gpus=1))).allowed
    missing = webhooks.mutate_pod(pod_create(make_pod("p", "nope", gpus=1)))
    assert "queue 'nope' does not exist (leaf queues: a, b)" in missing.message
    assert webhooks.mutate_pod(pod_create(make_pod("p", "a", gpus=1))).allowed
    assert asked == ["new", "nope"]  # a cached queue costs no API call


def test_a_queue_that_cannot_be_read_refuses_the_pod_with_a_retry() -> None:
    def read_queue(name: str) -> Queue | None:
        raise QueueUnreadableError("HTTP 503 Service Unavailable")

    webhooks = KubeWebhooks(lambda: QUEUES, lambda _queue: 0, read_queue)
    decision = webhooks.mutate_pod(pod_create(make_pod("p", "new", gpus=1)))
    assert not decision.allowed
    assert decision.message == (
        "queue 'new' is not known to the scheduler yet and could not be read from the API "
        "server (HTTP 503 Service Unavailable); create the pod again in a moment"
    )


def test_a_pod_that_names_its_node_is_refused() -> None:
    pod = make_pod("p", "a", gpus=1)
    pod["spec"]["nodeName"] = "n1"
    decision = hooks().mutate_pod(pod_create(pod))
    assert not decision.allowed
    assert "spec.nodeName is set" in decision.message


def test_queue_parents_must_exist_and_not_loop() -> None:
    missing = hooks().validate_queue({"operation": "CREATE", "object": make_queue("c", parent="x")})
    assert not missing.allowed
    assert "parent 'x' does not exist" in missing.message
    loop = hooks().validate_queue({"operation": "UPDATE", "object": make_queue("org", parent="a")})
    assert not loop.allowed
    assert "its own ancestor" in loop.message
    fine = hooks().validate_queue({"operation": "CREATE", "object": make_queue("c", parent="org")})
    assert fine.allowed


def test_queues_with_children_or_workloads_cannot_be_deleted() -> None:
    parent = hooks().validate_queue(
        {"operation": "DELETE", "oldObject": {"metadata": {"name": "org"}}}
    )
    assert not parent.allowed
    assert "parent of a, b" in parent.message
    busy = hooks(workloads=3).validate_queue(
        {"operation": "DELETE", "oldObject": {"metadata": {"name": "a"}}}
    )
    assert not busy.allowed
    assert "3 workload(s)" in busy.message
    assert (
        hooks()
        .validate_queue({"operation": "DELETE", "oldObject": {"metadata": {"name": "a"}}})
        .allowed
    )


# -- Argo's pods ---------------------------------------------------------------------------------

GPU_ENV = ("AISTACK_", "NVIDIA_", "CUDA_")


def argo_pod(name: str = "wf-train-1") -> dict[str, Any]:
    """A pod as Argo builds it for a step: `wait` (its executor), then the step's `main`."""
    pod = make_pod(name, "a", gpu_memory_mib=4096, gpu_compute_percent=30)
    pod["metadata"]["labels"]["workflows.argoproj.io/workflow"] = "wf"
    main = pod["spec"]["containers"][0]
    wait = {"name": "wait", "image": "argoexec", "env": [{"name": "ARGO_POD_NAME", "value": name}]}
    pod["spec"]["containers"] = [wait, main]
    pod["spec"]["initContainers"] = [{"name": "init", "image": "argoexec"}]
    return pod


def env_names(pod: dict[str, Any], container: str) -> list[str]:
    (found,) = [c for c in pod["spec"]["containers"] if c["name"] == container]
    return [e["name"] for e in found.get("env") or ()]


def test_argo_s_wait_container_gets_no_gpu_variables_and_main_gets_all() -> None:
    pod = argo_pod()
    decision = hooks().mutate_pod(pod_create(pod))
    mutated = apply_patch(pod_create(pod)["object"], decision.patch)

    assert env_names(mutated, "wait") == ["ARGO_POD_NAME"]
    assert env_names(mutated, "main") == [name for name, _, _ in keys.ALLOCATION_ENVIRONMENT]
    assert mutated["spec"]["initContainers"] == [{"name": "init", "image": "argoexec"}]


def test_argo_s_wait_container_loses_gpu_variables_set_by_the_user() -> None:
    pod = argo_pod()
    pod["spec"]["containers"][0]["env"].append({"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"})
    decision = hooks().mutate_pod(pod_create(pod))
    mutated = apply_patch(pod_create(pod)["object"], decision.patch)

    assert env_names(mutated, "wait") == ["ARGO_POD_NAME"]
    assert "container wait: removed NVIDIA_VISIBLE_DEVICES" in decision.warnings[0]


def test_a_container_named_wait_outside_argo_is_a_step_container() -> None:
    pod = argo_pod()
    del pod["metadata"]["labels"]["workflows.argoproj.io/workflow"]
    mutated = apply_patch(pod_create(pod)["object"], hooks().mutate_pod(pod_create(pod)).patch)

    assert [n for n in env_names(mutated, "wait") if n.startswith(GPU_ENV)] == env_names(
        mutated, "main"
    )


# -- GPU pods without a queue label --------------------------------------------------------------


def unlabelled(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod without the queue label (its creator did not name a queue)."""
    del pod["metadata"]["labels"][keys.QUEUE_LABEL]
    return pod


class Defaults:
    """The default queues as `KubeWebhooks` reads them, counting the reads."""

    def __init__(self, defaults: dict[str, tuple[str, ...]] | Exception) -> None:
        self.defaults = defaults
        self.reads = 0

    def __call__(self) -> dict[str, tuple[str, ...]]:
        self.reads += 1
        if isinstance(self.defaults, Exception):
            raise self.defaults
        return self.defaults


def defaulting(defaults: dict[str, tuple[str, ...]] | Exception) -> tuple[KubeWebhooks, Defaults]:
    read = Defaults(defaults)
    return KubeWebhooks(lambda: QUEUES, lambda _queue: 0, default_queues=read), read


def test_a_pod_without_queue_label_or_gpus_is_not_touched() -> None:
    webhooks, read = defaulting({"a": ("team",)})
    cpu_only = unlabelled(make_pod("p"))
    zero = unlabelled(make_pod("z"))
    zero["spec"]["containers"][0]["resources"] = {"limits": {keys.GPU_RESOURCE: "0"}}

    for pod in (cpu_only, zero):
        decision = webhooks.mutate_pod(pod_create(pod))
        assert decision.allowed
        assert decision.patch == ()
    assert read.reads == 0  # no GPUs asked: no API call either


def test_an_unlabelled_gpu_pod_without_a_default_queue_is_refused() -> None:
    webhooks, _ = defaulting({"b": ("elsewhere",)})
    decision = webhooks.mutate_pod(pod_create(unlabelled(make_pod("p", gpus=1))))

    assert not decision.allowed
    assert decision.message == (
        "pod p asks for nvidia.com/gpu but has no label aistack.io/queue, and namespace 'team' "
        "has no default queue: GPUs are handed out by the AI-Stack scheduler only. Add label "
        "aistack.io/queue=<leaf queue> to the pod (kubectl get queues lists them), or ask a "
        "cluster admin to name the namespace in a Queue's spec.defaultFor.namespaces"
    )


@pytest.mark.parametrize("where", ["requests", "limits"])
def test_gpus_asked_only_by_an_init_container_make_a_gpu_pod(where: str) -> None:
    webhooks, _ = defaulting({})
    pod = unlabelled(make_pod("p"))
    pod["spec"]["initContainers"] = [
        {"name": "warmup", "resources": {where: {keys.GPU_RESOURCE: "2"}}}
    ]

    decision = webhooks.mutate_pod(pod_create(pod))

    assert not decision.allowed
    assert "has no default queue" in decision.message


def test_an_unlabelled_gpu_pod_joins_its_namespace_s_default_queue() -> None:
    webhooks, _ = defaulting({"a": ("team", "other"), "b": ("elsewhere",)})
    pod = unlabelled(make_pod("p", gpus=1))
    decision = webhooks.mutate_pod(pod_create(pod))
    mutated = apply_patch(pod_create(pod)["object"], decision.patch)

    assert decision.allowed
    assert mutated["metadata"]["labels"] == {keys.QUEUE_LABEL: "a", keys.MANAGED_LABEL: "true"}
    assert mutated["spec"]["schedulingGates"] == [{"name": keys.SCHEDULING_GATE}]
    assert env_names(mutated, "main") == ["AISTACK_GPUS"]
    assert decision.warnings == (
        "no label aistack.io/queue: the pod asks for nvidia.com/gpu, so it was put in queue "
        "'a', the default queue of namespace 'team'; it waits for the scheduler like any pod "
        "of that queue",
    )
    # Reinvoked (another webhook changed the pod after ours), it is an ordinary managed pod.
    again = webhooks.mutate_pod({"operation": "CREATE", "object": mutated, "namespace": "team"})
    assert apply_patch(mutated, again.patch) == mutated
    assert again.warnings == ()


def test_a_pod_without_any_label_gets_the_labels_map() -> None:
    webhooks, _ = defaulting({"a": ("team",)})
    pod = unlabelled(make_pod("p", gpus=1))
    request = pod_create(pod)
    del request["object"]["metadata"]["labels"]

    mutated = apply_patch(request["object"], webhooks.mutate_pod(request).patch)

    assert mutated["metadata"]["labels"] == {keys.QUEUE_LABEL: "a", keys.MANAGED_LABEL: "true"}


def test_a_defaulted_pod_is_checked_like_a_labelled_one() -> None:
    webhooks, _ = defaulting({"a": ("team",)})
    pod = unlabelled(make_pod("p", gpus=1, annotations={keys.PRIORITY_ANNOTATION: "high"}))

    decision = webhooks.mutate_pod(pod_create(pod))

    assert not decision.allowed
    assert "annotation aistack.io/priority='high' must be an integer" in decision.message


def test_a_namespace_claimed_by_two_default_queues_refuses_unlabelled_gpu_pods() -> None:
    webhooks, _ = defaulting({"b": ("team",), "a": ("team",)})
    decision = webhooks.mutate_pod(pod_create(unlabelled(make_pod("p", gpus=1))))

    assert not decision.allowed
    assert "namespace 'team' has 2 default queues (a, b)" in decision.message


def test_default_queues_that_cannot_be_read_refuse_with_a_retry() -> None:
    webhooks, _ = defaulting(QueueUnreadableError("HTTP 503 Service Unavailable"))
    decision = webhooks.mutate_pod(pod_create(unlabelled(make_pod("p", gpus=1))))

    assert not decision.allowed
    assert decision.message.endswith(
        "the default queue of namespace 'team' could not be read from the API server (HTTP 503 "
        "Service Unavailable); create the pod again in a moment"
    )


def test_labelled_pods_never_read_the_default_queues() -> None:
    webhooks, read = defaulting({"a": ("team",)})
    assert webhooks.mutate_pod(pod_create(make_pod("p", "b", gpus=1))).allowed
    assert read.reads == 0


# -- requests no node could ever hold ------------------------------------------------------------


def gpu_node(
    name: str, *, gpus: int = 8, pool: str = "h100", model: str = "H100", memory_mib: int = 81920
) -> Node:
    return Node(
        name=name,
        pool=pool,
        gpus=tuple(
            GPU(index=i, uuid=f"{name}/{i}", model=model, memory_mib=memory_mib)
            for i in range(gpus)
        ),
    )


NODES = (
    gpu_node("h1"),
    gpu_node("h2", gpus=4),
    gpu_node("a1", gpus=4, pool="a100", model="A100", memory_mib=40960),
    Node(name="cpu", pool="h100"),
)


def sized(nodes: tuple[Node, ...] = NODES) -> KubeWebhooks:
    return KubeWebhooks(lambda: QUEUES, lambda _queue: 0, nodes=lambda: nodes)


def fit_pod(gpus: int = 0, memory_mib: int = 0, **annotations: str) -> dict[str, Any]:
    notes = {f"aistack.io/{key.replace('_', '-')}": value for key, value in annotations.items()}
    return make_pod(
        "p",
        gpus=gpus,
        gpu_memory_mib=memory_mib,
        gpu_compute_percent=10 if memory_mib else 0,
        annotations=notes,
    )


JUDGED = (
    ". This is judged on the GPU nodes the scheduler knows now; if more are coming, create the "
    "pod again once they have joined"
)


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        (
            fit_pod(gpus=9),
            "pod p: the pod asks for 9 whole GPUs and the biggest node has 8 (node h1, pool "
            "h100, H100); split the work into a gang of smaller pods (label aistack.io/gang)",
        ),
        (
            fit_pod(gpus=5, pools="a100"),
            "pod p: the pod asks for 5 whole GPUs and the biggest node in pool(s) a100 has 4 "
            "(node a1, pool a100, A100)",
        ),
        (
            fit_pod(gpus=5, gpu_models="A100"),
            "biggest node with GPU model A100 has 4 (node a1, pool a100, A100)",
        ),
        (
            fit_pod(memory_mib=81921),
            "pod p: a slice of 81921 MiB is larger than any GPU: the largest has 81920 MiB "
            "(H100 on node h2); ask for at most 81920 MiB",
        ),
        (
            fit_pod(memory_mib=50000, pools="a100"),
            "a slice of 50000 MiB is larger than any GPU in pool(s) a100: the largest has 40960 "
            "MiB (A100 on node a1)",
        ),
        (
            fit_pod(gpus=1, pools="h100,b200"),
            "pod p: annotation aistack.io/pools names pool(s) b200 that no GPU node is in "
            "(pools: a100, h100)",
        ),
        (
            fit_pod(gpus=1, gpu_models="B200,GB200"),
            "pod p: no GPU node has GPU model B200 or GB200 (models: A100, H100)",
        ),
        (
            fit_pod(gpus=1, pools="a100", gpu_models="H100"),
            "no GPU node in pool(s) a100 has GPU model H100 (models: A100)",
        ),
    ],
)
def test_a_request_no_node_could_ever_hold_is_refused(pod: dict[str, Any], message: str) -> None:
    decision = sized().mutate_pod(pod_create(pod))

    assert not decision.allowed
    assert message in decision.message
    assert decision.message.endswith(JUDGED)


@pytest.mark.parametrize(
    "pod",
    [
        fit_pod(gpus=8),
        fit_pod(gpus=4, pools="a100"),
        fit_pod(memory_mib=81920),
        fit_pod(gpus=8, pools="a100,h100", gpu_models="A100,H100"),
        fit_pod(),
    ],
)
def test_a_request_the_biggest_node_holds_is_admitted(pod: dict[str, Any]) -> None:
    assert sized().mutate_pod(pod_create(pod)).allowed


def test_nothing_is_refused_while_no_gpu_node_is_known() -> None:
    """A cluster that is starting, or a service that has not listed its nodes, refuses nobody."""
    for nodes in [(), (Node(name="cpu", pool="h100"),)]:
        decision = sized(nodes).mutate_pod(pod_create(fit_pod(gpus=64, pools="nowhere")))
        assert decision.allowed


def test_a_refusal_is_confirmed_on_the_nodes_the_api_server_has_now() -> None:
    """The cache lags: a node that joined a moment ago is read before a pod is refused."""
    read: list[str] = []

    def fresh() -> tuple[Node, ...]:
        read.append("nodes")
        return (*NODES, gpu_node("big", gpus=16))

    webhooks = KubeWebhooks(lambda: QUEUES, lambda _queue: 0, nodes=lambda: NODES, read_nodes=fresh)
    assert webhooks.mutate_pod(pod_create(fit_pod(gpus=8))).allowed
    assert read == []  # a pod that fits costs no API call
    assert webhooks.mutate_pod(pod_create(fit_pod(gpus=16))).allowed
    refused = webhooks.mutate_pod(pod_create(fit_pod(gpus=17)))
    assert "the biggest node has 16 (node big" in refused.message
    assert read == ["nodes", "nodes"]


# -- messages that stay short --------------------------------------------------------------------


def test_an_unknown_queue_lists_the_five_closest_leaves_and_how_many_more() -> None:
    queues = {
        "org": Queue("org"),
        **{f"team-{i}": Queue(f"team-{i}", parent="org") for i in range(12)},
    }
    queues["vision"] = Queue("vision", parent="org")
    webhooks = KubeWebhooks(lambda: queues, lambda _queue: 0)

    decision = webhooks.mutate_pod(pod_create(make_pod("p", "visoin", gpus=1)))

    assert decision.message.startswith("queue 'visoin' does not exist (leaf queues: vision, ")
    assert "and 8 more); set label aistack.io/queue to an existing queue (kubectl get queues" in (
        decision.message
    )
    assert decision.message.count("team-") == 4


# -- default queues in the queue webhook ---------------------------------------------------------


def queue_request(operation: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"operation": operation, "object": make_queue(name, **spec)}


def test_a_namespace_may_have_only_one_default_queue() -> None:
    webhooks, _ = defaulting({"a": ("team", "ml")})

    taken = webhooks.validate_queue(
        queue_request("CREATE", "c", parent="org", defaultFor={"namespaces": ["ml", "new"]})
    )
    assert not taken.allowed
    assert taken.message == (
        "queue 'c': spec.defaultFor.namespaces names namespaces that already have a default "
        "queue: 'ml' (queue 'a'); a namespace has at most one default queue, so remove it from "
        "one of the two"
    )
    own = webhooks.validate_queue(
        queue_request("UPDATE", "a", parent="org", defaultFor={"namespaces": ["team", "x"]})
    )
    assert own.allowed  # a queue may change its own list
    free = webhooks.validate_queue(
        queue_request("CREATE", "c", parent="org", defaultFor={"namespaces": ["new"]})
    )
    assert free.allowed


def test_a_default_queue_is_a_leaf() -> None:
    webhooks, _ = defaulting({"a": ("team",)})

    parent = webhooks.validate_queue(
        queue_request("UPDATE", "org", defaultFor={"namespaces": ["ml"]})
    )
    assert not parent.allowed
    assert "the queue has children (a, b) and pods run in leaf queues only" in parent.message
    child = webhooks.validate_queue(queue_request("CREATE", "c", parent="a"))
    assert not child.allowed
    assert "parent 'a' is the default queue of namespace(s) team, and a default queue must be" in (
        child.message
    )


def test_a_bad_default_for_is_refused_naming_the_field() -> None:
    webhooks, _ = defaulting({})
    decision = webhooks.validate_queue(
        queue_request("CREATE", "c", parent="org", defaultFor={"namespaces": ["Team_A"]})
    )
    assert not decision.allowed
    assert "queue c: spec.defaultFor.namespaces must be a list of namespace names" in (
        decision.message
    )


def test_default_queues_are_read_only_when_a_queue_could_conflict() -> None:
    webhooks, read = defaulting(QueueUnreadableError("HTTP 503 Service Unavailable"))
    assert webhooks.validate_queue(queue_request("CREATE", "root")).allowed
    assert read.reads == 0
    refused = webhooks.validate_queue(queue_request("CREATE", "c", parent="org"))
    assert not refused.allowed
    assert refused.message == (
        "queue 'c': the default queues (spec.defaultFor) could not be read from the API server "
        "(HTTP 503 Service Unavailable); try again in a moment"
    )


def test_deleting_a_default_queue_warns_that_its_namespaces_lose_it() -> None:
    old = make_queue("a", parent="org", defaultFor={"namespaces": ["team"]})
    decision = hooks().validate_queue({"operation": "DELETE", "oldObject": old})
    assert decision.allowed
    assert decision.warnings == (
        "namespace(s) team lose their default queue: GPU pods without label aistack.io/queue "
        "are refused there from now on",
    )


# -- slices under MPS ------------------------------------------------------------------------------

MPS_POOLS = GpuSharing(default="none", pools={"h100": "mps"}, mps_root="/run/mps")


def mps_hooks() -> KubeWebhooks:
    return KubeWebhooks(lambda: QUEUES, lambda _queue: 0, gpu_sharing=MPS_POOLS)


def test_where_a_pool_uses_mps_a_slice_mounts_only_its_gpu_s_daemon_and_the_shared_memory() -> None:
    pod = argo_pod()
    pod["spec"]["containers"][1]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    pod["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    decision = mps_hooks().mutate_pod(pod_create(pod))
    mutated = apply_patch(pod_create(pod)["object"], decision.patch)

    assert mutated["spec"]["volumes"] == [
        {"name": "data", "emptyDir": {}},
        {"name": "aistack-mps", "hostPath": {"path": "/run/mps", "type": "DirectoryOrCreate"}},
        {
            "name": "aistack-mps-shm",
            "hostPath": {"path": "/run/mps/shm", "type": "DirectoryOrCreate"},
        },
    ]
    wait, main = mutated["spec"]["containers"]
    assert main["volumeMounts"] == [
        {"name": "data", "mountPath": "/data"},
        {
            "name": "aistack-mps",
            "mountPath": "/var/run/aistack-mps",
            "subPathExpr": "$(AISTACK_MPS_GPU)/pipe",
        },
        {"name": "aistack-mps-shm", "mountPath": "/dev/shm"},
    ]
    env = {e["name"]: e for e in main["env"]}
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == {
        "name": "CUDA_MPS_PIPE_DIRECTORY",
        "value": "/var/run/aistack-mps",
    }
    assert env["AISTACK_MPS_GPU"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        f"metadata.annotations['{keys.MPS_GPU_ANNOTATION}']"
    )
    # Argo's executor neither mounts the daemon nor learns the GPU.
    assert "volumeMounts" not in wait
    assert env_names(mutated, "wait") == ["ARGO_POD_NAME"]


def test_a_slice_s_own_dev_shm_and_pipe_variable_give_way_to_the_daemon_s_with_warnings() -> None:
    pod = make_pod("s", "a", gpu_memory_mib=4096, gpu_compute_percent=30)
    container = pod["spec"]["containers"][0]
    container["volumeMounts"] = [{"name": "shm", "mountPath": "/dev/shm"}]
    container["env"] = [{"name": "CUDA_MPS_PIPE_DIRECTORY", "value": "/tmp/nvidia-mps"}]
    pod["spec"]["volumes"] = [{"name": "shm", "emptyDir": {"medium": "Memory"}}]
    decision = mps_hooks().mutate_pod(pod_create(pod))
    mutated = apply_patch(pod_create(pod)["object"], decision.patch)

    mounts = mutated["spec"]["containers"][0]["volumeMounts"]
    assert [m["name"] for m in mounts] == ["aistack-mps", "aistack-mps-shm"]
    env = {e["name"]: e.get("value") for e in mutated["spec"]["containers"][0]["env"]}
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == "/var/run/aistack-mps"
    assert any("mount of /dev/shm replaced" in w for w in decision.warnings)
    assert any("removed CUDA_MPS_PIPE_DIRECTORY" in w for w in decision.warnings)


def test_whole_gpus_and_clusters_without_mps_mount_no_daemon() -> None:
    whole = make_pod("w", "a", gpus=1)
    decision = mps_hooks().mutate_pod(pod_create(whole))
    mutated = apply_patch(pod_create(whole)["object"], decision.patch)
    assert "volumes" not in mutated["spec"]
    assert "volumeMounts" not in mutated["spec"]["containers"][0]

    piece = make_pod("s", "a", gpu_memory_mib=4096, gpu_compute_percent=30)
    decision = hooks().mutate_pod(pod_create(piece))
    mutated = apply_patch(pod_create(piece)["object"], decision.patch)
    assert "volumes" not in mutated["spec"]
    assert "CUDA_MPS_PIPE_DIRECTORY" not in env_names(mutated, "main")


# -- GPU reservations ------------------------------------------------------------------------------


def reserving_hooks() -> KubeWebhooks:
    return KubeWebhooks(
        lambda: QUEUES, lambda _queue: 0, reservations=True, service_namespace="aistack-system"
    )


def test_with_reservations_a_slice_gets_a_second_gate_and_whole_gpus_do_not() -> None:
    piece = make_pod("s", "a", gpu_memory_mib=4096, gpu_compute_percent=30)
    mutated = apply_patch(
        pod_create(piece)["object"], reserving_hooks().mutate_pod(pod_create(piece)).patch
    )
    assert mutated["spec"]["schedulingGates"] == [
        {"name": keys.SCHEDULING_GATE},
        {"name": keys.RESERVATION_GATE},
    ]
    whole = make_pod("w", "a", gpus=1)
    mutated = apply_patch(
        pod_create(whole)["object"], reserving_hooks().mutate_pod(pod_create(whole)).patch
    )
    assert mutated["spec"]["schedulingGates"] == [{"name": keys.SCHEDULING_GATE}]


def test_only_the_service_s_namespace_may_hold_its_reservation_pods() -> None:
    reservation = make_pod("r", "a", gpus=1)
    del reservation["metadata"]["labels"][keys.QUEUE_LABEL]
    reservation["metadata"]["labels"][keys.RESERVATION_LABEL] = "true"
    own = pod_create(reservation) | {"namespace": "aistack-system"}
    assert reserving_hooks().mutate_pod(own) == AdmissionDecision(allowed=True)
    # Anywhere else it is an unlabelled GPU pod like any other: refused without a default queue.
    elsewhere = reserving_hooks().mutate_pod(pod_create(reservation))
    assert not elsewhere.allowed


# -- who may use a queue --------------------------------------------------------------------------


def test_a_pod_of_a_namespace_its_queue_does_not_name_is_refused_with_the_allowed_ones() -> None:
    allowed: dict[str, tuple[str, ...]] = {"a": ("vision", "vision-dev")}
    hooks_ = KubeWebhooks(lambda: QUEUES, lambda _queue: 0, allowed_namespaces=allowed.get)
    pod = make_pod("p", "a", gpus=1)

    refused = hooks_.mutate_pod(pod_create(pod))  # namespace "team"
    assert not refused.allowed
    assert refused.message.startswith(
        "queue 'a' takes pods of namespace(s) vision, vision-dev only"
    )
    assert "not of 'team'" in refused.message

    allowed["a"] = ("team",)
    assert hooks_.mutate_pod(pod_create(pod)).allowed
    del allowed["a"]  # a queue naming no namespaces: every namespace may use it
    assert hooks_.mutate_pod(pod_create(pod)).allowed


def test_airflow_s_xcom_sidecar_gets_no_gpu_variables_but_the_task_does() -> None:
    pod = make_pod("p", "a", gpu_memory_mib=4096, gpu_compute_percent=30)
    pod["metadata"]["labels"]["kubernetes_pod_operator"] = "True"
    base = pod["spec"]["containers"][0]
    base["name"] = "base"
    pod["spec"]["containers"] = [base, {"name": "airflow-xcom-sidecar", "image": "alpine"}]
    mutated = apply_patch(pod_create(pod)["object"], hooks().mutate_pod(pod_create(pod)).patch)

    assert env_names(mutated, "airflow-xcom-sidecar") == []
    assert "NVIDIA_VISIBLE_DEVICES" in env_names(mutated, "base")
