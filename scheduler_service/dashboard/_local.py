"""`LocalPages`: the dashboard of a local runner, served on 127.0.0.1 while it schedules.

`aistack run --dashboard [PORT]` starts it before any run is added (a port that cannot be
listened on refuses the command), and the runner publishes each explained cycle into it
(`publish`, about once a second). The pages are the service's, on services without
authentication (`unauthenticated_services`): the machine's user sees every run. A run is shown
as its workloads' namespace and workflow.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping

import uvicorn

from scheduler_service.api import ClusterStatus, WorkloadPods, unauthenticated_services
from scheduler_service.core import Plan, Snapshot
from scheduler_service.dashboard._app import create_dashboard
from scheduler_service.dashboard._settings import DashboardSettings

__all__ = ["LocalPages"]

_HOST = "127.0.0.1"
_SHUTDOWN_SECONDS = 2


class LocalPages:
    """The dashboard's pages on `127.0.0.1:port` (0: a free port), served by a thread."""

    def __init__(self, port: int, settings: DashboardSettings | None = None) -> None:
        """Listen on the port (OSError when it cannot) and serve from a daemon thread."""
        self._status = ClusterStatus(snapshot=Snapshot(), plan=Plan())
        listener = socket.create_server((_HOST, port))
        self.url = f"http://{_HOST}:{listener.getsockname()[1]}/"
        app = create_dashboard(
            settings or DashboardSettings(),
            unauthenticated_services(lambda: self._status),
        )
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                lifespan="off",
                # Live pages hold their event streams open: stop waiting for them at the end.
                timeout_graceful_shutdown=_SHUTDOWN_SECONDS,
            )
        )
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [listener]},
            name="aistack-dashboard",
            daemon=True,
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"<LocalPages {self.url} cycle_at={self._status.cycle_at:g}>"

    def publish(
        self,
        snapshot: Snapshot,
        plan: Plan,
        pods: Mapping[str, tuple[str, tuple[str, ...]]],
        cycle_at: float,
    ) -> None:
        """Show this cycle: `pods` maps each workload to its run and its pods."""
        self._status = ClusterStatus(
            snapshot=snapshot,
            plan=plan,
            pods={
                workload: WorkloadPods(namespace=run, pods=names, workflow=run)
                for workload, (run, names) in pods.items()
            },
            cycle_at=cycle_at,
            leader=True,
        )

    def close(self) -> None:
        """Stop serving: open event streams end, the thread returns."""
        self._server.should_exit = True
        self._thread.join(timeout=_SHUTDOWN_SECONDS + 3)
