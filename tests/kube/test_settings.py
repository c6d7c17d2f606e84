"""The service's settings file: defaults, and bounds refused with the field's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler_service.kube import ServiceSettings, SettingsError, load_settings


def test_gangs_get_ten_minutes_to_assemble_by_default() -> None:
    assert ServiceSettings().gang_assembly_timeout_seconds == 600


@pytest.mark.parametrize("seconds", [0, 86_401])
def test_a_gang_assembly_timeout_out_of_bounds_is_refused_by_name(
    tmp_path: Path, seconds: int
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"gang_assembly_timeout_seconds: {seconds}\n")
    with pytest.raises(SettingsError, match="gang_assembly_timeout_seconds: Input should be"):
        load_settings(path)
