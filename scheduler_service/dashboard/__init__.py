"""The web dashboard: server-rendered pages of the scheduler's state, served under /ui.

`create_dashboard(settings, services)` builds the app that `create_app` mounts; it reads the
same `Services` as the API (the driver's `ClusterStatus`, the `Authorizer`), so a page shows
exactly what the API would tell the same viewer. Each view's model is built by a pure function
of the cluster view, the viewer's `Scope` and the time (`build_*`), and rendered by a Jinja2
template; charts are SVG drawn on the server (`_svg`). See docs/dashboard.md.
"""

from scheduler_service.dashboard._access import ANONYMOUS, TOKEN_COOKIE, NotSignedIn, Scope
from scheduler_service.dashboard._app import create_dashboard
from scheduler_service.dashboard._errors import PageError
from scheduler_service.dashboard._local import LocalPages
from scheduler_service.dashboard._nodes import GpuCell, Holder, NodeCard, NodesPage, build_nodes
from scheduler_service.dashboard._overview import Overview, PoolRow, build_overview
from scheduler_service.dashboard._queues import (
    QueuePoolRow,
    QueueRow,
    QueuesPage,
    Standing,
    build_queues,
)
from scheduler_service.dashboard._settings import DashboardSettings
from scheduler_service.dashboard._workload import Fact, PodRow, WorkloadPage, build_workload
from scheduler_service.dashboard._workloads import (
    WorkloadFilters,
    WorkloadRow,
    WorkloadsPage,
    build_workloads,
)

__all__ = [
    "ANONYMOUS",
    "TOKEN_COOKIE",
    "DashboardSettings",
    "Fact",
    "GpuCell",
    "Holder",
    "LocalPages",
    "NodeCard",
    "NodesPage",
    "NotSignedIn",
    "Overview",
    "PageError",
    "PodRow",
    "PoolRow",
    "QueuePoolRow",
    "QueueRow",
    "QueuesPage",
    "Scope",
    "Standing",
    "WorkloadFilters",
    "WorkloadPage",
    "WorkloadRow",
    "WorkloadsPage",
    "build_nodes",
    "build_overview",
    "build_queues",
    "build_workload",
    "build_workloads",
    "create_dashboard",
]
