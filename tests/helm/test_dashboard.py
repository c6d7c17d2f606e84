"""The dashboard's settings in the chart: absent by default, passed through, read by the service."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scheduler_service.kube import load_settings
from tests.helm._chart import config_of, render, render_error


def test_the_dashboard_runs_with_the_services_defaults_unless_configured() -> None:
    assert "dashboard" not in config_of(render())


def test_dashboard_settings_reach_config_yaml_and_the_service_reads_them(tmp_path: Path) -> None:
    config = config_of(
        render(
            set_json=[
                'config.dashboard={"argo_ui_url": "https://argo.example.com", '
                '"page_size": 50, "secure_cookie": false}'
            ]
        )
    )
    assert config["dashboard"] == {
        "argo_ui_url": "https://argo.example.com",
        "page_size": 50,
        "secure_cookie": False,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))

    settings = load_settings(path).dashboard

    assert settings.argo_ui_url == "https://argo.example.com"
    assert settings.page_size == 50
    assert settings.secure_cookie is False


@pytest.mark.parametrize(
    ("assignment", "where"),
    [
        ('config.dashboard={"argo_ui_url": "argo.example.com"}', "/config/dashboard/argo_ui_url"),
        ('config.dashboard={"page_size": 5}', "/config/dashboard/page_size"),
        ('config.dashboard={"colour": "blue"}', "colour"),
    ],
)
def test_the_schema_refuses_bad_dashboard_settings(assignment: str, where: str) -> None:
    assert where in render_error(set_json=[assignment])
