"""The simulator: the real scheduling core on a virtual clock, driven by scenarios or traces.

`Engine` replays submissions and node changes cycle by cycle, checks every plan against
DESIGN.md's invariants, and records a typed timeline; `load_scenario` reads a human-readable
TOML scenario and `run_scenario` plays it; `render_report` turns the result into the text that
`aistack demo` prints and the golden scenario tests compare.
"""

from scheduler_service.sim._engine import Engine
from scheduler_service.sim._fields import ScenarioError
from scheduler_service.sim._inputs import EngineSettings, NodeChange, SimulationError, Submission
from scheduler_service.sim._render import (
    format_seconds,
    render_report,
    render_summary,
    render_timeline,
)
from scheduler_service.sim._result import Outcome, SimulationResult
from scheduler_service.sim._scenario import (
    BUNDLED_SCENARIOS,
    Scenario,
    bundled_scenario,
    load_scenario,
    parse_scenario,
    run_scenario,
)
from scheduler_service.sim._summary import QueueSummary
from scheduler_service.sim._timeline import (
    Admitted,
    Evicted,
    Finished,
    Lost,
    NodeDown,
    NodeUp,
    PodPlacement,
    Requeued,
    Resumed,
    Submitted,
    TimelineEvent,
    Waiting,
)

__all__ = [
    "BUNDLED_SCENARIOS",
    "Admitted",
    "Engine",
    "EngineSettings",
    "Evicted",
    "Finished",
    "Lost",
    "NodeChange",
    "NodeDown",
    "NodeUp",
    "Outcome",
    "PodPlacement",
    "QueueSummary",
    "Requeued",
    "Resumed",
    "Scenario",
    "ScenarioError",
    "SimulationError",
    "SimulationResult",
    "Submission",
    "Submitted",
    "TimelineEvent",
    "Waiting",
    "bundled_scenario",
    "format_seconds",
    "load_scenario",
    "parse_scenario",
    "render_report",
    "render_summary",
    "render_timeline",
    "run_scenario",
]
