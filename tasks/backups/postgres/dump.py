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

from tasks.backups.files import (
    BackupError,
    clear_partials,
    ensure_free_space,
    estimate_size,
    fresh_data_path,
    partial_path,
    target_dir,
    target_lock,
    utcnow,
)
from tasks.backups.postgres.target import (
    LOCK_TIMEOUT_S,
    PgTarget,
    child_env,
    connect,
    count_rows,
    drain_stderr,
    stderr_message,
)
from tasks.backups.retention import StoredBackup, store_backup
from tasks.logs import run_logger


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

    started = utcnow()
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
                raise BackupError(
                    f"pg_dump of {target.label}: a table is locked by another session; gave "
                    f"up after the {int(lock_timeout_s)} s lock timeout"
                ) from None
            finally:
                returncode = proc.wait()
            conn.execute("COMMIT")
            if returncode != 0:
                raise BackupError(
                    f"pg_dump of {target.label} failed (exit {returncode}): "
                    f"{stderr_message(reader, tail, target.secrets) or 'no message'}"
                )
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return DumpResult(
        row_counts=counts,
        server_version=server_version,
        pg_dump_version=tool_version("pg_dump"),
        started_at=started,
        finished_at=utcnow(),
        snapshot=snapshot,
    )


@task(name="backup-database", tags=["backup"], cache_policy=NONE)
def backup_database(
    target: PgTarget,
    root: Path,
    keep: dict[str, int],
    *,
    now: dt.datetime | None = None,
    max_bytes: int | None = None,
    lock_timeout_s: int = LOCK_TIMEOUT_S,
) -> StoredBackup:
    """Dump one database into <root>/postgres/<db>/, then checksum, manifest, tiers, prune."""
    logger = run_logger()
    tdir = target_dir(root, "postgres", target.dbname)
    with target_lock(tdir):
        clear_partials(tdir)
        ensure_free_space(tdir, estimate_size(tdir))
        final = fresh_data_path(tdir, target.dbname, ".dump", now)
        partial = partial_path(final)
        logger.info("Dumping %s to %s", target.label, final)
        try:
            dump = pg_dump(target, partial, max_bytes=max_bytes, lock_timeout_s=lock_timeout_s)
        except OSError as exc:
            raise BackupError(f"pg_dump of {target.label} failed: {exc}") from None
        manifest = {
            "kind": "postgres",
            "database": target.dbname,
            "target": target.label,
            "format": "pg_dump custom (-Fc)",
            "server_version": dump.server_version,
            "pg_dump_version": dump.pg_dump_version,
            "started_at": dump.started_at.isoformat(),
            "finished_at": dump.finished_at.isoformat(),
            "row_counts": dump.row_counts,
        }
        stored = store_backup(partial, final, manifest, tdir, keep)
    logger.info(
        "Backed up %s: %s (%s bytes, sha256 %s); pruned %d",
        target.label,
        final.name,
        stored.size_bytes,
        stored.sha256,
        len(stored.pruned),
    )
    return stored
