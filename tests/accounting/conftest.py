"""Fixtures for the accounting store: one test, both databases.

`store_url` (and `store`) is parametrised over SQLite (a file in the test's directory) and
PostgreSQL (a real server, started once per session by `postgres`; a failure to start it is an
error, never a skip). Each PostgreSQL test starts on empty tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from scheduler_service.accounting import AccountingStore, open_store
from tests.accounting.postgres import PostgresServer

TABLES = ("aistack_workload_events", "aistack_workload_records", "aistack_accounting_meta")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def drop_tables(url: str) -> None:
    """Empty a PostgreSQL database of the store's tables (the next store creates them)."""
    with psycopg.connect(url, autocommit=True) as connection:
        for table in TABLES:
            connection.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path.as_posix().lstrip('/')}/accounting.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    drop_tables(server.url)
    yield server.url
    drop_tables(server.url)


@pytest.fixture
def make_store(store_url: str) -> Iterator[Callable[[], AccountingStore]]:
    """Open (another) store on the test's database; all are closed at the end."""
    opened: list[AccountingStore] = []

    def make() -> AccountingStore:
        store = open_store(store_url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[[], AccountingStore]) -> AccountingStore:
    return make_store()
