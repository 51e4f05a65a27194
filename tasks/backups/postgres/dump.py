"""pg_dump -Fc in an exported snapshot, with row counts read in that same snapshot."""

from __future__ import annotations

import datetime as dt
import resource
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from tasks import clock
from tasks.backups.files import BackupConnectionLost, BackupError
from tasks.backups.postgres.target import (
    LOCK_TIMEOUT_S,
    PgTarget,
    child_env,
    connect,
    count_rows,
    drain_stderr,
    stderr_message,
)
from tasks.backups.retention import StoredBackup
from tasks.backups.take import take_backup
from tasks.logs import run_logger
from tasks.retries import connection_lost, retry_when


@dataclass
class DumpResult:
    """What a dump knew about itself, for the manifest."""

    row_counts: dict[str, int]
    server_version: str
    pg_dump_version: str
    started_at: dt.datetime
    finished_at: dt.datetime
    snapshot: str = ""


def tool_version(tool: str) -> str:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def _limit_file_size(max_bytes: int | None):
    """preexec_fn: cap the dump's size (a disk quota); a write past it fails like a full disk."""
    if max_bytes is None:
        return None

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write (EFBIG), don't kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


# What libpq (pg_dump's own connection) says when the server goes away under it.
LOST_CONNECTION = (
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "terminating connection because of crash of another server process",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "no connection to the server",
    "could not receive data from server",
    "Connection refused",
)


def lost_mid_dump(target: PgTarget, words: str) -> BackupConnectionLost:
    """The operator's message for a dump whose database went away (restart, crash)."""
    first = words.strip().splitlines()[0] if words.strip() else "no message"
    return BackupConnectionLost(
        f"pg_dump of {target.label}: the connection to the database was lost mid-dump "
        f"({first}), as when the data node restarts. The partial dump was deleted and no "
        "backup file was kept from this try; older backups are untouched. A rerun is safe."
    )


# Who holds a lock that pg_dump's ACCESS SHARE waits behind: only ACCESS EXCLUSIVE conflicts
# with it (ALTER TABLE, VACUUM FULL, LOCK TABLE, a migration). No query text: it may hold data.
_LOCK_HOLDERS = """
SELECT n.nspname || '.' || c.relname, a.pid, coalesce(nullif(a.application_name, ''), '?'),
       a.usename, a.client_addr::text, a.xact_start, a.query_start, a.state
FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.mode = 'AccessExclusiveLock' AND a.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND c.relkind IN ('r', 'p', 'm', 'S')
ORDER BY a.xact_start NULLS LAST, 1
"""


def lock_holders(target: PgTarget) -> list[str]:
    """Each table an other session holds exclusively, and that session, in words."""
    try:
        with connect(target, autocommit=True) as conn:
            rows = conn.execute(_LOCK_HOLDERS).fetchall()
    except Exception:  # noqa: BLE001 - the message falls back to not naming them
        return []
    return [
        f"table {table} by pid {pid} (application {app!r}, user {user}"
        + (f", from {addr}" if addr else "")
        + f", transaction started {_utc(xact)}, last query started {_utc(query)}, {state})"
        for table, pid, app, user, addr, xact, query, state in rows
    ]


def _utc(moment) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "?"


def locked_out(target: PgTarget, lock_timeout_s: int) -> BackupError:
    """A dump that gave up behind a lock: which table, which session, what to do."""
    holders = lock_holders(target)
    held = "; ".join(holders) if holders else "a table is locked by another session"
    pids = sorted({h.split("pid ", 1)[1].split(" ", 1)[0] for h in holders})
    end_it = f" (or end it: SELECT pg_terminate_backend({pids[0]}))" if len(pids) == 1 else ""
    return BackupError(
        f"pg_dump of {target.label} gave up after the {int(lock_timeout_s)} s lock timeout: "
        f"locked exclusively: {held}. No backup file was kept from this run; older backups "
        f"are untouched. A rerun is safe once that session has finished{end_it}."
    )


