"""`AccountingStore`: workload records and their events in SQLite or PostgreSQL, and reports.

The store connects lazily: the first call (from any thread) connects and brings the schema up
to date (`MIGRATIONS`, versioned in the table `aistack_accounting_meta`). Each thread has its
own connection; a call that finds the database unreachable raises `AccountingUnavailable` and
drops that thread's connection, so the next call connects again.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

from scheduler_service.accounting._backends import (
    AccountingError,
    Backend,
    Connection,
    backend_for,
)
from scheduler_service.accounting._records import (
    Admitted,
    Change,
    Ended,
    EndReason,
    EventKind,
    HistoryEvent,
    RecordKey,
    Submitted,
    WorkloadHistory,
    WorkloadRecord,
)
from scheduler_service.accounting._report import TOTAL_KEY, Grouping, UsageReport, UsageRow

__all__ = [
    "MAX_HISTORY_EVENTS",
    "MAX_HISTORY_RECORDS",
    "MAX_NAMESPACES",
    "MAX_USAGE_ROWS",
    "MIGRATIONS",
    "AccountingStore",
    "AccountingUnavailable",
    "open_store",
]

_log = logging.getLogger(__name__)

MAX_HISTORY_RECORDS = 100
"""A history shows at most this many attempts of a workload's step (the latest)."""
MAX_HISTORY_EVENTS = 500
"""... and at most this many events (the latest)."""
MAX_USAGE_ROWS = 1000
"""A usage report lists at most this many keys (the largest); its total counts them all."""
MAX_NAMESPACES = 10_000
"""`namespaces()` names at most this many."""

_RECORDS = "aistack_workload_records"
_EVENTS = "aistack_workload_events"
_META = "aistack_accounting_meta"

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: records, one per workload attempt, and their events.
    (
        f"""CREATE TABLE {_RECORDS} (
            namespace TEXT NOT NULL,
            workload TEXT NOT NULL,
            submitted_at DOUBLE PRECISION NOT NULL,
            queue TEXT NOT NULL,
            user_name TEXT NOT NULL,
            workflow TEXT NOT NULL,
            step TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            kind TEXT NOT NULL,
            pods INTEGER NOT NULL,
            gpus DOUBLE PRECISION NOT NULL,
            pool TEXT NOT NULL DEFAULT '',
            gpu_model TEXT NOT NULL DEFAULT '',
            admitted_at DOUBLE PRECISION,
            ended_at DOUBLE PRECISION,
            end_reason TEXT,
            end_cause TEXT NOT NULL DEFAULT '',
            end_message TEXT NOT NULL DEFAULT '',
            used_gpu_seconds DOUBLE PRECISION,
            PRIMARY KEY (namespace, workload, submitted_at)
        )""",
        # A period's records: those that ended after its start, and those still open. It covers
        # what a report reads, so a report never visits the table: with most records in the
        # period (a young store) a lookup per record would be slower than a scan.
        f"CREATE INDEX {_RECORDS}_by_end ON {_RECORDS} "
        "(ended_at, admitted_at, gpus, queue, namespace, user_name, used_gpu_seconds)",
        f"CREATE INDEX {_RECORDS}_by_step ON {_RECORDS} (namespace, workflow, step)",
        f"""CREATE TABLE {_EVENTS} (
            namespace TEXT NOT NULL,
            workload TEXT NOT NULL,
            submitted_at DOUBLE PRECISION NOT NULL,
            kind TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            cause TEXT NOT NULL,
            message TEXT NOT NULL,
            PRIMARY KEY (namespace, workload, submitted_at, kind)
        )""",
    ),
)
"""The schema, one tuple of statements per version; a store at version n runs n+1 onwards."""

_COLUMNS = (
    "namespace, workload, submitted_at, queue, user_name, workflow, step, attempt, kind, pods, "
    "gpus, pool, gpu_model, admitted_at, ended_at, end_reason, end_cause, end_message, "
    "used_gpu_seconds"
)
_GROUP_COLUMNS = {
    Grouping.QUEUE: "queue",
    Grouping.NAMESPACE: "namespace",
    Grouping.USER: "user_name",
}


class AccountingUnavailable(Exception):  # noqa: N818 - it names a state, like AuthUnavailable
    """The database cannot be reached or used right now; the message says which and why."""


