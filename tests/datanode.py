"""A data node of the tests' own: a PostgreSQL 15 cluster on a free loopback port, restartable.

The shared PostgreSQL at 5432 serves every test at once and is never restarted; the restart
tests start this one (initdb in a temp folder, run as the postgres user as PostgreSQL
requires) and restart it with `pg_ctl restart -m fast|immediate`, as a reboot or an upgrade
of the data node does. It is stopped and removed when the block ends, even on failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tasks.backups.redis.restore import free_port  # imports no Prefect

PG_BIN = Path(os.environ.get("INVESTFLOW_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> str | None:
    """Why this machine cannot run a cluster of its own, or None."""
    if not (PG_BIN / "initdb").exists():
        return f"no initdb under {PG_BIN} (set INVESTFLOW_TEST_PG_BIN)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL refuses to run as root"
    return None


class PgCluster:
    """initdb/pg_ctl of one cluster; `url(db)` for its databases, `restart(mode)` for faults."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="investflow-datanode-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.restarts: list[dict] = []

    def _as_postgres(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        proc = subprocess.run(
            prefix + list(args), capture_output=True, text=True, timeout=timeout, cwd=self.dir
        )
        if proc.returncode:
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
        return proc

    def _pg_ctl(self, *args: str) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.dir} -c fsync=off"
        )
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
            "-o", options, "-w", "-t", "120", *args,
        )  # fmt: skip

    def start(self) -> PgCluster:
        self.dir.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        self._pg_ctl("start")
        return self

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def restart(self, mode: str = "fast") -> float:
        """`pg_ctl restart -m mode` (fast: sessions ended with admin shutdown; immediate: a
        crash, then recovery); the seconds until it accepts connections again."""
        began = time.monotonic()
        self._pg_ctl("restart", "-m", mode)
        took = time.monotonic() - began
        self.restarts.append({"mode": mode, "seconds": took})
        return took

    def down(self) -> None:
        """Stop the server (pg_ctl stop -m fast), keeping its data, until up()."""
        self._pg_ctl("stop", "-m", "fast")

    def up(self) -> None:
        self._pg_ctl("start")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A started cluster, stopped and removed at the end of the block whatever happens."""
    cluster = PgCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()
