"""The accounting settings: the default SQLite file, a checked URL, the command line's override."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler_service.kube import (
    AccountingSettings,
    ServiceSettings,
    SettingsError,
    load_settings,
    with_accounting_url,
)


def test_by_default_records_go_to_a_sqlite_file_in_the_data_dir() -> None:
    settings = ServiceSettings()
    assert settings.accounting.enabled
    assert settings.accounting.store_url() == "sqlite:///var/lib/aistack/accounting.db"
    moved = AccountingSettings(data_dir="/data/")
    assert moved.store_url() == "sqlite:///data/accounting.db"


def test_a_url_of_no_known_database_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("accounting:\n  url: mysql://db/aistack\n")
    with pytest.raises(SettingsError, match=r"accounting\.url: .*neither sqlite:///<path> nor"):
        load_settings(path)


def test_the_command_line_url_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("accounting:\n  url: sqlite:///var/a.db\n")
    settings = with_accounting_url(load_settings(path), "postgresql://acct@db/aistack")
    assert settings.accounting.store_url() == "postgresql://acct@db/aistack"
    with pytest.raises(SettingsError, match="--accounting-url: accounting URL 'db/x' is neither"):
        with_accounting_url(settings, "mysql://user:secret@db/x")
