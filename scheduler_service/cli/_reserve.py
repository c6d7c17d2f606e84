"""`aistack reserve-gpu`: the container of a GPU reservation pod (see kube/_reservations.py).

NVIDIA's device plugin gave the pod one GPU and named it in NVIDIA_VISIBLE_DEVICES. The command
writes that device on its own pod (`pod_contract.RESERVED_DEVICE_ANNOTATION`), where the service
reads it, then holds the GPU until the pod is deleted (SIGTERM). Exit status: 0 after SIGTERM
or SIGINT, 1 when the plugin named no single device or the pod could not be patched (the
kubelet restarts the container), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import urllib3
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from scheduler_service import pod_contract as keys
from scheduler_service.kube import api_client

__all__ = ["add_reserve_parser", "reserved_device"]

_ATTEMPTS = 5


def add_reserve_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `reserve-gpu` command to the `aistack` parser."""
    reserve = commands.add_parser(
        "reserve-gpu",
        help="(run by the scheduler's GPU reservation pods) report the GPU held, then hold it",
        description="Write the device NVIDIA's device plugin gave this pod "
        "(NVIDIA_VISIBLE_DEVICES) on the pod itself, for the scheduler, then wait until "
        "stopped. The scheduler creates the pods that run this; people need not.",
    )
    reserve.add_argument("--pod", default=os.environ.get("POD_NAME"), help="default $POD_NAME")
    reserve.add_argument(
        "--namespace", default=os.environ.get("POD_NAMESPACE"), help="default $POD_NAMESPACE"
    )
    reserve.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: in-cluster)")
    reserve.set_defaults(run=run_reserve_command)


def reserved_device(environ: dict[str, str] | os._Environ[str]) -> str:
    """The one device the plugin named, or "" when it named none, all, or several."""
    device = environ.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    if not device or device in {"all", "none", "void"} or "," in device:
        return ""
    return device


def run_reserve_command(args: argparse.Namespace) -> int:
    """Report the device, then hold it until SIGTERM; see the module for the exit status."""
    if not args.pod or not args.namespace:
        print(
            "aistack reserve-gpu: error: give the pod with --pod and --namespace "
            "(or $POD_NAME and $POD_NAMESPACE, as the reservation pod sets them)",
            file=sys.stderr,
        )
        return 2
    device = reserved_device(os.environ)
    if not device:
        print(
            "aistack reserve-gpu: error: NVIDIA_VISIBLE_DEVICES names no single device "
            f"({os.environ.get('NVIDIA_VISIBLE_DEVICES', 'unset')!r}): NVIDIA's device plugin "
            "must give this pod its GPU with deviceListStrategy envvar",
            file=sys.stderr,
        )
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    core = CoreV1Api(api_client(args.kubeconfig, pool_size=1))
    body = {"metadata": {"annotations": {keys.RESERVED_DEVICE_ANNOTATION: device}}}
    for attempt in range(_ATTEMPTS):
        try:
            core.patch_namespaced_pod(
                args.pod,
                args.namespace,
                body,
                _content_type="application/merge-patch+json",
                _request_timeout=10,
            )
            break
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            if attempt == _ATTEMPTS - 1 or stop.is_set():
                print(
                    f"aistack reserve-gpu: error: cannot write device {device} on pod "
                    f"{args.namespace}/{args.pod}: {error}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(2**attempt)
    print(f"holding GPU {device} for the scheduler's slices", flush=True)
    stop.wait()
    return 0
