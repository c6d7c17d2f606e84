"""Golden scenarios: every `testdata/*.toml` replayed, its rendered report compared to a file.

The goldens are regenerated only on request: `AISTACK_UPDATE_GOLDEN=1 scripts/test -k golden`
rewrites them (never when `CI` is set, so CI always compares). Read the diff of a regenerated
golden as carefully as code: each scenario's header comment says what should happen.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest

from scheduler_service.sim import (
    Scenario,
    SimulationResult,
    Submission,
    bundled_scenario,
    load_scenario,
    render_report,
    run_scenario,
)
from tests.golden import compare

TESTDATA = Path(__file__).parent / "testdata"
SCENARIOS = sorted(TESTDATA.glob("*.toml"))


def _golden_of(scenario: Path) -> Path:
    return scenario.with_suffix(".golden.txt")


def test_there_are_scenarios() -> None:
    assert len(SCENARIOS) >= 9


def outcome_problems(scenario: Scenario, result: SimulationResult) -> list[str]:
    """Every submitted workload without exactly one outcome, and every outcome not submitted.

    Counted against the scenario's submissions, not against the outcomes themselves: a run that
    loses a workload has one outcome fewer, and its report (and a golden regenerated from it)
    simply does not mention it.
    """
    submitted = Counter(e.workload.name for e in scenario.events if isinstance(e, Submission))
    outcomes = Counter(o.workload for o in result.outcomes)
    return [
        f"{name}: submitted {submitted[name]} time(s), {outcomes[name]} outcome(s)"
        for name in sorted(submitted | outcomes)
        if outcomes[name] != submitted[name]
    ]


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda path: path.stem)
def test_scenario_matches_golden(path: Path) -> None:
    scenario = load_scenario(path)
    result = run_scenario(scenario)

    assert outcome_problems(scenario, result) == [], "every workload has exactly one outcome"
    compare(render_report(result), _golden_of(path))


def test_a_run_that_loses_a_workload_fails_the_outcome_check() -> None:
    """A deliberately broken run: the last outcome is missing, as if the workload were lost."""
    scenario = load_scenario(TESTDATA / "three_researchers.toml")
    result = run_scenario(scenario)
    lost = result.outcomes[-1].workload
    broken = replace(result, outcomes=result.outcomes[:-1])

    assert outcome_problems(scenario, result) == []
    assert outcome_problems(scenario, broken) == [f"{lost}: submitted 1 time(s), 0 outcome(s)"]


def test_bundled_demo_scenario_matches_the_same_golden() -> None:
    """`aistack demo` replays the packaged copy; it must tell the tested story."""
    result = run_scenario(bundled_scenario("three_researchers"))

    expected = _golden_of(TESTDATA / "three_researchers.toml").read_text(encoding="utf-8")
    assert render_report(result) == expected


def test_bundled_demo_scenario_is_the_testdata_file() -> None:
    packaged = resources.files("scheduler_service.sim").joinpath("scenarios")
    text = packaged.joinpath("three_researchers.toml").read_text(encoding="utf-8")

    assert text == (TESTDATA / "three_researchers.toml").read_text(encoding="utf-8")


def test_every_golden_has_its_scenario() -> None:
    stale = [
        golden.name
        for golden in TESTDATA.glob("*.golden.txt")
        if not golden.with_name(golden.name.replace(".golden.txt", ".toml")).exists()
    ]
    assert stale == []
