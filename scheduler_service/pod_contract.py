"""The names by which pods, nodes and queues talk to the service: labels, annotations, the gate.

This is the contract between whoever creates a pod (aistack_flows, a user's YAML, the Helm
chart's webhook configuration) and the service. Everything a user writes lives under
`aistack.io/`; what the service writes back (the allocation) lives under `alloc.aistack.io/`,
and the admission webhook refuses pods that try to set those themselves.

It is public and has no dependencies: aistack_flows (which writes pods through Argo), the
service (which reads them) and the tests import every name from here, so the two sides cannot
drift apart. The bounds below are the same on both sides: aistack_flows refuses a declaration
outside them before anything is submitted, the webhook refuses such a pod at creation.
"""

from typing import Final

GROUP: Final = "aistack.io"
"""API group of the Queue custom resource and prefix of every label and annotation."""

QUEUE_VERSION: Final = "v1alpha1"
QUEUE_PLURAL: Final = "queues"

# -- what a pod says (set by its creator) ---------------------------------------------------------

QUEUE_LABEL: Final = "aistack.io/queue"
"""Label naming the pod's leaf queue. Its presence is what makes a pod managed."""

KIND_LABEL: Final = "aistack.io/kind"
"""Label: build, train or infer (default train)."""

KINDS: Final = ("build", "train", "infer")
"""The values of the kind label (the core's `Kind`)."""

DEFAULT_KIND: Final = "train"

GANG_LABEL: Final = "aistack.io/gang"
"""Label: the gang's name; pods of one namespace with the same value are admitted together."""

GANG_SIZE_ANNOTATION: Final = "aistack.io/gang-size"
"""Annotation: how many pods the gang has (required with the gang label)."""

PRIORITY_ANNOTATION: Final = "aistack.io/priority"
"""Annotation: the workload's priority inside its queue (an integer, default 0)."""

PREEMPTIBLE_ANNOTATION: Final = "aistack.io/preemptible"
"""Annotation: "true" or "false", overriding the kind's default."""

GPU_MEMORY_ANNOTATION: Final = "aistack.io/gpu-memory-mib"
"""Annotation: a slice's GPU memory in MiB. With the compute annotation it asks for a slice."""

GPU_COMPUTE_ANNOTATION: Final = "aistack.io/gpu-compute-percent"
"""Annotation: a slice's share of one GPU's compute, 1-100."""

POOLS_ANNOTATION: Final = "aistack.io/pools"
"""Annotation: acceptable pools, comma-separated, in order of preference (default any)."""

GPU_MODELS_ANNOTATION: Final = "aistack.io/gpu-models"
"""Annotation: acceptable GPU models, comma-separated, in order of preference (default any)."""

TOPOLOGY_ANNOTATION: Final = "aistack.io/topology"
"""Annotation: keep a gang in one domain of a level, "rack" (required) or "rack:preferred"."""

GPU_RESOURCE: Final = "nvidia.com/gpu"
"""The extended resource through which a pod asks for whole GPUs."""

# -- what the service writes ------------------------------------------------------------------

SCHEDULING_GATE: Final = "aistack.io/admission"
"""Scheduling gate the webhook adds at creation and the service removes on admission."""

RESERVATION_GATE: Final = "aistack.io/gpu-reservation"
"""Second gate of a slice where whole GPUs come from NVIDIA's device plugin (the service's
`gpu_reservations`): the service removes it once the reservation pod of the slice's GPU knows
which device the plugin gave it, and has written that device on the slice (`DEVICE_ANNOTATION`)."""

RESERVATION_LABEL: Final = "aistack.io/gpu-reservation"
"""On the service's reservation pods: one per booked GPU that hosts slices, in the service's
namespace, asking the device plugin for one `nvidia.com/gpu` on the GPU's node, so that the
plugin never hands that device to a whole-GPU pod."""

RESERVES_ANNOTATION: Final = "aistack.io/reserves"
"""On a reservation pod: the booked GPU it holds a device for, "<node>/<gpu>" (the GPU as
`alloc.aistack.io/gpus` names it)."""

