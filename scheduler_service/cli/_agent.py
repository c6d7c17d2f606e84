"""`aistack agent`: the node agent on one GPU node (the chart runs it as a DaemonSet).

It writes the node's GPUs on its Node every `--interval-seconds` and serves the GPU metrics on
`--metrics-port` (any path; Prometheus scrapes /metrics) until SIGTERM or SIGINT. Exit status:
0 after a stop signal, 2 for a usage error (no node name, a bad number, a missing kubeconfig),
1 when the metrics port cannot be opened.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from pathlib import Path

from kubernetes.client import CoreV1Api
from prometheus_client import CollectorRegistry, start_http_server

from scheduler_service.agent import (
    AgentCollector,
    GpuCollector,
    MpsKeeper,
    NodeAgent,
    PodDirectory,
)
from scheduler_service.gpu_sharing import (
    DEFAULT_MPS_ROOT,
    MECHANISMS,
    GpuSharing,
    Mechanism,
    MpsDaemons,
)
from scheduler_service.kube import api_client
from scheduler_service.pod_contract import POOL_LABEL

__all__ = ["add_agent_parser", "run_agent_command"]

_NODE_ENV = "NODE_NAME"


def add_agent_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `agent` command to the `aistack` parser."""
    agent = commands.add_parser(
        "agent",
        help="run the node agent on a GPU node (GPU inventory and metrics)",
        description="Read this node's GPUs with NVML, write them on its Node object for the "
        "scheduler (annotation aistack.io/gpus, the nvidia.com/gpu.product and .memory labels "
        "where absent, the condition AistackGPUInventory), and serve GPU metrics for "
        "Prometheus. In a pod it uses the service account; elsewhere pass --kubeconfig.",
    )
    agent.add_argument(
        "--node",
        default=os.environ.get(_NODE_ENV),
        help=f"the node's name (default: ${_NODE_ENV}, as the DaemonSet sets it)",
    )
    agent.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: in-cluster)")
    agent.add_argument(
        "--interval-seconds",
        type=_positive,
        default=30.0,
        help="seconds between two syncs of the Node (default 30)",
    )
    agent.add_argument(
        "--metrics-port", type=_port, default=9400, help="metrics port (default 9400; 0: none)"
    )
    agent.add_argument("--metrics-host", default="0.0.0.0", help="address to serve metrics on")
    agent.add_argument(
        "--proc-root",
        type=Path,
        default=Path("/proc"),
        help="the host's /proc, to find each GPU process's pod (default /proc: needs hostPID)",
    )
    agent.add_argument(
        "--gpu-sharing",
        choices=MECHANISMS,
        default="none",
        help="how the slices of a pool not named by --gpu-sharing-pool are enforced, the "
        "service's gpu_sharing.default: on a node of an mps pool the agent keeps one MPS daemon "
        "per GPU (docs/gpu-sharing.md); hami-core and none need nothing of it (default none)",
    )
    agent.add_argument(
        "--gpu-sharing-pool",
        type=_pool_mechanism,
        action="append",
        default=[],
        metavar="POOL=MECHANISM",
        help="the mechanism of one pool, as the service's gpu_sharing.pools (repeat it)",
    )
    agent.add_argument(
        "--pool-label",
        default=POOL_LABEL,
        help=f"the Node label naming its pool, the service's pool_label (default {POOL_LABEL})",
    )
    agent.add_argument(
        "--mps-root",
        type=Path,
        default=Path(DEFAULT_MPS_ROOT),
        help=f"the daemons' directory, the service's gpu_sharing.mps_root (default "
        f"{DEFAULT_MPS_ROOT}); the slices' pods mount it from the node",
    )
    agent.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    agent.set_defaults(run=run_agent_command)


def run_agent_command(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM/SIGINT; see the module for the exit status."""
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if not args.node:
        print(
            f"aistack agent: error: give the node's name with --node or ${_NODE_ENV}",
            file=sys.stderr,
        )
        return 2
    if args.kubeconfig is not None and not args.kubeconfig.is_file():
        print(
            f"aistack agent: error: {args.kubeconfig} does not exist or is not a file",
            file=sys.stderr,
        )
        return 2
    core = CoreV1Api(api_client(args.kubeconfig, pool_size=4))
    sharing = GpuSharing(
        default=args.gpu_sharing, pools=dict(args.gpu_sharing_pool), mps_root=str(args.mps_root)
    )
    mps = None
    if sharing.uses_mps:
        mps = MpsKeeper(MpsDaemons(args.mps_root), sharing, pool_label=args.pool_label)
    agent = NodeAgent(args.node, core, mps=mps)
    registry = CollectorRegistry()
    registry.register(
        GpuCollector(
            args.node,
            proc_root=args.proc_root,
            resolve_pods=PodDirectory(core, args.node),
            nvml_lock=agent.nvml_lock,
        )
    )
    registry.register(AgentCollector(agent))
    server = None
    if args.metrics_port:
        try:
            server, _thread = start_http_server(
                args.metrics_port, addr=args.metrics_host, registry=registry
            )
        except OSError as error:
            print(
                f"aistack agent: error: cannot serve metrics on "
                f"{args.metrics_host}:{args.metrics_port}: {error}",
                file=sys.stderr,
            )
            return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    logging.getLogger(__name__).info(
        "node agent for %s: syncing every %g s, metrics on %s, slices: %s",
        args.node,
        args.interval_seconds,
        f"{args.metrics_host}:{args.metrics_port}" if server else "nothing",
        f"MPS daemons in {args.mps_root} where the pool uses MPS" if mps else "no daemon",
    )
    try:
        agent.run(stop, args.interval_seconds)
    finally:
        if server is not None:
            server.shutdown()
    return 0


def _positive(text: str) -> float:
    """An argparse `type`: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"give a number of seconds above 0, e.g. 30; got {text!r}")
    return value


def _port(text: str) -> int:
    """An argparse `type`: a TCP port, or 0 for none."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"give a port from 1 to 65535, or 0 for none; got {text!r}"
        )
    return value


def _pool_mechanism(text: str) -> tuple[str, Mechanism]:
    """An argparse `type`: POOL=MECHANISM."""
    pool, _, mechanism = text.partition("=")
    for known in MECHANISMS:
        if pool and mechanism == known:
            return pool, known
    raise argparse.ArgumentTypeError(
        f"give POOL=MECHANISM with a mechanism of {', '.join(MECHANISMS)}, e.g. H100=mps; "
        f"got {text!r}"
    )
