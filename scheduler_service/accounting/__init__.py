"""GPU accounting: what each workload was given and for how long, kept durably, and reports.

The cluster driver's `Accountant` (scheduler_service.kube) diffs the leader's successive cycles
into `Submitted`, `Admitted` and `Ended` changes and hands them to an `AccountingStore`, which
keeps one `WorkloadRecord` per workload (per attempt) and its `HistoryEvent`s in SQLite (the
default) or PostgreSQL. Applying the same changes twice changes nothing, so a restarted or newly
elected service may replay freely. docs/usage-report.md describes what is recorded and how
GPU-hours are computed.

Interface (what the API and the dashboard use):

    store = open_store("sqlite:///var/lib/aistack/accounting.db")   # or "postgresql://..."
    store.history(namespace, workload) -> WorkloadHistory
        .records: tuple[WorkloadRecord, ...]   every attempt of the workload's step, oldest first
        .events:  tuple[HistoryEvent, ...]     submitted, retried, admitted, evicted (with
                                               cause and message), finished, deleted; by time
    store.usage(since=, until=, by="queue"|"namespace"|"user", namespaces=None|{...}, now=)
        -> UsageReport(since, until, by, rows: tuple[UsageRow, ...], total: UsageRow)
        UsageRow(key, allocated_gpu_hours, used_gpu_hours (None: not measured), workloads)
        UsageReport.to_csv() -> str
    store.namespaces(since=, until=, now=) -> list[str]   namespaces that held GPUs then
    parse_period("30d", None, now) -> (since, until)      "30d", "2026-05-01", RFC 3339, Unix s

In the service, `create_app(..., accounting=store)` keeps the store in
`request.app.state.services.accounting` (None when accounting is off). The store is
thread-safe; every query is bounded (`MAX_HISTORY_EVENTS`, `MAX_USAGE_ROWS`). A call raises
`AccountingUnavailable` when the database cannot be reached (the API answers 503).
"""

from scheduler_service.accounting._backends import AccountingError
from scheduler_service.accounting._period import (
    MAX_PERIOD_DAYS,
    PeriodError,
    parse_instant,
    parse_period,
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
from scheduler_service.accounting._report import (
    TOTAL_KEY,
    Grouping,
    UsageReport,
    UsageRow,
    format_instant,
)
from scheduler_service.accounting._store import (
    MAX_HISTORY_EVENTS,
    MAX_HISTORY_RECORDS,
    MAX_NAMESPACES,
    MAX_USAGE_ROWS,
    MIGRATIONS,
    AccountingStore,
    AccountingUnavailable,
    open_store,
)

__all__ = [
    "MAX_HISTORY_EVENTS",
    "MAX_HISTORY_RECORDS",
    "MAX_NAMESPACES",
    "MAX_PERIOD_DAYS",
    "MAX_USAGE_ROWS",
    "MIGRATIONS",
    "TOTAL_KEY",
    "AccountingError",
    "AccountingStore",
    "AccountingUnavailable",
    "Admitted",
    "Change",
    "EndReason",
    "Ended",
    "EventKind",
    "Grouping",
    "HistoryEvent",
    "PeriodError",
    "RecordKey",
    "Submitted",
    "UsageReport",
    "UsageRow",
    "WorkloadHistory",
    "WorkloadRecord",
    "format_instant",
    "open_store",
    "parse_instant",
    "parse_period",
]