RESERVED_DEVICE_ANNOTATION: Final = "aistack.io/reserved-device"
"""Written by a reservation pod's own container (`aistack reserve-gpu`): the device the plugin
gave it, from the NVIDIA_VISIBLE_DEVICES the plugin set."""

MANAGED_LABEL: Final = "aistack.io/managed"
"""Label the webhook sets on every pod it gated, so the service watches exactly those."""

ALLOCATION_PREFIX: Final = "alloc.aistack.io/"
"""Prefix of the annotations below; the webhook refuses pods that set any of them."""

NODE_ANNOTATION: Final = "alloc.aistack.io/node"
"""The node the pod was admitted to. Written for every pod of a gang before any gate is removed."""

GPUS_ANNOTATION: Final = "alloc.aistack.io/gpus"
"""GPU identities for the container runtime, comma-separated (NVIDIA_VISIBLE_DEVICES)."""

MEMORY_LIMIT_ANNOTATION: Final = "alloc.aistack.io/gpu-memory-limit"
"""A slice's memory cap in MPS syntax, e.g. "0=4096M" (CUDA_MPS_PINNED_DEVICE_MEM_LIMIT)."""

COMPUTE_LIMIT_ANNOTATION: Final = "alloc.aistack.io/gpu-compute-percent"
"""A slice's compute cap in percent (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE)."""

DEVICE_ANNOTATION: Final = "alloc.aistack.io/device"
"""A slice's GPU as the container runtime names it (its NVIDIA_VISIBLE_DEVICES): the GPU the
service booked, or, with GPU reservations, the device NVIDIA's device plugin gave the booked
GPU's reservation pod (`RESERVATION_LABEL`)."""

GPU_SHARING_ANNOTATION: Final = "alloc.aistack.io/gpu-sharing"
"""How a slice's caps are enforced on its node: "mps", "hami-core" or "none" (the setting of the
slice's pool, docs/gpu-sharing.md)."""

MPS_GPU_ANNOTATION: Final = "alloc.aistack.io/mps-gpu"
"""On a slice where some pool uses MPS: the uuid of the GPU whose MPS daemon it connects to, or
"none" when its pool does not use MPS. Its containers mount `<uuid>/pipe` of the node's MPS root
(a `subPathExpr` on AISTACK_MPS_GPU) at `MPS_CLIENT_PIPE_DIRECTORY`, so a slice sees only its
own GPU's daemon."""

MPS_CLIENT_PIPE_DIRECTORY: Final = "/var/run/aistack-mps"
"""Where a slice's container sees its GPU's MPS pipe directory (its CUDA_MPS_PIPE_DIRECTORY)."""

MPS_CLIENT_SHM: Final = "/dev/shm"
"""Where a slice's container sees the MPS daemons' shared memory (`<mps root>/shm` on the node)."""

HAMI_MEMORY_ANNOTATION: Final = "alloc.aistack.io/hami-memory-limit"
"""A slice under HAMi-core: its memory cap, e.g. "4096m" (CUDA_DEVICE_MEMORY_LIMIT)."""

HAMI_COMPUTE_ANNOTATION: Final = "alloc.aistack.io/hami-compute-limit"
"""A slice under HAMi-core: its SM cap in percent (CUDA_DEVICE_SM_LIMIT)."""

ALLOCATION_ENVIRONMENT: Final = (
    ("AISTACK_GPUS", GPUS_ANNOTATION, False),
    ("NVIDIA_VISIBLE_DEVICES", DEVICE_ANNOTATION, True),
    ("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", MEMORY_LIMIT_ANNOTATION, True),
    ("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", COMPUTE_LIMIT_ANNOTATION, True),
    ("AISTACK_MPS_GPU", MPS_GPU_ANNOTATION, True),
    ("CUDA_DEVICE_MEMORY_LIMIT", HAMI_MEMORY_ANNOTATION, True),
    ("CUDA_DEVICE_SM_LIMIT", HAMI_COMPUTE_ANNOTATION, True),
)
"""What a step's containers read of its allocation: (variable, annotation, slices only).

Every managed step learns its GPUs; a slice also gets the runtime's device variable, the MPS
caps, and what its pool's mechanism needs (a whole-GPU step's devices come from the device
plugin). The cluster injects these from the annotations (an annotation the service did not
write reads as ""), the local runner sets those it has from the same values."""

