"""/readyz tells a scheduler that cannot schedule: not listed, a watch lost, cycles failing."""

from __future__ import annotations

import time

from kubernetes.client import ApiClient, Configuration

from scheduler_service.kube import ServiceSettings
from scheduler_service.kube._driver import FAILED_CYCLES, WATCH_LOSS_SECONDS, ClusterDriver


def unstarted_driver() -> ClusterDriver:
    """A driver whose threads never run: its state is set by the test."""
    configuration = Configuration()
    configuration.host = "https://127.0.0.1:1"
    return ClusterDriver(ApiClient(configuration), ServiceSettings())


def test_unready_until_listed_then_while_a_watch_is_lost_or_cycles_keep_failing() -> None:
    driver = unstarted_driver()
    assert driver.unready_reason() == "the cluster's pods, nodes and queues are not all listed yet"

    driver._listed.update(r.resource for r in driver._reflectors)
    assert driver.ready()

    pods = driver._reflectors[0]
    pods.failing_since = time.monotonic() - 5  # a short outage: still ready
    assert driver.ready()
    pods.failing_since = time.monotonic() - WATCH_LOSS_SECONDS - 1
    assert driver.unready_reason().startswith("the watch of pods has failed for over 30 s")
    pods.failing_since = None

    driver._failed_cycles = FAILED_CYCLES
    driver._cycle_error = "OverflowError: int too large to convert to float"
    assert driver.unready_reason() == (
        "the last 3 scheduling cycles failed: OverflowError: int too large to convert to float"
    )
