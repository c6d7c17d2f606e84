"""A small, busy cluster for the dashboard's screenshots (docs/img/dashboard-*.png) and its tests.

Ten nodes in two pools (6 x 8 H100, 4 x 8 A100), a queue tree research > vision, nlp and
platform > serving, ci, and the situations the dashboard is for: nlp borrows 16 H100 beyond its
quota while vision waits for a gang it is entitled to (reclaim waits out a minimum runtime);
serving packs inference slices onto A100s, one batch job being evicted; ci sits at its limit.
A fortnight of accounting records goes with it. Deterministic for a given `now`.
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass, field

from scheduler_service.accounting import (
    AccountingStore,
    Admitted,
    Change,
    Ended,
    EndReason,
    RecordKey,
    Submitted,
)
from scheduler_service.api import ClusterStatus, Permission, User, WorkloadPods
from scheduler_service.core import (
    GPU,
    GpuSlice,
    Kind,
    Node,
    PodAllocation,
    Policy,
    PoolQuota,
    Queue,
    Request,
    Snapshot,
    Workload,
    WorkloadState,
    schedule,
)

__all__ = ["DEMO_TOKEN", "DemoAuthorizer", "demo_records", "demo_status"]

DEMO_TOKEN = "demo-token"
DEMO_USER = User(name="maria@example.com", groups=("ml-platform", "system:authenticated"))
H100 = ("NVIDIA-H100-80GB-HBM3", 81559)
A100 = ("NVIDIA-A100-SXM4-40GB", 40960)
HOUR = 3600.0
DAY = 86_400.0


@dataclass
class DemoAuthorizer:
    """Accepts `DEMO_TOKEN` as a platform engineer who may read everything."""

    questions: list[Permission] = field(default_factory=list)

    def authenticate(self, token: str) -> User | None:
        return DEMO_USER if token == DEMO_TOKEN else None

    def allowed(self, user: User, permission: Permission) -> bool:
        self.questions.append(permission)
        return user == DEMO_USER


def _node(name: str, pool: str, model: tuple[str, int], rack: str) -> Node:
    gpus = tuple(
        GPU(index=i, uuid=_uuid(name, i), model=model[0], memory_mib=model[1], numa_node=i // 4)
        for i in range(8)
    )
    return Node(name=name, pool=pool, gpus=gpus, topology=(("rack", rack), ("host", name)))


def _queues() -> tuple[Queue, ...]:
    def q(
        name: str, parent: str | None, h100: float, a100: float, limit: float | None = None
    ) -> Queue:
        quotas = (PoolQuota("h100", quota=h100, limit=limit), PoolQuota("a100", quota=a100))
        return Queue(name=name, parent=parent, quotas=quotas)

    return (
        q("research", None, 32, 8),
        q("vision", "research", 16, 4),
        q("nlp", "research", 16, 4),
        q("platform", None, 16, 24),
        q("serving", "platform", 8, 16),
        q("ci", "platform", 8, 8, limit=10),
    )


def _uuid(node: str, index: int) -> str:
    """A UUID shaped like NVML's, the same for the same GPU."""
    digest = hashlib.sha256(f"{node}/{index}".encode()).hexdigest()
    return f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def _whole(node: str, *indexes: int) -> PodAllocation:
    return PodAllocation(node=node, gpus=tuple(_uuid(node, i) for i in indexes))


def _slice(node: str, index: int, memory_mib: int, compute: int) -> PodAllocation:
    return PodAllocation(node=node, gpus=(_uuid(node, index),), slice=GpuSlice(memory_mib, compute))


