"""MPS on a node whose slices it enforces: one control daemon per GPU, defaults from the slices.

The service writes on each slice's pod the mechanism of its pool and, under MPS, the uuid of
its GPU (`pod_contract.GPU_SHARING_ANNOTATION`, `MPS_GPU_ANNOTATION`); the webhook mounted that
GPU's pipe directory into the pod's containers. The agent reads the same per-pool setting
(`GpuSharing`, from its command line) and its Node's pool; on a node of an MPS pool it keeps a
daemon on every GPU that is not in MIG mode, before any slice arrives, so a slice whose
container starts the moment its gate is lifted finds its daemon. A node whose pool does not
use MPS (any more) gets its daemons stopped. A GPU's
defaults are the largest memory and compute of the slices on it (`daemon_defaults`), or the
whole GPU while it holds none: a slice's own caps come from its environment, and the defaults
only hold a process that lost it (docs/gpu-sharing.md).

A daemon that dies is started again on the next pass, and a pass that cannot read the node's
pods keeps the defaults it last set rather than loosening them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

from scheduler_service import pod_contract as keys
from scheduler_service.gpu_discovery import Machine
from scheduler_service.gpu_sharing import (
    GpuSharing,
    MpsDaemon,
    MpsDaemons,
    MpsError,
    Share,
    daemon_defaults,
)

__all__ = ["MpsKeeper", "mps_shares", "node_slices"]

_log = logging.getLogger(__name__)

_ENDED: Final = frozenset({"Succeeded", "Failed"})


def node_slices(pods: Iterable[Mapping[str, Any]]) -> dict[str, list[Share]]:
    """The MPS slices of the node's pods, by GPU uuid.

    Every pod the service put under MPS whose containers may still run. A pod whose caps
    cannot be read is left out, with a warning (the service wrote them, so someone edited them).
    """
    slices: dict[str, list[Share]] = {}
    for pod in pods:
        metadata = pod.get("metadata") or {}
        annotations: Mapping[str, str] = metadata.get("annotations") or {}
        if annotations.get(keys.GPU_SHARING_ANNOTATION) != "mps":
            continue
        if (pod.get("status") or {}).get("phase") in _ENDED:
            continue
        uuid = annotations.get(keys.MPS_GPU_ANNOTATION, "")
        memory = annotations.get(keys.MEMORY_LIMIT_ANNOTATION, "")
        compute = annotations.get(keys.COMPUTE_LIMIT_ANNOTATION, "")
        try:
            device, _, mib = memory.partition("=")
            if device != "0" or not mib.endswith("M"):
                raise ValueError(memory)
            share = Share(memory_mib=int(mib[:-1]), compute_percent=int(compute))
        except ValueError:
            _log.warning(
                "pod %s/%s: its slice caps %s=%r and %s=%r cannot be read; left out of the MPS "
                "defaults of GPU %s",
                metadata.get("namespace"),
                metadata.get("name"),
                keys.MEMORY_LIMIT_ANNOTATION,
                memory,
                keys.COMPUTE_LIMIT_ANNOTATION,
                compute,
                uuid,
            )
            continue
        slices.setdefault(uuid, []).append(share)
    return slices


def mps_shares(machine: Machine, slices: Mapping[str, list[Share]]) -> dict[str, Share]:
    """The defaults of every GPU of the machine that can host MPS slices (not in MIG mode)."""
    return {
        gpu.uuid: (
            daemon_defaults(slices[gpu.uuid])
            if slices.get(gpu.uuid)
            else Share(memory_mib=gpu.memory_mib, compute_percent=100)
        )
        for gpu in machine.gpus
        if not gpu.mig_enabled and not gpu.simulated
    }


class MpsKeeper:
    """Keeps the node's MPS daemons in step with its GPUs and slices, one pass at a time.

    Not thread-safe: the agent's loop owns it.
    """

    def __init__(
        self, daemons: MpsDaemons, sharing: GpuSharing, *, pool_label: str = keys.POOL_LABEL
    ) -> None:
        """Keep the daemons of `daemons.root` where `sharing` says a pool uses MPS.

        The node's pool is its `pool_label` label, else its GPU product label, as the service
        reads it. Nothing runs until the first pass.
        """
        self.daemons = daemons
        self.sharing = sharing
        self._pool_label = pool_label
        self.last: tuple[MpsDaemon, ...] = ()
        self.failures: Mapping[str, str] = {}
        self.failures_total = 0
        self._slices: dict[str, list[Share]] = {}

    def __repr__(self) -> str:
        return f"MpsKeeper({self.daemons!r})"

    def pass_(
        self,
        machine: Machine,
        pods: Iterable[Mapping[str, Any]] | None,
        labels: Mapping[str, str],
    ) -> None:
        """Start, configure or stop daemons; failures are logged and kept in `failures`.

        `machine` is what NVML found, `pods` the node's pods (None when they could not be
        listed: the slices of the last list stay), `labels` the Node's. A machine NVML could
        not read completely keeps every daemon as it is: stopping one for a GPU that only
        failed to answer would cut its slices off their daemon.
        """
        if pods is not None:
            self._slices = node_slices(pods)
        if machine.source != "nvml" or machine.note:
            return
        pool = labels.get(self._pool_label) or labels.get(keys.GPU_PRODUCT_LABEL) or "default"
        mps = self.sharing.mechanism(pool) == "mps"
        shares = mps_shares(machine, self._slices) if mps else {}
        if not shares and not any(self.daemons.root.glob("*/pipe")):
            self.last, self.failures = (), {}
            return
        unavailable = self.daemons.available()
        if unavailable:
            self.failures = dict.fromkeys(shares, unavailable)
            self.failures_total += 1
            _log.error(
                "MPS daemons cannot run, slices on this node are not capped: %s", unavailable
            )
            return
        try:
            self.last = self.daemons.ensure(shares)
        except MpsError as error:
            self.failures = error.failures
            self.failures_total += 1
            _log.warning("MPS daemons: %s", error)
        else:
            if self.failures:
                _log.info("MPS daemons: all %d GPUs served again", len(self.last))
            self.failures = {}
            for daemon in self.last:
                if daemon.action != "kept":
                    _log.info(
                        "MPS daemon of %s %s (pid %s): defaults %d MiB, %d%%",
                        daemon.uuid,
                        daemon.action,
                        daemon.pid,
                        daemon.defaults.memory_mib,
                        daemon.defaults.compute_percent,
                    )
