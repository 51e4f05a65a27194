"""pg_restore of a dump into a scratch database on the same server, counting its rows."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from tasks.backups.files import BackupError
from tasks.backups.postgres.target import (
    LOCK_TIMEOUT_S,
    PgTarget,
    child_env,
    connect,
    count_rows,
    drain_stderr,
    stderr_message,
)


def restore_counts(target: PgTarget, dump: Path) -> dict[str, int]:
    """pg_restore a dump into a scratch database on target's server; row counts; drop it."""
    scratch = f"investflow_verify_{uuid.uuid4().hex[:10]}"
    admin = target.with_dbname("postgres")
    with connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{scratch}"')
    try:
        scratch_target = target.with_dbname(scratch)
        env = child_env(scratch_target)
        # A lock held on the scratch database (it is ours alone) would be a bug: fail fast.
        env["PGOPTIONS"] = f"-c lock_timeout={int(LOCK_TIMEOUT_S)}s"
        proc = subprocess.Popen(
            ["pg_restore", "--exit-on-error", "--no-owner", "--no-privileges", "-d", scratch,
             str(dump)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        reader, tail = drain_stderr(proc.stderr)
        rc = proc.wait()
        if rc != 0:
            raise BackupError(
                f"pg_restore of {dump} failed (exit {rc}): "
                f"{stderr_message(reader, tail, target.secrets) or 'no message'}"
            )
        with connect(scratch_target) as conn:
            return count_rows(conn)
    finally:
        with connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
