"""A throwaway PostgreSQL server for tests: Debian's binaries, a temporary cluster, a free port.

`PostgresServer` runs `initdb` and `pg_ctl` from /usr/lib/postgresql/<version>/bin (installed
by scripts/system-packages) in a temporary directory, listening on 127.0.0.1 only, with trust
authentication for the one user it creates. As root it runs the server as the `postgres`
account (PostgreSQL refuses to run as root). A server that cannot start is an error that says
what to install or where its log is: these tests never skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresError", "PostgresServer", "free_port"]

_BINARIES = Path("/usr/lib/postgresql")


class PostgresError(RuntimeError):
    """The test server could not be started; the message says why and what to do."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _bin_dir() -> Path:
    versions = sorted(
        (p for p in _BINARIES.glob("*/bin") if (p / "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise PostgresError(
            f"no PostgreSQL server binaries under {_BINARIES}/<version>/bin: run "
            "scripts/system-packages (it installs Debian's postgresql package)"
        )
    return versions[-1]


class PostgresServer:
    """One PostgreSQL server; a context manager that starts it and removes it at the end."""

    def __init__(
        self, *, database: str = "aistack", user: str = "aistack", durable: bool = False
    ) -> None:
        """Prepare (nothing runs until `start`).

        Unless `durable`, the server does not wait for the disk (fsync off): faster, and a test
        server never outlives a crash of its machine. Benchmarks run durable, as in production.
        """
        self.bin_dir = _bin_dir()
        self.database = database
        self.user = user
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="aistack-pg-"))
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "server.log"
        self._options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.workdir}"
        if not durable:
            self._options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run_as: str | None = None
        if os.geteuid() == 0:
            self._run_as = "postgres"
            try:
                account = pwd.getpwnam(self._run_as)
            except KeyError:
                raise PostgresError(
                    "running as root, and there is no `postgres` account to run the server "
                    "as: install Debian's postgresql package (scripts/system-packages)"
                ) from None
            os.chown(self.workdir, account.pw_uid, account.pw_gid)

    @property
    def url(self) -> str:
        """The server's URL for the test database."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _run(self, *argv: str, timeout: float = 60) -> None:
        try:
            subprocess.run(
                argv,
                check=True,
                capture_output=True,
                text=True,
                timeout=timeout,
                user=self._run_as,
                cwd=self.workdir,
            )
        except subprocess.CalledProcessError as error:
            raise PostgresError(
                f"{Path(argv[0]).name} failed ({error.returncode}): {error.stderr.strip()} "
                f"(server log, if any: {self.log_path})"
            ) from error

    def start(self) -> None:
        """initdb, start the server, create the database; fail saying why."""
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )
        self._start()
        self._run(
            str(self.bin_dir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            self.user,
            self.database,
        )

    def _start(self) -> None:
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-o",
            self._options,
            "-w",
            "-t",
            "60",
            "start",
            timeout=90,
        )

    def stop(self) -> None:
        """Stop the server (fast: sessions cut, data checkpointed, as in a planned outage)."""
        with contextlib.suppress(PostgresError, subprocess.TimeoutExpired):
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "stop")

    def restart(self) -> None:
        """Stop and start the same cluster (a database outage, then its end)."""
        self.stop()
        time.sleep(0.2)
        self._start()
