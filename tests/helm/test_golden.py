"""Golden renders: `helm template` with each `testdata/*.values.yaml`, compared to a file.

Regenerate with `AISTACK_UPDATE_GOLDEN=1 .venv/bin/pytest tests/helm -k golden` (never when `CI`
is set) and read the diff. Certificate bytes differ on every render and are replaced by a
placeholder (`_chart.normalise`); test_webhooks.py checks the real ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import golden
from tests.helm._chart import TESTDATA, normalise, render_text

VALUES = sorted(TESTDATA.glob("*.values.yaml"))


def _golden_of(values: Path) -> Path:
    return values.with_name(values.name.removesuffix(".values.yaml") + ".golden.yaml")


def test_there_are_values_files() -> None:
    names = {path.name.removesuffix(".values.yaml") for path in VALUES}

    assert {"defaults", "cert-manager-servicemonitor", "single-replica", "existing-secret"} <= names


@pytest.mark.parametrize("values", VALUES, ids=lambda path: path.name.removesuffix(".values.yaml"))
def test_render_matches_golden(values: Path) -> None:
    golden.compare(normalise(render_text(values)), _golden_of(values))


def test_every_golden_has_its_values_file() -> None:
    goldens = {path.name for path in TESTDATA.glob("*.golden.yaml")}

    assert goldens == {_golden_of(values).name for values in VALUES}


def test_normalise_hides_only_certificate_material() -> None:
    text = (
        "  tls.crt: QUJD\n  caBundle: REVG\n  name: tls.crt\n  tls.key: R0hJ\n"
        "    checksum/config: 0e99\n    checksum/tls: 83ff\n"
    )

    assert normalise(text) == (
        "  tls.crt: <certificate material>\n"
        "  caBundle: <certificate material>\n"
        "  name: tls.crt\n"
        "  tls.key: <certificate material>\n"
        "    checksum/config: 0e99\n"
        "    checksum/tls: <certificate material>\n"
    )


def test_two_renders_differ_only_in_certificate_material() -> None:
    """The premise of normalising: everything else in a render is deterministic."""
    defaults = TESTDATA / "defaults.values.yaml"
    first = render_text(defaults)
    second = render_text(defaults, set_json=["podLabels={}"])  # a second, uncached render

    assert first != second
    assert normalise(first) == normalise(second)