def pg_dump(
    target: PgTarget,
    partial: Path,
    *,
    max_bytes: int | None = None,
    lock_timeout_s: int = LOCK_TIMEOUT_S,
) -> DumpResult:
    """pg_dump -Fc into partial, counting rows in the very snapshot the dump reads.

    A table locked by someone else fails the dump after lock_timeout_s instead of waiting for
    as long as the lock is held.
    """
    import psycopg

    started = clock.now()
    with connect(target, autocommit=True) as conn:
        server_version = conn.execute("SHOW server_version").fetchone()[0]
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_s)}s'")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        argv = [
            "pg_dump",
            "-Fc",
            "--snapshot",
            snapshot,
            f"--lock-wait-timeout={int(lock_timeout_s)}s",
            "-f",
            str(partial),
        ]
        try:
            proc = subprocess.Popen(
                argv,
                env=child_env(target),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=_limit_file_size(max_bytes),
            )
            reader, tail = drain_stderr(proc.stderr)
            try:
                # Counted while pg_dump runs: same snapshot, and the two overlap in time.
                counts = count_rows(conn)
            except psycopg.errors.LockNotAvailable:
                proc.wait()
                raise locked_out(target, lock_timeout_s) from None
            except psycopg.OperationalError as exc:
                if not connection_lost(exc):
                    raise
                proc.wait()
                raise lost_mid_dump(target, str(exc)) from None
            finally:
                returncode = proc.wait()
            conn.execute("COMMIT")
            if returncode != 0:
                stderr = stderr_message(reader, tail, target.secrets) or "no message"
                if any(words in stderr for words in LOST_CONNECTION):
                    raise lost_mid_dump(target, stderr)
                if "lock timeout" in stderr or "could not obtain lock" in stderr:
                    raise locked_out(target, lock_timeout_s)
                raise BackupError(f"pg_dump of {target.label} failed (exit {returncode}): {stderr}")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return DumpResult(
        row_counts=counts,
        server_version=server_version,
        pg_dump_version=tool_version("pg_dump"),
        started_at=started,
        finished_at=clock.now(),
        snapshot=snapshot,
    )


# A data-node restart under the dump is retried once the server is back; anything else (a
# locked table, a full disk, a refused login) fails at once.
@task(
    name="backup-database",
    tags=["backup"],
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=[5, 15],
    retry_condition_fn=retry_when(connection_lost),
)
def backup_database(
    target: PgTarget,
    root: Path,
    keep: dict[str, int],
    *,
    max_bytes: int | None = None,
    lock_timeout_s: int = LOCK_TIMEOUT_S,
) -> StoredBackup:
    """Dump one database into <root>/postgres/<db>/, then checksum, manifest, tiers, prune."""
    logger = run_logger()

    def dump(partial: Path, final: Path) -> dict:
        logger.info("Dumping %s to %s", target.label, final)
        try:
            dumped = pg_dump(target, partial, max_bytes=max_bytes, lock_timeout_s=lock_timeout_s)
        except OSError as exc:
            raise BackupError(f"pg_dump of {target.label} failed: {exc}") from None
        except Exception as exc:
            if isinstance(exc, BackupError) or not connection_lost(exc):
                raise
            raise lost_mid_dump(target, str(exc)) from None
        return {
            "kind": "postgres",
            "database": target.dbname,
            "target": target.label,
            "format": "pg_dump custom (-Fc)",
            "server_version": dumped.server_version,
            "pg_dump_version": dumped.pg_dump_version,
            "started_at": dumped.started_at.isoformat(),
            "finished_at": dumped.finished_at.isoformat(),
            "row_counts": dumped.row_counts,
        }

    stored = take_backup(root, "postgres", target.dbname, ".dump", keep, dump)
    logger.info(
        "Backed up %s: %s (%s bytes, sha256 %s); pruned %d",
        target.label,
        stored.backup.data.name,
        stored.size_bytes,
        stored.sha256,
        len(stored.pruned),
    )
    return stored
