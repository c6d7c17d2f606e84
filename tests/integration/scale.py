"""Scale benchmark: the service fills 1,000 kwok nodes x 8 GPUs from 10,000 waiting pods.

    scripts/bench-kube [--nodes 1000] [--singles 6000] [--gangs 1000 --gang-size 4]

Method (docs/benchmarks.md records the results and the machine):
1. Start the test cluster (etcd, kube-apiserver, kube-scheduler, kwok) and `aistack serve`.
2. Create the nodes, all in one pool, and wait until kwok has made them Ready.
3. Create four queues whose limit is 0 GPUs, then every pod (through the admission webhook):
   single-GPU pods and gangs of single-GPU pods, spread over the queues. Nothing can start.
4. When the service has seen every workload, lift the limits at once (t0) and watch the pods:
   a pod is released when its scheduling gate is gone, bound when kube-scheduler set its node.
5. Report releases per second, the time until the cluster is full (every GPU released), the
   time until kube-scheduler has bound them all, and the service's CPU time and peak memory
   over the whole run (from its own process_* metrics, memory sampled every second); its CPU
   time per release while releasing, and how busy the whole machine was meanwhile (/proc/stat:
   the control plane, kube-scheduler and kwok share it with the service).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import queue
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi, V1Namespace, V1ObjectMeta
from prometheus_client.parser import text_string_to_metric_families

from scheduler_service import pod_contract as keys
from scheduler_service.kube._reflector import Reflector, Relisted, Watched
from tests.integration.cluster import TestCluster, gpu_node, wait_for
from tests.integration.service import RunningService, make_queue, managed_pod

_NAMESPACE = "scale"
_POOL = "scale"
_QUEUES = 4


def _say(message: str) -> None:
    """Progress on stderr: a long run shows where it is."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _create_nodes(core: CoreV1Api, count: int) -> None:
    def create(i: int) -> None:
        core.create_node(gpu_node(f"scale-{i:04}", 8, labels={keys.POOL_LABEL: _POOL}))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(count)))


def _pods(singles: int, gangs: int, gang_size: int, queues: list[str]) -> list[dict[str, Any]]:
    pods = [managed_pod(f"single-{i:05}", queues[i % len(queues)], gpus=1) for i in range(singles)]
    for g in range(gangs):
        queue = queues[g % len(queues)]
        pods += [
            managed_pod(f"gang-{g:04}-{i}", queue, gpus=1, gang=(f"gang-{g:04}", gang_size))
            for i in range(gang_size)
        ]
    return pods