def demo_status(now: float) -> ClusterStatus:
    """The demo cluster after one cycle at `now`, with its pods and Argo workflows."""
    nodes = tuple(
        [_node(f"h100-{i:02}", "h100", H100, f"r{(i - 1) // 3 + 1}") for i in range(1, 7)]
        + [_node(f"a100-{i:02}", "a100", A100, "r3") for i in range(1, 5)]
    )
    workloads: list[Workload] = []
    pods: dict[str, WorkloadPods] = {}

    def add(
        namespace: str,
        name: str,
        queue: str,
        request: Request,
        allocation: tuple[PodAllocation, ...] | None = None,
        *,
        kind: Kind = Kind.TRAIN,
        age: float = HOUR,
        ran: float = 0.5 * HOUR,
        workflow: str = "",
        pools: tuple[str, ...] = (),
        state: WorkloadState | None = None,
        gang: int = 1,
    ) -> None:
        count = len(allocation) if allocation else gang
        full = f"{namespace}/{name}"
        placed = allocation is not None
        workloads.append(
            Workload(
                name=full,
                queue=queue,
                kind=kind,
                request=request,
                pods=count,
                submitted_at=now - age,
                pools=pools,
                state=state or (WorkloadState.RUNNING if placed else WorkloadState.PENDING),
                allocation=allocation,
                started_at=now - ran if placed else None,
            )
        )
        names = (name,) if count == 1 else tuple(f"{name}-{i}" for i in range(count))
        pods[full] = WorkloadPods(namespace, names, workflow=workflow)

    eight = Request(gpus=8, cpu_milli=32_000, memory_mib=256_000)
    add(
        "nlp",
        "llm-pretrain-7b",
        "nlp",
        eight,
        tuple(_whole(f"h100-{i:02}", *range(8)) for i in range(1, 5)),
        age=2 * HOUR,
        ran=10 * 60,
        workflow="pretrain-7b-x2k9q",
    )
    for i, gpus in ((1, range(4)), (2, range(4, 8))):
        add(
            "vision",
            f"resnet-sweep-{i}",
            "vision",
            Request(gpus=4),
            (_whole("h100-05", *gpus),),
            age=3 * HOUR,
            ran=2.5 * HOUR,
            workflow="sweep-resnet-m4c7d",
        )
    add(
        "vision",
        "detr-finetune",
        "vision",
        eight,
        age=25 * 60,
        workflow="detr-finetune-q8w2z",
        pools=("h100",),
        gang=2,
    )
    add("ci", "build-cuda-ext", "ci", Request(gpus=6), (_whole("h100-06", *range(6)),), age=900)
    for i in range(3):
        add(
            "ci",
            f"unit-tests-gpu-{i}",
            "ci",
            Request(gpu_memory_mib=8192, gpu_compute_percent=10),
            (_slice("h100-06", 6, 8192, 10),),
            kind=Kind.BUILD,
            age=600,
            ran=300,
            workflow="pr-4711-tests",
        )
    add(
        "ci",
        "integration-gpu",
        "ci",
        Request(gpus=4),
        age=420,
        workflow="pr-4711-tests",
        pools=("h100",),
    )
    chat = Request(gpu_memory_mib=20480, gpu_compute_percent=30)
    embed = Request(gpu_memory_mib=10240, gpu_compute_percent=20)
    for i in range(4):
        add(
            "serving",
            f"chat-api-{i}",
            "serving",
            chat,
            (_slice("a100-01", i // 2, 20480, 30),),
            kind=Kind.INFER,
            age=DAY,
            ran=DAY - 60,
        )
    for i in range(2):
        add(
            "serving",
            f"embed-{i}",
            "serving",
            embed,
            (_slice("a100-01", 2, 10240, 20),),
            kind=Kind.INFER,
            age=DAY,
            ran=DAY - 60,
        )
    add(
        "serving",
        "batch-scoring",
        "serving",
        Request(gpus=4),
        (_whole("a100-02", 0, 1, 2, 3),),
        age=2 * HOUR,
        ran=HOUR,
        state=WorkloadState.EVICTING,
        workflow="nightly-scoring-t5b1x",
    )
    add(
        "nlp",
        "tokenizer-eval",
        "nlp",
        Request(gpus=2),
        (_whole("a100-03", 0, 1),),
        age=HOUR,
        ran=40 * 60,
    )
    snapshot = Snapshot(
        nodes=nodes,
        queues=_queues(),
        workloads=tuple(workloads),
        policy=Policy(reclaim_min_runtime_seconds=30 * 60),
    )
    return ClusterStatus(
        snapshot=snapshot, plan=schedule(snapshot, now), pods=pods, cycle_at=now, leader=True
    )


def demo_records(store: AccountingStore, now: float, days: int = 14) -> None:
    """A fortnight of the demo teams' work, ending at `now`, written to `store`."""
    rng = random.Random(7)
    teams = {
        "vision": ("vision", 4.0, ("ana", "li")),
        "nlp": ("nlp", 8.0, ("omar", "li")),
        "serving": ("serving", 1.2, ("sam",)),
        "ci": ("ci", 0.6, ("ci-bot",)),
    }
    changes: list[Change] = []
    for day in range(days, 0, -1):
        start = now - day * DAY
        for namespace, (queue, gpus, users) in teams.items():
            for job in range(rng.randint(2, 5)):
                submitted = start + rng.uniform(0, 0.7) * DAY
                key = RecordKey(namespace, f"{queue}-d{day}-j{job}", submitted)
                held = gpus * rng.choice((0.5, 1, 1, 2))
                admitted = submitted + rng.uniform(60, 3 * HOUR)
                ended = admitted + rng.uniform(1, 8) * HOUR
                evicted = rng.random() < 0.1
                changes += [
                    Submitted(key, queue=queue, user=rng.choice(users), gpus=held),
                    Admitted(key, at=admitted, gpus=held, pool="h100"),
                    Ended(
                        key,
                        at=min(ended, now),
                        reason=EndReason.EVICTED if evicted else EndReason.FINISHED,
                        cause="Reclaimed" if evicted else "",
                    ),
                ]
    # The waiting gang's step, whose first attempt was preempted: its page tells the story.
    first = RecordKey("vision", "detr-finetune-a", now - 3 * HOUR)
    again = RecordKey("vision", "detr-finetune", now - 25 * 60)
    step = functools.partial(
        Submitted, queue="vision", user="ana", workflow="detr-finetune-q8w2z", step="train"
    )
    changes += [
        step(first, pods=2, gpus=16),
        Admitted(first, at=now - 2.9 * HOUR, gpus=16, pool="h100"),
        Ended(
            first,
            at=now - 26 * 60,
            reason=EndReason.EVICTED,
            cause="Reclaimed",
            message="aistack: reclaimed for nlp/llm-pretrain-7b: queue vision held 24 GPUs in "
            "pool h100, beyond its fair share of 16",
        ),
        step(again, pods=2, gpus=16, attempt=1),
    ]
    store.apply(changes)