def open_store(url: str) -> AccountingStore:
    """A store for `url`, connected and with its schema up to date.

    Raises `AccountingError` for a bad URL or a newer schema, `AccountingUnavailable` when the
    database cannot be reached.
    """
    store = AccountingStore(url)
    store.ensure_ready()
    return store


class AccountingStore:
    """Records and events of workloads (see the package docstring). Thread-safe."""

    def __init__(self, url: str) -> None:
        """A store for `url` (checked now; nothing is connected until the first call).

        Raises `AccountingError` for a URL that is neither SQLite nor PostgreSQL.
        """
        self._backend: Backend = backend_for(url)
        self._local = threading.local()
        self._ready = False
        self._lock = threading.Lock()
        self._connections: list[Connection] = []

    def __repr__(self) -> str:
        return f"<AccountingStore {self._backend.describe()}>"

    @property
    def where(self) -> str:
        """Where the data lives (the URL without a password)."""
        return self._backend.describe()

    def close(self) -> None:
        """Close every connection the store opened; a later call connects again."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            try:
                connection.close()
            except Exception:  # closing what may already be broken
                _log.debug("closing an accounting connection failed", exc_info=True)
        self._local = threading.local()

    # -- connections and schema -------------------------------------------------------------------

    def _connection(self) -> Connection:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._backend.connect()
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _drop_connection(self) -> None:
        connection: Connection | None = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is None:
            return
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)
        try:
            connection.close()
        except Exception:  # it is broken already
            _log.debug("closing a broken accounting connection failed", exc_info=True)

    def _unavailable(self, error: Exception) -> AccountingUnavailable:
        self._drop_connection()
        return AccountingUnavailable(f"accounting store {self.where}: {error}")

    def ensure_ready(self) -> None:
        """Connect and bring the schema up to date, once. See `open_store` for the errors."""
        if self._ready:
            return
        try:
            connection = self._connection()
            self._migrate(connection)
        except self._backend.unavailable() as error:
            raise self._unavailable(error) from error
        except BaseException:
            self._drop_connection()  # e.g. a newer schema: nothing may use this store
            raise
        self._ready = True

    def schema_version(self) -> int:
        """The schema version the database is at (0: empty)."""
        self.ensure_ready()
        return self._read_version(self._connection())

    def _read_version(self, connection: Connection) -> int:
        row = connection.execute(
            self._backend.sql(f"SELECT value FROM {_META} WHERE key = ?"), ("schema_version",)
        ).fetchone()
        return int(row[0]) if row else 0

    def _migrate(self, connection: Connection) -> None:
        backend = self._backend
        backend.begin_write(connection)
        try:
            backend.lock_schema(connection)
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {_META} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            version = self._read_version(connection)
            if version > len(MIGRATIONS):
                raise AccountingError(
                    f"accounting store {self.where} has schema version {version}, newer than "
                    f"this service's {len(MIGRATIONS)}: run the newer service, or point "
                    "accounting.url at another store"
                )
            for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    connection.execute(statement)
                self._set_meta(connection, "schema_version", str(number))
                _log.info("accounting store %s: schema at version %d", self.where, number)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def _set_meta(self, connection: Connection, key: str, value: str) -> None:
        connection.execute(
            self._backend.sql(
                f"INSERT INTO {_META} (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            ),
            (key, value),
        )

    def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        self.ensure_ready()
        try:
            return list(self._connection().execute(self._backend.sql(sql), parameters).fetchall())
        except self._backend.unavailable() as error:
            raise self._unavailable(error) from error

    # -- writing ----------------------------------------------------------------------------------

    def apply(self, changes: Sequence[Change], *, seen_at: float | None = None) -> None:
        """Write `changes` (and, if given, `seen_at` as `last_seen()`) in one transaction.

        Idempotent: a change the store already has is skipped; each record's submission,
        admission and end are written once (the first), and so is each of its events.
        Raises `AccountingUnavailable` (nothing written) when the database cannot be used.
        """
        self.ensure_ready()
        backend = self._backend
        submitted = [c for c in changes if isinstance(c, Submitted)]
        admitted = [c for c in changes if isinstance(c, Admitted)]
        ended = [c for c in changes if isinstance(c, Ended)]
        events = [*_submitted_events(submitted), *_admitted_events(admitted), *_ended_events(ended)]
        try:
            connection = self._connection()
            backend.begin_write(connection)
            try:
                self._write(connection, submitted, admitted, ended, events)
                if seen_at is not None:
                    self._set_meta(connection, "last_seen_at", repr(float(seen_at)))
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except backend.unavailable() as error:
            raise self._unavailable(error) from error

    def _write(
        self,
        connection: Connection,
        submitted: Sequence[Submitted],
        admitted: Sequence[Admitted],
        ended: Sequence[Ended],
        events: Sequence[tuple[Any, ...]],
    ) -> None:
        backend = self._backend
        if submitted:
            backend.executemany(
                connection,
                backend.sql(
                    f"INSERT INTO {_RECORDS} (namespace, workload, submitted_at, queue, user_name, "
                    "workflow, step, attempt, kind, pods, gpus) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (namespace, workload, submitted_at) DO NOTHING"
                ),
                (_submitted_row(c) for c in submitted),
            )
        if admitted:
            backend.executemany(
                connection,
                backend.sql(
                    f"UPDATE {_RECORDS} SET admitted_at = ?, gpus = ?, pool = ?, gpu_model = ? "
                    "WHERE namespace = ? AND workload = ? AND submitted_at = ? "
                    "AND admitted_at IS NULL"
                ),
                ((c.at, c.gpus, c.pool, c.gpu_model, *_key(c.key)) for c in admitted),
            )
        if ended:
            # An end is never before the admission (clocks of two replicas may disagree).
            backend.executemany(
                connection,
                backend.sql(
                    f"UPDATE {_RECORDS} SET ended_at = CASE WHEN admitted_at > ? THEN admitted_at "
                    "ELSE ? END, end_reason = ?, end_cause = ?, end_message = ? "
                    "WHERE namespace = ? AND workload = ? AND submitted_at = ? "
                    "AND ended_at IS NULL"
                ),
                ((c.at, c.at, c.reason.value, c.cause, c.message, *_key(c.key)) for c in ended),
            )
        if events:
            backend.executemany(
                connection,
                backend.sql(
                    f"INSERT INTO {_EVENTS} (namespace, workload, submitted_at, kind, at, "
                    "cause, message) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (namespace, workload, submitted_at, kind) DO NOTHING"
                ),
                events,
            )

    # -- reading ----------------------------------------------------------------------------------

    def last_seen(self) -> float | None:
        """When the writer last said what was open (`apply(seen_at=)`); None if never."""
        rows = self._read(f"SELECT value FROM {_META} WHERE key = ?", ("last_seen_at",))
        return float(rows[0][0]) if rows else None

    def open_records(self) -> list[WorkloadRecord]:
        """Every record not ended yet: what the service last saw pending or running.

        Not bounded: it is the live set the writer resumes from (as large as the cluster's
        current workloads), not a user's query.
        """
        rows = self._read(f"SELECT {_COLUMNS} FROM {_RECORDS} WHERE ended_at IS NULL")
        return [_record(row) for row in rows]

    def records(self, namespace: str, workload: str) -> list[WorkloadRecord]:
        """The attempts recorded under this workload name, oldest first.

        At most the latest `MAX_HISTORY_RECORDS`.
        """
        rows = self._read(
            f"SELECT {_COLUMNS} FROM {_RECORDS} WHERE namespace = ? AND workload = ? "
            "ORDER BY submitted_at DESC LIMIT ?",
            (namespace, workload, MAX_HISTORY_RECORDS),
        )
        return [_record(row) for row in reversed(rows)]

    def history(self, namespace: str, workload: str) -> WorkloadHistory:
        """What happened to `workload` in `namespace`, and to the other attempts of its step.

        Its records and events, and those of the other attempts of the same Argo step (an
        evicted attempt and its retry tell one story). Empty when nothing is recorded under that
        name. Bounded by `MAX_HISTORY_RECORDS` and `MAX_HISTORY_EVENTS` (the latest are kept;
        `truncated` says so).
        """
        own = self.records(namespace, workload)
        found = {r.key: r for r in own}
        truncated = len(own) >= MAX_HISTORY_RECORDS
        for workflow, step in sorted({(r.workflow, r.step) for r in own if r.step}):
            rows = self._read(
                f"SELECT {_COLUMNS} FROM {_RECORDS} WHERE namespace = ? AND workflow = ? "
                "AND step = ? ORDER BY submitted_at DESC LIMIT ?",
                (namespace, workflow, step, MAX_HISTORY_RECORDS),
            )
            truncated = truncated or len(rows) >= MAX_HISTORY_RECORDS
            for row in rows:
                record = _record(row)
                found.setdefault(record.key, record)
        records = sorted(found.values(), key=lambda r: (r.submitted_at, r.workload))
        records = records[-MAX_HISTORY_RECORDS:]
        events = self._events(namespace, records)
        truncated = truncated or len(events) > MAX_HISTORY_EVENTS
        return WorkloadHistory(
            namespace=namespace,
            workload=workload,
            records=tuple(records),
            events=tuple(events[-MAX_HISTORY_EVENTS:]),
            truncated=truncated,
        )

    def _events(self, namespace: str, records: Sequence[WorkloadRecord]) -> list[HistoryEvent]:
        attempts = {r.key: r.attempt for r in records}
        names = sorted({r.workload for r in records})
        if not names:
            return []
        marks = ", ".join("?" for _ in names)
        rows = self._read(
            f"SELECT workload, submitted_at, kind, at, cause, message FROM {_EVENTS} "
            f"WHERE namespace = ? AND workload IN ({marks}) ORDER BY at DESC LIMIT ?",
            (namespace, *names, MAX_HISTORY_EVENTS + 1),
        )
        order = {kind: index for index, kind in enumerate(EventKind)}
        events = []
        for name, submitted_at, kind, at, cause, message in rows:
            attempt = attempts.get(RecordKey(namespace, name, float(submitted_at)))
            if attempt is not None:
                events.append(
                    HistoryEvent(
                        at=float(at),
                        kind=EventKind(kind),
                        workload=name,
                        attempt=attempt,
                        message=message,
                        cause=cause,
                    )
                )
        events.sort(key=lambda e: (e.at, order[e.kind]))
        return events

    def namespaces(self, *, since: float, until: float, now: float) -> list[str]:
        """The namespaces whose workloads held GPUs in [since, until), sorted.

        At most `MAX_NAMESPACES`.
        """
        rows = self._read(
            f"SELECT DISTINCT namespace FROM {_RECORDS} WHERE {_OVERLAPS} "
            "ORDER BY namespace LIMIT ?",
            (*_overlap_parameters(since, until, now), MAX_NAMESPACES),
        )
        return [str(row[0]) for row in rows]

    def usage(
        self,
        *,
        since: float,
        until: float,
        by: Grouping | str,
        namespaces: Collection[str] | None = None,
        now: float,
    ) -> UsageReport:
        """GPU-hours held in [since, until) per queue, namespace or user (`by`).

        Each record counts `gpus` times the part of its admitted interval inside the period; a
        record still open counts up to `now` (the caller's clock). Only records in
        `namespaces` count, when given (a viewer's namespaces); None counts all. Rows are the
        largest first, at most `MAX_USAGE_ROWS`; the total counts every matching record.
        """
        grouping = Grouping(by)
        if until <= since:
            raise ValueError(f"the period is empty: until ({until}) is not after since ({since})")
        column = _GROUP_COLUMNS[grouping]
        where = _OVERLAPS
        parameters: list[Any] = list(_overlap_parameters(since, until, now))
        if namespaces is not None:
            if not namespaces:
                empty = UsageRow(TOTAL_KEY, 0.0, None, 0)
                return UsageReport(since, until, grouping, (), empty)
            chosen = sorted(namespaces)
            where += f" AND namespace IN ({', '.join('?' for _ in chosen)})"
            parameters += chosen
        least, greatest = self._backend.least, self._backend.greatest
        # The allocated interval, clipped to the period (an open record runs until `now`).
        start = f"{greatest}(admitted_at, ?)"
        end = f"{least}(COALESCE(ended_at, ?), ?)"
        held = f"{greatest}(0.0, {end} - {start})"
        length = f"{greatest}(COALESCE(ended_at, ?) - admitted_at, 1e-9)"
        sums = f"SUM(gpus * {held}), SUM(used_gpu_seconds * {held} / {length}), COUNT(*)"
        sum_parameters = [now, until, since, now, until, since, now]
        grouped = self._read(
            f"SELECT {column}, {sums} FROM {_RECORDS} WHERE {where} GROUP BY {column} "
            f"ORDER BY 2 DESC, 1 LIMIT ?",
            (*sum_parameters, *parameters, MAX_USAGE_ROWS + 1),
        )
        rows = tuple(_usage_row(row) for row in grouped[:MAX_USAGE_ROWS])
        if len(grouped) > MAX_USAGE_ROWS:
            (total,) = self._read(
                f"SELECT '', {sums} FROM {_RECORDS} WHERE {where}", (*sum_parameters, *parameters)
            )
            total_row = _usage_row(total)
        else:
            total_row = _sum_rows(rows)
        return UsageReport(
            since=since,
            until=until,
            by=grouping,
            rows=rows,
            total=UsageRow(
                TOTAL_KEY,
                total_row.allocated_gpu_hours,
                total_row.used_gpu_hours,
                total_row.workloads,
            ),
            truncated=len(grouped) > MAX_USAGE_ROWS,
        )

    def usage_columns(
        self,
        *,
        edges: Sequence[float],
        by: Grouping | str,
        namespaces: Collection[str] | None = None,
        now: float,
    ) -> list[UsageReport]:
        """`usage` for each period [edges[i], edges[i+1]), from one scan of the records.

        What a chart of the usage over time needs: one query, whatever the number of columns
        (at most `MAX_COLUMNS`), where a report per column would read the records once each.
        Each column lists every key that held GPUs in it, largest first; workloads are not
        counted per column (0), nor measured use.
        """
        grouping = Grouping(by)
        if not 2 <= len(edges) <= MAX_COLUMNS + 1:
            raise ValueError(f"give 2 to {MAX_COLUMNS + 1} edges, not {len(edges)}")
        periods = list(itertools.pairwise(edges))
        if any(until <= since for since, until in periods):
            raise ValueError("the edges must increase")
        if namespaces is not None and not namespaces:
            empty = UsageRow(TOTAL_KEY, 0.0, None, 0)
            return [UsageReport(since, until, grouping, (), empty) for since, until in periods]
        column = _GROUP_COLUMNS[grouping]
        where = _OVERLAPS
        parameters: list[Any] = list(_overlap_parameters(edges[0], edges[-1], now))
        if namespaces is not None:
            chosen = sorted(namespaces)
            where += f" AND namespace IN ({', '.join('?' for _ in chosen)})"
            parameters += chosen
        least, greatest = self._backend.least, self._backend.greatest
        held = (
            f"SUM(gpus * {greatest}(0.0, {least}(COALESCE(ended_at, ?), ?) "
            f"- {greatest}(admitted_at, ?)))"
        )
        sums = ", ".join([held] * len(periods))
        sum_parameters = [value for since, until in periods for value in (now, until, since)]
        grouped = self._read(
            f"SELECT {column}, {sums} FROM {_RECORDS} WHERE {where} GROUP BY {column}",
            (*sum_parameters, *parameters),
        )
        reports = []
        for i, (since, until) in enumerate(periods):
            rows = sorted(
                (
                    UsageRow(str(row[0]), float(row[i + 1]) / 3600, None, 0)
                    for row in grouped
                    if (row[i + 1] or 0.0) > 0
                ),
                key=lambda r: (-r.allocated_gpu_hours, r.key),
            )
            total = UsageRow(TOTAL_KEY, sum(r.allocated_gpu_hours for r in rows), None, 0)
            reports.append(
                UsageReport(
                    since,
                    until,
                    grouping,
                    tuple(rows[:MAX_USAGE_ROWS]),
                    total,
                    truncated=len(rows) > MAX_USAGE_ROWS,
                )
            )
        return reports


MAX_COLUMNS = 64
"""The most periods `usage_columns` sums in one query (a chart's columns)."""

_OVERLAPS = "admitted_at IS NOT NULL AND admitted_at < ? AND (ended_at > ? OR ended_at IS NULL)"
"""A record held GPUs in the period: admitted before its end, not ended before its start. (An
open record admitted after `now` does not count; `_overlap_parameters` clips `until` there.)"""


def _overlap_parameters(since: float, until: float, now: float) -> tuple[float, float]:
    return (min(until, max(now, since)), since)


def _usage_row(row: Sequence[Any]) -> UsageRow:
    key, allocated, used, count = row
    return UsageRow(
        key=str(key),
        allocated_gpu_hours=float(allocated or 0.0) / 3600,
        used_gpu_hours=None if used is None else float(used) / 3600,
        workloads=int(count),
    )


def _sum_rows(rows: Iterable[UsageRow]) -> UsageRow:
    allocated, used, count, measured = 0.0, 0.0, 0, False
    for row in rows:
        allocated += row.allocated_gpu_hours
        count += row.workloads
        if row.used_gpu_hours is not None:
            used += row.used_gpu_hours
            measured = True
    return UsageRow(TOTAL_KEY, allocated, used if measured else None, count)


def _key(key: RecordKey) -> tuple[str, str, float]:
    return (key.namespace, key.workload, key.submitted_at)


def _submitted_row(c: Submitted) -> tuple[Any, ...]:
    return (*_key(c.key), c.queue, c.user, c.workflow, c.step, c.attempt, c.kind, c.pods, c.gpus)


def _record(row: Sequence[Any]) -> WorkloadRecord:
    (
        namespace, workload, submitted_at, queue, user, workflow, step, attempt, kind, pods,
        gpus, pool, gpu_model, admitted_at, ended_at, end_reason, end_cause, end_message, used,
    ) = row  # fmt: skip
    return WorkloadRecord(
        namespace=namespace,
        workload=workload,
        submitted_at=float(submitted_at),
        queue=queue,
        user=user,
        workflow=workflow,
        step=step,
        attempt=int(attempt),
        kind=kind,
        pods=int(pods),
        gpus=float(gpus),
        pool=pool,
        gpu_model=gpu_model,
        admitted_at=None if admitted_at is None else float(admitted_at),
        ended_at=None if ended_at is None else float(ended_at),
        end_reason=None if end_reason is None else EndReason(end_reason),
        end_cause=end_cause,
        end_message=end_message,
        used_gpu_seconds=None if used is None else float(used),
    )


def _gpus(amount: float) -> str:
    return f"{amount:g} GPU{'' if amount == 1 else 's'}"


def _submitted_events(changes: Iterable[Submitted]) -> Iterator[tuple[Any, ...]]:
    for c in changes:
        pods = f"{c.pods} pods, " if c.pods > 1 else ""
        yield (
            *_key(c.key),
            EventKind.SUBMITTED.value,
            c.key.submitted_at,
            "",
            f"submitted to queue {c.queue} ({pods}{_gpus(c.gpus)} asked)",
        )
        if c.attempt > 0:
            yield (
                *_key(c.key),
                EventKind.RETRIED.value,
                c.key.submitted_at,
                "",
                f"attempt {c.attempt + 1} of step {c.step}",
            )


def _admitted_events(changes: Iterable[Admitted]) -> Iterator[tuple[Any, ...]]:
    for c in changes:
        where = f" in pool {c.pool}" if c.pool else ""
        model = f" ({c.gpu_model})" if c.gpu_model else ""
        waited = max(0.0, c.at - c.key.submitted_at)
        yield (
            *_key(c.key),
            EventKind.ADMITTED.value,
            c.at,
            "",
            f"admitted: {_gpus(c.gpus)}{where}{model} after {waited:.0f}s waiting",
        )


_END_EVENTS = {
    EndReason.FINISHED: EventKind.FINISHED,
    EndReason.EVICTED: EventKind.EVICTED,
    EndReason.DELETED: EventKind.DELETED,
}


def _ended_events(changes: Iterable[Ended]) -> Iterator[tuple[Any, ...]]:
    for c in changes:
        message = (
            c.message
            or {
                EndReason.FINISHED: "finished: its pods ended and gave their GPUs back",
                EndReason.EVICTED: f"evicted ({c.cause or 'by the scheduler'})",
                EndReason.DELETED: "gone before it was admitted",
            }[c.reason]
        )
        yield (*_key(c.key), _END_EVENTS[c.reason].value, c.at, c.cause, message)