class _PodWatch:
    """Records when each pod lost its gate and when it got a node.

    Built on the service's own reflector, which resumes a watch that the API server closes
    (it does so to a consumer that falls behind, as a busy benchmark process can).
    """

    def __init__(self, core: CoreV1Api) -> None:
        self.released: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.deleted: set[str] = set()
        self._events: queue.Queue[Watched | Relisted] = queue.Queue()
        self._reflector = Reflector(
            "pods", functools.partial(core.list_namespaced_pod, _NAMESPACE), self._events
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._reflector.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._reflector.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._events.get(timeout=0.5)
            except queue.Empty:
                continue
            now = time.monotonic()
            if isinstance(event, Relisted):
                for pod in event.objects:
                    self._record(pod, now)
            elif event.type == "DELETED":
                self.deleted.add(event.object["metadata"]["name"])
            else:
                self._record(event.object, now)

    def _record(self, pod: Mapping[str, Any], now: float) -> None:
        name = pod["metadata"]["name"]
        if not pod["spec"].get("schedulingGates") and name not in self.released:
            self.released[name] = now
        if pod["spec"].get("nodeName") and name not in self.bound:
            self.bound[name] = now


def _settle(count: Callable[[], int], what: str, quiet_seconds: float = 10) -> int:
    """Wait until `count()` is positive and has not grown for `quiet_seconds`; return it.

    The cluster is full when the service releases nothing more: every GPU is taken, or what
    is left is too small for any waiting workload (a gang of 4 cannot use 3 free GPUs).
    """
    last, since = -1, time.monotonic()
    while True:
        now = count()
        if now != last:
            last, since = now, time.monotonic()
            _say(f"{now} {what}")
        elif now > 0 and time.monotonic() - since >= quiet_seconds:
            return now
        time.sleep(1)


def _allocated_gpus(service: RunningService, queues: list[str]) -> float:
    status, body = service.get("/api/v1/queues", service.cluster.tokens["admin"])
    assert status == 200, body
    return float(
        sum(pool["allocated_gpus"] for q in body if q["name"] in queues for pool in q["pools"])
    )


def _machine_busy() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _process(service: RunningService) -> tuple[float, float]:
    """The service's CPU seconds so far and resident memory (MiB), from its own metrics."""
    url = f"http://127.0.0.1:{service.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return values["process_cpu_seconds_total"], values["process_resident_memory_bytes"] / 2**20


class _MemoryPeak:
    """Samples the service's resident memory every second; `peak_mib` is the largest seen."""

    def __init__(self, service: RunningService) -> None:
        self.peak_mib = 0.0
        self._service = service
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(OSError, KeyError):
                self.peak_mib = max(self.peak_mib, _process(self._service)[1])


def run(
    nodes: int, singles: int, gangs: int, gang_size: int, *, keep: bool = False
) -> dict[str, Any]:
    """Run the benchmark once; return its figures."""
    with TestCluster(keep_workdir=keep) as cluster, ApiClient(cluster.configuration()) as admin:
        _say(f"cluster files (logs) in {cluster.workdir}")
        core = CoreV1Api(admin)
        service = RunningService(cluster, admin)
        service.start()
        memory = _MemoryPeak(service)
        started = time.monotonic()
        _say(f"cluster and service up; creating {nodes} nodes")
        _create_nodes(core, nodes)
        wait_for(
            f"{nodes} nodes to be Ready",
            lambda: core.list_node(label_selector=f"{keys.POOL_LABEL}={_POOL}").items,
            lambda found: (
                len(found) == nodes
                and all(
                    any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
                    for n in found
                    if n.status
                )
            ),
            timeout=600,
            interval=2,
        )
        nodes_ready = time.monotonic() - started
        _say(f"nodes Ready after {nodes_ready:.0f}s; creating queues and pods")
        # One parent holds every queue at a limit of 0, so that one patch lifts them all: lifted
        # one by one, the first queue would borrow the whole cluster and then be reclaimed.
        parent = make_queue(admin, {_POOL: (0, 0)})
        share = nodes * 8 / _QUEUES
        queues = [make_queue(admin, {_POOL: share}, parent=parent) for _ in range(_QUEUES)]
        core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=_NAMESPACE)))
        pods = _pods(singles, gangs, gang_size, queues)
        watch = _PodWatch(core)
        watch.start()
        creating = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda pod: core.create_namespaced_pod(_NAMESPACE, pod), pods))
        created_seconds = time.monotonic() - creating
        _say(f"{len(pods)} pods created in {created_seconds:.0f}s; waiting for the service")
        workloads = singles + gangs
        wait_for(
            f"the service to see {workloads} workloads",
            lambda: service.get("/api/v1/queues", cluster.tokens["admin"]),
            lambda answer: (
                answer[0] == 200
                and sum(q["workloads"]["pending"] for q in answer[1] if q["name"] in queues)
                == workloads
            ),
            timeout=600,
            interval=1,
        )
        custom = CustomObjectsApi(admin)
        _say("the service sees every workload; lifting the queue limits")
        cpu_before, machine_before = _process(service)[0], _machine_busy()
        t0 = time.monotonic()
        custom.patch_cluster_custom_object(
            keys.GROUP,
            keys.QUEUE_VERSION,
            keys.QUEUE_PLURAL,
            parent,
            {"spec": {"pools": [{"pool": _POOL, "quota": nodes * 8}]}},
        )
        capacity = nodes * 8
        released = _settle(lambda: len(watch.released), "pods released")
        full = max(watch.released.values()) - t0
        cpu_release = _process(service)[0] - cpu_before
        machine = _machine_busy()
        busy = (machine[0] - machine_before[0]) / max(machine[1] - machine_before[1], 1)
        _say(f"{released} pods released in {full:.1f}s; waiting for kube-scheduler")
        try:
            wait_for(
                f"{released} pods to be bound",
                lambda: len(watch.bound),
                lambda count: count >= released,
                timeout=120,
                interval=1,
            )
        except AssertionError:
            for name in sorted(set(watch.released) - set(watch.bound))[:5]:
                pod = core.read_namespaced_pod(name, _NAMESPACE)
                _say(f"unbound: {name} {pod.status.conditions if pod.status else None}")
            raise
        bound = max(watch.bound.values()) - t0
        watch.stop()
        figures = {
            "nodes": nodes,
            "gpus": capacity,
            "pods": len(pods),
            "workloads": workloads,
            "nodes_ready_seconds": round(nodes_ready, 1),
            "pods_created_per_second": round(len(pods) / created_seconds, 1),
            "released_pods": released,
            "evicted_pods": len(watch.deleted),
            "allocated_gpus": _allocated_gpus(service, queues),
            "seconds_until_full": round(full, 1),
            "released_per_second": round(released / full, 1),
            "seconds_until_bound": round(bound, 1),
            "service_cpu_seconds": round(_process(service)[0], 1),
            "service_cpu_seconds_while_releasing": round(cpu_release, 1),
            "service_cpu_ms_per_release": round(1000 * cpu_release / max(released, 1), 2),
            "machine_busy_while_releasing": round(busy, 2),
            "service_peak_rss_mib": round(memory.peak_mib, 1),
        }
        memory.stop()
        service.stop()
        return figures


def main() -> None:
    """Parse the command line, run, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=6000)
    parser.add_argument("--gangs", type=int, default=1000)
    parser.add_argument("--gang-size", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("out/benchmarks/kube-scale.json"))
    parser.add_argument("--keep", action="store_true", help="keep the cluster's files (logs)")
    args = parser.parse_args()
    figures = run(args.nodes, args.singles, args.gangs, args.gang_size, keep=args.keep)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key:>26}: {value}")


if __name__ == "__main__":
    main()