SIGNATURE_ANNOTATION: Final = "alloc.aistack.io/signature"
"""HMAC-SHA256 of the pod's uid and every other alloc.aistack.io/* annotation, with the
service's key (`translate.allocation_signature`): an allocation without a good one was not
written by the scheduler, and is not trusted (the pod is stopped)."""

GANG_ALLOCATION_ANNOTATION: Final = "alloc.aistack.io/gang"
"""On every pod of an admitted gang: the whole gang's placement as JSON {pod: {node, gpus}}, so
that a release cut short (a crash, a failed patch) is finished from any released pod."""

ADMITTED_AT_ANNOTATION: Final = "alloc.aistack.io/admitted-at"
"""When the service admitted the pod (RFC 3339), the start of its minimum runtime."""

EVICTION_REASON: Final = "AIStackEvicted"
"""Reason on the DisruptionTarget condition of a pod the service evicts (reclaim, preemption)."""

EVICTION_MESSAGE_PREFIX: Final = "aistack: "
"""Messages the service writes on pods start with this, so a retry expression can match them."""

RECLAIMED_MESSAGE_PREFIX: Final = "aistack: reclaimed for "
"""How the message of a pod evicted to give GPUs back to their owner starts ("... for <workload>:
<why>"). The service writes it as the pod's status message, which Argo shows as the step's."""

PREEMPTED_MESSAGE_PREFIX: Final = "aistack: preempted by "
"""How the message of a pod evicted for higher-priority work of its own queue starts ("... by
<workload> (priority ...)")."""

DEADLINE_MESSAGE_PREFIX: Final = "aistack: deadline "
"""How the message of a pod failed because its activeDeadlineSeconds passed while it waited
starts; unlike an eviction, it is not retried for free."""

GANG_SUBDOMAIN: Final = "aistack-gang"
"""The headless Service (one per namespace, created by the service) that gives gang members DNS
names, `<hostname>.aistack-gang`, so that every member can reach rank 0 (MASTER_ADDR)."""

GANG_DNS_LABEL: Final = "aistack.io/gang-dns"
"""Label ("true") on gang pods with a hostname under GANG_SUBDOMAIN: the Service selects them."""

# -- bounds --------------------------------------------------------------------------------------

MAX_GPUS_PER_POD: Final = 64
"""The most whole GPUs one pod may ask for (no node has more)."""

MAX_GPU_MEMORY_MIB: Final = 1 << 20
"""The largest slice memory (1 TiB, above any GPU made)."""

MAX_GANG_SIZE: Final = 4096
"""The most pods one gang may have."""

MIN_PRIORITY: Final = -1_000_000
MAX_PRIORITY: Final = 1_000_000
"""The range of a workload's priority inside its queue."""

MAX_NAME_LENGTH: Final = 63
"""Queue, pool and gang names are label values: at most 63 characters."""

# -- nodes --------------------------------------------------------------------------------------

POOL_LABEL: Final = "aistack.io/pool"
"""Node label naming the node's pool; without it the GPU product label is the pool."""

GPU_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
"""GPU feature discovery's label for the GPU model."""

GPU_MEMORY_LABEL: Final = "nvidia.com/gpu.memory"
"""GPU feature discovery's label for one GPU's memory, in MiB."""

GPU_INVENTORY_ANNOTATION: Final = "aistack.io/gpus"
"""Node annotation written by the node agent: the GPUs found with NVML, as a JSON list of
{"index", "uuid", "model", "memory_mib", "numa_node"}. Without it the GPUs are numbered from the
node's nvidia.com/gpu capacity and the two labels above."""

TOPOLOGY_LEVELS: Final = (
    ("zone", "topology.kubernetes.io/zone"),
    ("block", "aistack.io/block"),
    ("rack", "aistack.io/rack"),
    ("host", "kubernetes.io/hostname"),
)
"""Topology levels, widest first, and the node label giving each; a gang's wish names a level."""
