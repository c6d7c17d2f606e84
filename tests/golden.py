"""Golden files (scenario reports, chart renders, the OpenAPI schema): compared in every run.

`AISTACK_UPDATE_GOLDEN=1` rewrites them, never when `CI` is set, so CI always compares. Read a
regenerated golden's diff as carefully as code.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest


def updating() -> bool:
    """Whether goldens are being regenerated in this run."""
    return os.environ.get("AISTACK_UPDATE_GOLDEN") == "1" and "CI" not in os.environ


def compare(actual: str, golden: Path) -> None:
    """Fail with a diff unless `actual` equals the golden file (or rewrite it when updating)."""
    if updating():
        golden.write_text(actual, encoding="utf-8")
        return
    if not golden.exists():
        pytest.fail(f"no golden {golden.name}; create it with AISTACK_UPDATE_GOLDEN=1")
    expected = golden.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"{golden.name} (golden)",
                tofile="actual",
            )
        )
        pytest.fail(
            f"{golden.name} differs from what the test produced:\n{diff}\n"
            "If the change is intended, regenerate with AISTACK_UPDATE_GOLDEN=1 and review it.",
            pytrace=False,
        )
