"""The two databases an `AccountingStore` runs on, behind one small seam: a `Backend`.

Both speak the same SQL (`INSERT ... ON CONFLICT DO NOTHING` included); what differs is how a
connection is made, the parameter style, the names of the two-argument min and max, how a
writer takes the schema lock, and which errors mean "the database is not there right now".
Each backend opens a connection in autocommit mode; the store brackets its writes with BEGIN
and COMMIT itself, so that reads never hold a transaction open.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["AccountingError", "Backend", "PostgresBackend", "SqliteBackend", "backend_for"]


class AccountingError(ValueError):
    """The accounting store is misconfigured (a bad URL, a schema newer than this service)."""


class Connection(Protocol):
    """The part of a DB-API connection the store uses."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any:
        """Run one statement; the result has fetchone/fetchall."""

    def close(self) -> None:
        """Close the connection."""


class Backend(Protocol):
    """One database: how to connect to it and the few ways its SQL differs."""

    least: str
    """The SQL function that takes the smaller of two numbers (MIN in SQLite, LEAST here)."""
    greatest: str

    def unavailable(self) -> tuple[type[Exception], ...]:
        """Errors that mean the database cannot be used right now (retry later), not a bug."""

    def connect(self) -> Connection:
        """A new connection in autocommit mode."""

    def sql(self, statement: str) -> str:
        """`statement` written with `?` placeholders, in this backend's parameter style."""

    def executemany(self, connection: Connection, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run `sql` once per row, in as few round trips as the driver allows."""

    def begin_write(self, connection: Connection) -> None:
        """Start a write transaction that other writers wait for."""

    def lock_schema(self, connection: Connection) -> None:
        """Inside a write transaction: keep other processes out of the schema migration."""

    def describe(self) -> str:
        """Where the data lives, for logs and errors (never a password)."""


@dataclass(frozen=True, slots=True)
class SqliteBackend:
    """A SQLite file in WAL mode: readers never wait for the writer, and one writer at a time.

    `synchronous=NORMAL` keeps every committed transaction across a crash of the process; a
    power loss may lose the last ones, which the service writes again from the cluster's state.
    """

    path: Path
    least = "MIN"
    greatest = "MAX"

    def unavailable(self) -> tuple[type[Exception], ...]:
        """A locked, unreadable or full database file, or a directory it cannot be made in."""
        return (sqlite3.OperationalError, OSError)

    def connect(self) -> Connection:
        """Open (creating the file and its directory if needed) in WAL mode."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            self.path, timeout=10, isolation_level=None, check_same_thread=False
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def sql(self, statement: str) -> str:
        """SQLite takes `?` as it is."""
        return statement

    def executemany(self, connection: Connection, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """sqlite3's own executemany."""
        assert isinstance(connection, sqlite3.Connection)
        connection.executemany(sql, rows)

    def begin_write(self, connection: Connection) -> None:
        """BEGIN IMMEDIATE: take the write lock now, not at the first write (no upgrade races)."""
        connection.execute("BEGIN IMMEDIATE")

    def lock_schema(self, connection: Connection) -> None:
        """The write lock of `begin_write` already keeps every other writer out."""

    def describe(self) -> str:
        """The file's path."""
        return f"sqlite:///{self.path.as_posix().lstrip('/')}"


_SCHEMA_LOCK_ID = 0x61697374  # "aist": one advisory lock, held while the schema is migrated


@dataclass(frozen=True, slots=True)
class PostgresBackend:
    """A PostgreSQL database, through psycopg 3 (imported only when one is configured)."""

    url: str
    connect_timeout_seconds: int = 5

    least = "LEAST"
    greatest = "GREATEST"

    def unavailable(self) -> tuple[type[Exception], ...]:
        """Connection-level failures: the server is down, unreachable, restarting, read-only."""
        import psycopg  # noqa: PLC0415 - psycopg is loaded only when PostgreSQL is configured

        return (psycopg.OperationalError, psycopg.InterfaceError)

    def connect(self) -> Connection:
        """A new autocommit connection."""
        import psycopg  # noqa: PLC0415 - see `unavailable`

        connection: Connection = psycopg.connect(
            self.url, autocommit=True, connect_timeout=self.connect_timeout_seconds
        )
        return connection

    def sql(self, statement: str) -> str:
        """Psycopg's `%s` placeholders (the store's SQL has no literal `?` or `%`)."""
        return statement.replace("?", "%s")

    def executemany(self, connection: Connection, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Psycopg's executemany, which pipelines the statements in one round trip."""
        with connection.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.executemany(sql, list(rows))

    def begin_write(self, connection: Connection) -> None:
        """A plain BEGIN: rows are the unit of locking in PostgreSQL."""
        connection.execute("BEGIN")

    def lock_schema(self, connection: Connection) -> None:
        """A transaction-scoped advisory lock: two replicas starting together migrate once."""
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_ID,))

    def describe(self) -> str:
        """The URL without its password."""
        parts = urllib.parse.urlsplit(self.url)
        if parts.password is None:
            return self.url
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def backend_for(url: str) -> Backend:
    """The backend a URL names: `sqlite:///abs/path.db`, or `postgresql://user@host/db`.

    Raises `AccountingError` for anything else, saying what is accepted.
    """
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        parts = urllib.parse.urlsplit(url)
        if parts.netloc or not parts.path or parts.path == "/" or parts.query:
            raise AccountingError(
                f"accounting URL {url!r}: a SQLite URL names an absolute file path after "
                "three slashes, e.g. sqlite:///var/lib/aistack/accounting.db"
            )
        return SqliteBackend(Path(urllib.parse.unquote(parts.path)))
    if scheme in {"postgresql", "postgres"}:
        return PostgresBackend(url)
    raise AccountingError(
        f"accounting URL {url.rsplit('@', maxsplit=1)[-1]!r} is neither sqlite:///<path> nor "
        "postgresql://<user>@<host>/<database>"
    )
