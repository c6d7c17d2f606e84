"""The local runner's state: one SQLite database per state directory, written at every step.

What is kept: each run (its managed manifest, fixed at submission, and its phase), each run's
nodes (as `Run` works them out), each pod's side of the runner (its workload, GPUs, the process
that runs it, a stop in progress) and a history of events. Every change of one runner pass is
one transaction, so a runner killed at any point (even `kill -9`) leaves a state that the next
runner continues from: finished steps stay finished, running processes are found again.

One runner schedules a state directory at a time: it holds an exclusive lock on `runner.lock`
(released by the kernel when the process dies, however it dies). Other `aistack run` commands
add their run to the database and follow it; when the lock is free, one of them takes over.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aistack_flows.local._workflow import Node

__all__ = ["Event", "PodRow", "RunRow", "RunnerLock", "Store", "StoreError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    phase TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    run TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (run, id)
);
CREATE TABLE IF NOT EXISTS pods (
    name TEXT PRIMARY KEY,
    run TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    run TEXT NOT NULL,
    subject TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run, seq);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_VERSION = "1"


class StoreError(RuntimeError):
    """The state directory cannot be used; the message says why and what to do."""


@dataclass(slots=True)
class RunRow:
    """A run as submitted, and how it stands."""

    name: str
    uid: str
    source: str
    """The file the pipeline came from."""
    manifest: dict[str, Any]
    parameters: dict[str, str]
    phase: str
    created_at: float
    finished_at: float | None = None
    message: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.phase in {"Pending", "Running"}


@dataclass(slots=True)
class PodRow:
    """The runner's side of one pod: admission, GPUs, its process, a stop in progress."""

    name: str
    run: str
    node: str
    workload: str | None
    """The core workload it belongs to (None: the step asks for no GPU and is not scheduled)."""
    state: str = "waiting"
    """waiting, running, stopping or done."""
    queue: str = ""
    gpus: list[str] = field(default_factory=list)
    slice: list[int] | None = None
    """[memory MiB, compute percent] of a GPU slice."""
    process: dict[str, int] | None = None
    admitted_at: float | None = None
    kill_at: float | None = None
    stop_message: str = ""
    waiting: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a run, a step or a workload, in the order it happened."""

    at: float
    run: str
    subject: str
    kind: str
    message: str


class RunnerLock:
    """The exclusive right to schedule a state directory, held while the file stays open."""

    def __init__(self, handle: int, path: Path) -> None:
        self._handle = handle
        self.path = path

    def release(self) -> None:
        os.close(self._handle)


class Store:
    """The state of a directory's runs (see the module docstring). Not shared across threads."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(directory / "state.db", timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed pass survives the runner's crash (the OS has it);
            # only a power cut may lose the last passes, which the runner then repeats.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            found = self._db.execute("SELECT value FROM settings WHERE key='version'").fetchone()
            if found is None:
                self._db.execute("INSERT INTO settings VALUES ('version', ?)", (_VERSION,))
            elif found[0] != _VERSION:
                raise StoreError(
                    f"{directory}: state version {found[0]}, this aistack reads {_VERSION}; "
                    "use another --state directory"
                )
        except (OSError, sqlite3.Error) as error:
            raise StoreError(
                f"{directory}: cannot use it as a state directory ({error})"
            ) from error

    def close(self) -> None:
        self._db.close()

    def run_directory(self, run: str) -> Path:
        return self.directory / "runs" / run

    # -- the lock -----------------------------------------------------------------------------

    def try_lock(self) -> RunnerLock | None:
        """The runner lock, or None while another process holds it."""
        path = self.directory / "runner.lock"
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            return None
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
        return RunnerLock(handle, path)

    def lock_holder(self) -> int | None:
        """The pid written by the runner that holds (or last held) the lock."""
        try:
            return int((self.directory / "runner.lock").read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    # -- writing ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add_run(self, run: RunRow) -> None:
        try:
            self._db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?)",
                (run.name, _dump(asdict(run)), run.phase, run.created_at),
            )
        except sqlite3.IntegrityError:
            raise StoreError(
                f"a run named {run.name} exists; give the workflow another name"
            ) from None

    def put_run(self, run: RunRow) -> None:
        self._db.execute(
            "UPDATE runs SET data = ?, phase = ? WHERE name = ?",
            (_dump(asdict(run)), run.phase, run.name),
        )

    def put_nodes(self, run: str, nodes: Iterable[Node]) -> None:
        self._db.executemany(
            "INSERT INTO nodes VALUES (?, ?, ?, (SELECT COUNT(*) FROM nodes WHERE run = ?)) "
            "ON CONFLICT (run, id) DO UPDATE SET data = excluded.data",
            [(run, node.id, _dump(node.to_json()), run) for node in nodes],
        )

    def put_pod(self, pod: PodRow) -> None:
        self._db.execute(
            "INSERT INTO pods VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET data = excluded.data",
            (pod.name, pod.run, _dump(asdict(pod))),
        )

    def add_events(self, events: Iterable[Event]) -> None:
        self._db.executemany(
            "INSERT INTO events (at, run, subject, kind, message) VALUES (?, ?, ?, ?, ?)",
            [(e.at, e.run, e.subject, e.kind, e.message) for e in events],
        )

    # -- reading ------------------------------------------------------------------------------

    def runs(self, *, active: bool = False) -> list[RunRow]:
        query = "SELECT data FROM runs"
        if active:
            query += " WHERE phase IN ('Pending', 'Running')"
        rows = self._db.execute(query + " ORDER BY created_at, name").fetchall()
        return [RunRow(**json.loads(row[0])) for row in rows]

    def run(self, name: str) -> RunRow | None:
        row = self._db.execute("SELECT data FROM runs WHERE name = ?", (name,)).fetchone()
        return None if row is None else RunRow(**json.loads(row[0]))

    def nodes(self, run: str) -> dict[str, Node]:
        rows = self._db.execute(
            "SELECT data FROM nodes WHERE run = ? ORDER BY seq", (run,)
        ).fetchall()
        nodes = (Node.from_json(json.loads(row[0])) for row in rows)
        return {node.id: node for node in nodes}

    def pods(self, run: str | None = None) -> list[PodRow]:
        if run is None:
            rows = self._db.execute("SELECT data FROM pods ORDER BY rowid").fetchall()
        else:
            rows = self._db.execute(
                "SELECT data FROM pods WHERE run = ? ORDER BY rowid", (run,)
            ).fetchall()
        return [PodRow(**json.loads(row[0])) for row in rows]

    def events(self, run: str, *, after: int = 0) -> list[tuple[int, Event]]:
        rows = self._db.execute(
            "SELECT seq, at, run, subject, kind, message FROM events "
            "WHERE run = ? AND seq > ? ORDER BY seq",
            (run, after),
        ).fetchall()
        return [(row[0], Event(*row[1:])) for row in rows]

    def setting(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put_setting(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO settings VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
