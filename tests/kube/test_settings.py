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


def test_gpu_sharing_is_read_per_pool(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("gpu_sharing:\n  default: mps\n  pools: {A100: hami-core}\n")
    sharing = load_settings(path).gpu_sharing.to_sharing()
    assert (sharing.mechanism("H100"), sharing.mechanism("A100")) == ("mps", "hami-core")
    assert sharing.uses_mps
    assert sharing.mps_root == "/run/aistack/mps"
    assert not ServiceSettings().gpu_sharing.to_sharing().uses_mps


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("gpu_sharing: {default: mig}", "gpu_sharing.default: Input should be 'mps'"),
        ("gpu_sharing: {pools: {H100: timeslice}}", "gpu_sharing.pools.H100: Input should be"),
        ("gpu_sharing: {mps_root: run/mps}", "gpu_sharing.mps_root: String should match"),
        (f"gpu_sharing: {{mps_root: /{'r' * 60}}}", "gpu_sharing.mps_root: String should have at"),
    ],
)
def test_bad_gpu_sharing_is_refused_by_name(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text + "\n")
    with pytest.raises(SettingsError, match=problem):
        load_settings(path)


def test_gpu_reservations_need_the_image_of_their_pods(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("gpu_reservations: {enabled: true}\n")
    with pytest.raises(
        SettingsError, match=r"gpu_reservations\.enabled needs gpu_reservations\.image"
    ):
        load_settings(path)
