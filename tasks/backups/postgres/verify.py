"""Prove a PostgreSQL backup: restore the newest dump and compare row counts with its manifest."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from tasks.backups.files import BackupError, newest_complete, read_manifest, target_dir
from tasks.backups.postgres.restore import restore_counts
from tasks.backups.postgres.target import PgTarget
from tasks.logs import run_logger


def compare_counts(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    """What differs between the manifest's row counts and a restore's, one line per table."""
    diffs = []
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table), actual.get(table)
        if want != got:
            diffs.append(f"{table}: manifest {want}, restored {got}")
    return diffs


@task(name="verify-postgres-restore", tags=["backup"], cache_policy=NONE)
def verify_postgres_restore(target: PgTarget, root: Path) -> dict:
    """Restore the newest dump of target into scratch and compare row counts with its manifest."""
    tdir = target_dir(root, "postgres", target.dbname)
    newest = newest_complete(tdir)
    if newest is None:
        raise BackupError(f"no complete PostgreSQL backup of {target.label} under {tdir}")
    manifest = read_manifest(newest.data)
    restored = restore_counts(target, newest.data)
    diffs = compare_counts(manifest["row_counts"], restored)
    if diffs:
        raise BackupError(
            f"restore of {newest.data} does not match its manifest: " + "; ".join(diffs)
        )
    run_logger().info(
        "Restored %s: %d tables, %d rows, all match",
        newest.data.name,
        len(restored),
        sum(restored.values()),
    )
    return {
        "path": str(newest.data),
        "sha256": manifest["sha256"],
        "tables": len(restored),
        "rows": sum(restored.values()),
        "taken_at": newest.taken_at,
    }
