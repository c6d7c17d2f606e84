"""The local runner: a pipeline on one machine, its GPU steps admitted by the same core.

`aistack run FILE` loads a Hera pipeline (or Argo YAML), builds it with its GPU steps managed
(the manifest a cluster would get), checks that it can run here (`check`), and adds a run to a
state directory (`Store`, SQLite). A `LocalRunner` then works the run out as Argo's controller
would (`Run`), asks the scheduling core for every GPU step (`Scheduler.cycle`, the service's
path) and runs each step as a local process on this machine's GPUs (found with NVML, or
simulated). See docs/local.md.
"""

from aistack_flows.local._config import ConfigError, LocalConfig, load_config
from aistack_flows.local._inspect import (
    RunNotFoundError,
    explain_lines,
    find_run,
    list_rows,
    logs,
    status_rows,
)
from aistack_flows.local._runner import LocalRunner, machine_node
from aistack_flows.local._session import (
    DashboardServer,
    RunOptions,
    RunRefusedError,
    default_state_directory,
    run_pipelines,
    submit_runs,
)
from aistack_flows.local._store import PodRow, RunRow, Store, StoreError
from aistack_flows.local._support import UnsupportedError, check
from aistack_flows.local._workflow import Node, Phase, Run, RunError

__all__ = [
    "ConfigError",
    "DashboardServer",
    "LocalConfig",
    "LocalRunner",
    "Node",
    "Phase",
    "PodRow",
    "Run",
    "RunError",
    "RunNotFoundError",
    "RunOptions",
    "RunRefusedError",
    "RunRow",
    "Store",
    "StoreError",
    "UnsupportedError",
    "check",
    "default_state_directory",
    "explain_lines",
    "find_run",
    "list_rows",
    "load_config",
    "logs",
    "machine_node",
    "run_pipelines",
    "status_rows",
    "submit_runs",
]
