"""A randomised fault test: pods of many shapes, the service and the API server killed at random.

Each round submits a random mix (whole GPUs, slices, gangs, and GPU pods the service does not
manage), then does one random harm: SIGKILL of the service (started again after a random
pause), SIGKILL of kube-apiserver (etcd keeps the data; everyone reconnects), or nothing. After
each round the service must be ready again, and the invariants must hold on what the API server
says:

- no GPU is over-committed: on every node, whole GPUs of managed pods, GPUs hosting slices, and
  GPUs of unmanaged pods add up to at most the node's; no GPU is held whole twice or both whole
  and as slices; the slices of a GPU add up to at most its memory and 100 % of its compute;
- no pod is lost: every managed pod the test made still exists;
- every waiting pod says why (its PodScheduled message).

In the end every pod is admitted or was stopped by the service (reclaimed or preempted, marked
Failed with the service's reason: a slice stopped while it waited for its GPU's reservation
keeps its gate, and waits for nothing).

The service runs as the chart sets it up, with GPU reservations: kwok has no device plugin,
so a thread of the test plays it and the reservation pods' containers (it writes on each
running reservation pod a device of its node that no other reservation holds), as
test_gpu_reservations.py does with the real `aistack reserve-gpu`. Without reservations this
test finds what they are for: kube-scheduler binds an unmanaged GPU pod onto GPUs that host
slices, which it cannot see.

The seed is printed on failure; AISTACK_FAULT_SEED replays one run.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api

from scheduler_service import pod_contract as keys
from tests.integration.cluster import SERVICE_NAMESPACE, GpuNodes, TestCluster, gpu_pod, wait_for
from tests.integration.pods import gates, gpu_inventory, gpu_uuid, pods_in, read, waiting_message
from tests.integration.service import RESERVING, RunningService, make_queue, managed_pod

NODES = 3
GPUS = 4
MEMORY_MIB = 81559
ROUNDS = 6

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def service(cluster: TestCluster, admin_client: ApiClient) -> Iterator[RunningService]:
    running = RunningService(
        cluster,
        admin_client,
        config=RESERVING,
    )
    running.start()
    yield running
    running.remove()


@pytest.fixture
def device_plugin(admin_client: ApiClient) -> Iterator[None]:
    """Gives each running reservation pod a device of its node that no other one holds."""
    core = CoreV1Api(admin_client)
    stop = threading.Event()

    def play() -> None:
        while not stop.wait(0.2):
            with contextlib.suppress(Exception):  # the API server may be down: try again
                reservations = pods_in(core, SERVICE_NAMESPACE)
                held: dict[str, set[str]] = defaultdict(set)
                for pod in reservations:
                    device = (pod["metadata"].get("annotations") or {}).get(
                        keys.RESERVED_DEVICE_ANNOTATION
                    )
                    if device:
                        held[pod["spec"].get("nodeName", "")].add(device)
                for pod in reservations:
                    annotations = pod["metadata"].get("annotations") or {}
                    node = pod["spec"].get("nodeName")
                    if (
                        keys.RESERVES_ANNOTATION not in annotations
                        or keys.RESERVED_DEVICE_ANNOTATION in annotations
                        or pod["status"].get("phase") != "Running"
                        or not node
                    ):
                        continue
                    prefix, _, index = node.rpartition("-g")
                    free = [
                        uuid
                        for i in range(GPUS)
                        if (uuid := gpu_uuid(prefix, i, int(index))) not in held[node]
                    ]
                    held[node].add(free[0])
                    core.patch_namespaced_pod(
                        pod["metadata"]["name"],
                        SERVICE_NAMESPACE,
                        {"metadata": {"annotations": {keys.RESERVED_DEVICE_ANNOTATION: free[0]}}},
                    )

    thread = threading.Thread(target=play, name="device-plugin", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=5)


def random_pods(rng: random.Random, round_: int, queues: list[str]) -> list[dict[str, Any]]:
    """A mix of managed pods: whole GPUs, slices, a gang now and then; all finish in seconds."""
    pods: list[dict[str, Any]] = []
    for i in range(rng.randint(3, 6)):
        name, queue = f"r{round_}-{i}", rng.choice(queues)
        run_for = f"{rng.randint(2, 12)}s"
        shape = rng.random()
        if shape < 0.45:
            pods.append(managed_pod(name, queue, gpus=rng.choice([1, 1, 2, 4]), run_for=run_for))
        elif shape < 0.85:
            share = (rng.choice([8192, 20000, 40000]), rng.choice([10, 25, 50]))
            pods.append(managed_pod(name, queue, slice_=share, run_for=run_for))
        else:
            gang = f"g{round_}-{i}"
            pods += [
                managed_pod(f"{name}-{rank}", queue, gpus=2, gang=(gang, 2), run_for=run_for)
                for rank in range(2)
            ]
    return pods


def check_invariants(core: CoreV1Api, namespace: str, nodes: list[str], made: set[str]) -> None:
    """The invariants of the module docstring, on the pods as the API server has them now.

    In the books: no GPU held whole twice, or whole and as slices; the slices of a GPU within
    its memory and compute. On each node, among the pods bound to it: whole GPUs of managed
    pods, the devices slices run on, and unmanaged pods' GPUs within the node's GPUs.
    """
    pods = pods_in(core, namespace)
    names = {p["metadata"]["name"] for p in pods}
    assert made <= names, f"pods lost: {sorted(made - names)}"
    whole: dict[str, list[str]] = defaultdict(list)
    slices: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    bound_whole: dict[str, int] = defaultdict(int)
    bound_devices: dict[str, set[str]] = defaultdict(set)
    for pod in pods:
        if pod["status"].get("phase") in {"Succeeded", "Failed"}:
            continue
        annotations = pod["metadata"].get("annotations") or {}
        if keys.NODE_ANNOTATION not in annotations:
            continue
        name = pod["metadata"]["name"]
        gpus = [g for g in annotations.get(keys.GPUS_ANNOTATION, "").split(",") if g]
        bound = pod["spec"].get("nodeName")
        if keys.GPU_MEMORY_ANNOTATION in annotations:
            (gpu,) = gpus
            memory = int(annotations[keys.GPU_MEMORY_ANNOTATION])
            slices[gpu].append((memory, int(annotations[keys.GPU_COMPUTE_ANNOTATION]), name))
            if bound:
                bound_devices[bound].add(annotations[keys.DEVICE_ANNOTATION])
        else:
            for gpu in gpus:
                whole[gpu].append(name)
            if bound:
                bound_whole[bound] += len(gpus)
    for gpu, holders in whole.items():
        assert len(holders) == 1, f"GPU {gpu} held whole by {holders}"
        assert gpu not in slices, f"GPU {gpu} held whole by {holders} and by slices {slices[gpu]}"
    for gpu, parts in slices.items():
        assert sum(m for m, _, _ in parts) <= MEMORY_MIB, f"GPU {gpu} memory over: {parts}"
        assert sum(c for _, c, _ in parts) <= 100, f"GPU {gpu} compute over: {parts}"
    outsiders = [
        p
        for p in pods_in(core, SERVICE_NAMESPACE)
        if keys.RESERVES_ANNOTATION not in (p["metadata"].get("annotations") or {})
        and p["status"].get("phase") not in {"Succeeded", "Failed"}
    ]
    for node in nodes:
        unmanaged = sum(
            int(c["resources"]["limits"].get(keys.GPU_RESOURCE, "0"))
            for p in outsiders
            if p["spec"].get("nodeName") == node
            for c in p["spec"]["containers"]
        )
        used = bound_whole[node] + len(bound_devices[node]) + unmanaged
        assert used <= GPUS, (
            f"node {node}: {bound_whole[node]} whole GPUs of managed pods, slices on devices "
            f"{sorted(bound_devices[node])} and {unmanaged} GPUs of unmanaged pods, of {GPUS}"
        )


def gated(pod: dict[str, Any]) -> bool:
    """Held by either of the scheduler's gates (admission, or its GPU's reservation)."""
    return bool(gates(pod))


def still_waiting(core: CoreV1Api, namespace: str, made: set[str]) -> list[dict[str, Any]]:
    """The gated pods among `made`: their gates, the reason they give and their allocation.

    A pod the service stopped (reclaimed or preempted) while it still waited for its GPU's
    reservation ends Failed with its gate on: it waits for nothing any more.
    """
    waiting = []
    for pod in (read(core, namespace, name) for name in sorted(made)):
        if gated(pod) and pod["status"].get("phase") not in {"Succeeded", "Failed"}:
            annotations = pod["metadata"].get("annotations") or {}
            waiting.append(
                {
                    "name": pod["metadata"]["name"],
                    "gates": gates(pod),
                    "why": waiting_message(pod),
                    "annotations": {
                        k: v for k, v in annotations.items() if k != keys.GANG_ALLOCATION_ANNOTATION
                    },
                }
            )
    return waiting


def gpu_holders(core: CoreV1Api, namespaces: list[str]) -> list[tuple[str, ...]]:
    """Every pod that asks for GPUs or holds a reservation: what the device plugin would see.

    (namespace/name, node, phase, GPUs asked, reserved GPU, device, deleting, why unscheduled).
    """
    found: list[tuple[str, ...]] = []
    for namespace in namespaces:
        for pod in pods_in(core, namespace):
            annotations = pod["metadata"].get("annotations") or {}
            asked = sum(
                int(c.get("resources", {}).get("limits", {}).get(keys.GPU_RESOURCE, "0"))
                for c in pod["spec"]["containers"]
            )
            if not asked and keys.GPU_MEMORY_ANNOTATION not in annotations:
                continue
            unscheduled = next(
                (
                    c.get("message", "")
                    for c in pod["status"].get("conditions") or ()
                    if c.get("type") == "PodScheduled" and c.get("status") == "False"
                ),
                "",
            )
            found.append(
                (
                    f"{namespace}/{pod['metadata']['name']}",
                    pod["spec"].get("nodeName", ""),
                    pod["status"].get("phase", ""),
                    str(asked),
                    annotations.get(keys.RESERVES_ANNOTATION, ""),
                    annotations.get(keys.RESERVED_DEVICE_ANNOTATION, ""),
                    "deleting" if pod["metadata"].get("deletionTimestamp") else "",
                    unscheduled[:200],
                )
            )
    return found


def failed_unexplained(core: CoreV1Api, namespace: str) -> list[str]:
    """Failed pods the service did not stop: every pod here succeeds unless it is stopped."""
    return [
        f"{pod['metadata']['name']}: {pod['status'].get('reason')} {pod['status'].get('message')}"
        for pod in pods_in(core, namespace)
        if pod["status"].get("phase") == "Failed"
        and not any(
            c.get("type") == "DisruptionTarget" and c.get("reason") == keys.EVICTION_REASON
            for c in pod["status"].get("conditions") or ()
        )
    ]


def every_waiting_pod_says_why(core: CoreV1Api, namespace: str) -> bool:
    return all(
        waiting_message(p) or p["status"].get("phase") in {"Succeeded", "Failed"}
        for p in pods_in(core, namespace)
        if gated(p)
    )


@pytest.mark.usefixtures("device_plugin")
def test_random_pods_and_kills_never_over_commit_a_gpu_lose_a_pod_or_leave_one_unexplained(  # noqa: PLR0917 - fixtures
    cluster: TestCluster,
    service: RunningService,
    core: CoreV1Api,
    namespace: str,
    make_gpu_node: GpuNodes,
    admin_client: ApiClient,
) -> None:
    seed = int(os.environ.get("AISTACK_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    pool = make_gpu_node.prefix
    nodes = []
    for i in range(NODES):
        make_gpu_node(
            f"g{i}",
            gpus=GPUS,
            labels={keys.POOL_LABEL: pool},
            annotations=gpu_inventory(pool, GPUS, i),
        )
        nodes.append(f"{pool}-g{i}")
    queues = [make_queue(admin_client, {pool: 5}), make_queue(admin_client, {pool: 5})]
    made: set[str] = set()
    harms: list[str] = []
    try:
        for round_ in range(ROUNDS):
            for pod in random_pods(rng, round_, queues):
                core.create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]
                made.add(pod["metadata"]["name"])
            if rng.random() < 0.4:
                outsider = gpu_pod(
                    f"{pool}-out-{round_}",
                    rng.choice([1, 2]),
                    run_for=f"{rng.randint(3, 10)}s",
                    node_selector={"kubernetes.io/hostname": rng.choice(nodes)},
                )
                core.create_namespaced_pod(SERVICE_NAMESPACE, outsider)
            harm = rng.choice(["service", "service", "apiserver", "none"])
            harms.append(harm)
            time.sleep(rng.uniform(0.0, 2.0))
            if harm == "service":
                service.kill()
                time.sleep(rng.uniform(0.0, 2.0))
                service.start()
            elif harm == "apiserver":
                cluster.crash_apiserver(down_seconds=rng.uniform(0.0, 2.0))
                service.start()  # a no-op if it lived through it, as it should
            wait_for(
                "every waiting pod to say why",
                lambda: every_waiting_pod_says_why(core, namespace),
                bool,
                timeout=60,
            )
            check_invariants(core, namespace, nodes, made)
        wait_for(
            "every pod to be admitted in the end",
            lambda: still_waiting(core, namespace, made),
            lambda waiting: not waiting,
            timeout=120,
        )
        check_invariants(core, namespace, nodes, made)
        assert failed_unexplained(core, namespace) == []
    except AssertionError as failure:
        raise AssertionError(
            f"{failure}\nseed {seed} (AISTACK_FAULT_SEED={seed} replays it), harms {harms}\n"
            f"pods with GPUs: {gpu_holders(core, [SERVICE_NAMESPACE, namespace])}\n"
            f"the service's log:\n{service.log_tail()}"
        ) from failure
    finally:
        for pod in pods_in(core, SERVICE_NAMESPACE):
            name = pod["metadata"]["name"]
            if name.startswith(f"{pool}-out-"):
                core.delete_namespaced_pod(name, SERVICE_NAMESPACE, grace_period_seconds=0)
