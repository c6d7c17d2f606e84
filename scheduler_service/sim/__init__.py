"""The simulator: the real scheduling core on a virtual clock, driven by scenarios or traces.

`Engine` replays submissions and node changes cycle by cycle, injects seeded `Faults` (failed
pod patches, crashed pods), checks every plan against DESIGN.md's invariants, and records a
typed timeline; `load_scenario` reads a human-readable TOML scenario and `run_scenario` plays
it; `render_report` turns the result into the text that `aistack demo` prints and the golden
scenario tests compare. Experiment 2 (`aistack sim pooling`): `load_philly` reads the Philly
trace, `run_pooling` replays it under each policy through the core (`replay`, fast, driven
through a `Decider`), and `render_table` shows the figures.
"""

from scheduler_service.sim._engine import Engine
from scheduler_service.sim._fields import ScenarioError
from scheduler_service.sim._inputs import (
    EngineSettings,
    Faults,
    NodeChange,
    SimulationError,
    Submission,
)
from scheduler_service.sim._philly import PhillyJob, PhillyTrace, TraceError, load_philly
from scheduler_service.sim._pooling_report import render_table, run_pooling
from scheduler_service.sim._render import (
    format_seconds,
    render_report,
    render_summary,
    render_timeline,
)
from scheduler_service.sim._replay import replay
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
    Crashed,
    Evicted,
    Finished,
    Lost,
    NodeDown,
    NodeUp,
    PatchFailed,
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
    "Crashed",
    "Engine",
    "EngineSettings",
    "Evicted",
    "Faults",
    "Finished",
    "Lost",
    "NodeChange",
    "NodeDown",
    "NodeUp",
    "Outcome",
    "PatchFailed",
    "PhillyJob",
    "PhillyTrace",
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
    "TraceError",
    "Waiting",
    "bundled_scenario",
    "format_seconds",
    "load_philly",
    "load_scenario",
    "parse_scenario",
    "render_report",
    "render_summary",
    "render_table",
    "render_timeline",
    "replay",
    "run_pooling",
    "run_scenario",
]
