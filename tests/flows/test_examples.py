"""Examples and ready-made templates are tests: each renders to its committed manifest.

`AISTACK_UPDATE_GOLDEN=1` rewrites examples/*.yaml and templates/*.yaml after an intended
change (read their diff as code); CI always compares.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import aistack_flows as af
from aistack_flows.library import render_template, step_templates
from tests.golden import compare, updating

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
HERA_EXAMPLES = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("airflow_"))
"""The Hera pipelines; `airflow_*.py` are Airflow DAGs, tested in tests/airflow."""
TEMPLATES = ROOT / "templates"


@pytest.mark.parametrize("example", HERA_EXAMPLES, ids=lambda p: p.stem)
def test_every_example_renders_to_its_golden_manifest(example: Path) -> None:
    compare(af.render(af.load_pipelines(example)), example.with_suffix(".yaml"))


def test_every_template_is_generated_from_the_library() -> None:
    generated = {f"{t.name}.yaml": render_template(t) for t in step_templates()}
    for name, text in generated.items():
        compare(text, TEMPLATES / name)
    if not updating():
        assert sorted(p.name for p in TEMPLATES.glob("*.yaml")) == sorted(generated)


def test_every_yaml_in_examples_belongs_to_an_example() -> None:
    assert {p.stem for p in EXAMPLES.glob("*.yaml")} == {p.stem for p in HERA_EXAMPLES}


def test_the_checkpoint_example_resumes_where_a_reclaim_stopped_it(tmp_path: Path) -> None:
    """The contract, run for real: SIGTERM saves, the next attempt resumes, same result."""
    script = EXAMPLES / "checkpointed_training.py"
    env = {**os.environ, "AISTACK_CHECKPOINT_DIR": str(tmp_path / "interrupted")}
    first = subprocess.Popen(  # the example itself, as a step would run it
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True
    )
    checkpoint = tmp_path / "interrupted" / "state.json"
    deadline = time.monotonic() + 30
    while not checkpoint.exists():
        assert time.monotonic() < deadline, "no checkpoint written within 30 s"
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)  # what a reclaim does to the step's process
    stopped, _ = first.communicate(timeout=30)
    assert first.returncode == 128 + signal.SIGTERM
    assert "checkpoint saved" in stopped
    env[af.ATTEMPT_ENV] = "1"
    resumed = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, check=True
    ).stdout
    epoch = int(stopped.split("stopped at epoch ")[1].split(",")[0])
    assert f"resuming from epoch {epoch} (attempt 1)" in resumed
    whole = subprocess.run(
        [sys.executable, str(script)],
        env={**env, "AISTACK_CHECKPOINT_DIR": str(tmp_path / "whole")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert resumed.splitlines()[-1] == whole.splitlines()[-1]  # the same model either way


def pipelines_in(markdown: Path) -> list[str]:
    """The Python blocks of a document that define a Hera workflow."""
    blocks = markdown.read_text(encoding="utf-8").split("```python\n")[1:]
    return [b.split("```")[0] for b in blocks if "Workflow(" in b]


@pytest.mark.parametrize("document", ["README.md", "docs/authors.md"])
def test_the_pipelines_in_the_docs_build(document: str, tmp_path: Path) -> None:
    blocks = pipelines_in(ROOT / document)
    assert blocks, f"{document} shows no pipeline"
    for index, block in enumerate(blocks):
        path = tmp_path / f"block{index}.py"
        path.write_text(block)
        assert af.render(af.load_pipelines(path)).count("aistack.io/admission") >= 1
