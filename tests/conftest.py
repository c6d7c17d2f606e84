"""Suite-wide pytest setup: the `--benchmarks` switch and the Hypothesis profiles."""

import os

import pytest
from hypothesis import settings

# `default` for local runs; `ci` replays the same examples on every run (derandomize) and prints
# the reproduction blob of a failure, so a red CI run can be replayed exactly.
settings.register_profile("default", max_examples=100, deadline=None)
settings.register_profile("ci", derandomize=True, max_examples=200, deadline=None, print_blob=True)
settings.load_profile("ci" if "CI" in os.environ else "default")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add `--benchmarks`, which runs the tests marked `benchmark`."""
    parser.addoption(
        "--benchmarks",
        action="store_true",
        default=False,
        help="run performance benchmarks (tests marked 'benchmark'); skipped otherwise",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `benchmark`-marked tests unless `--benchmarks` was given."""
    if config.getoption("--benchmarks"):
        return
    skip = pytest.mark.skip(reason="benchmark: pass --benchmarks to run it")
    for item in items:
        if item.get_closest_marker("benchmark") is not None:
            item.add_marker(skip)
