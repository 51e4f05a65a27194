"""Backups of PostgreSQL and Redis on the data node: dump, checksum, keep, copy offsite, verify."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from tasks import clock
from tasks.backups import catalog
from tasks.backups.files import BackupError, retained_sets, verify_set
from tasks.backups.offsite import load_bucket, prune_remote, upload_backup
from tasks.backups.postgres.dump import backup_database
from tasks.backups.postgres.target import LOCK_TIMEOUT_S, resolve_targets
from tasks.backups.postgres.verify import verify_postgres_restore
from tasks.backups.redis.dump import backup_redis_server
from tasks.backups.redis.target import RedisTarget
from tasks.backups.redis.verify import verify_redis_restore
from tasks.params import AtLeastOne, DatabaseName, NonNegative
from tasks.settings import get_settings
from tasks.store.engine import engine_from_settings

verify_checksums = task(name="verify-checksums", cache_policy=NONE)(verify_set)


# Timeouts: the market store dumps in seconds to minutes on the data node; an hour means
# something is stuck (and the lock timeout has already turned a held lock into a failure).
@flow(name="backup-postgres", log_prints=True, timeout_seconds=3600)
def backup_postgres(
    databases: list[DatabaseName] | None = None,
    keep_daily: NonNegative = 7,
    keep_weekly: NonNegative = 4,
    keep_monthly: NonNegative = 0,
    offsite: bool | None = None,
    max_dump_bytes: AtLeastOne | None = None,
    lock_timeout_s: AtLeastOne = LOCK_TIMEOUT_S,
) -> list[dict]:
    """pg_dump -Fc each database (names on the configured server; default: the configured ones).

    offsite: None copies offsite when the S3Bucket block exists; True requires it; False skips.
    max_dump_bytes: a disk quota for one dump; a dump that grows past it fails cleanly.
    lock_timeout_s: how long a dump waits for a locked table before it fails.
    """
    settings = get_settings()
    targets = resolve_targets(databases, settings)
    jobs = {
        t.label: (
            lambda keep, t=t: backup_database(
                t,
                settings.backup_dir,
                keep,
                max_bytes=max_dump_bytes,
                lock_timeout_s=lock_timeout_s,
            )
        )
        for t in targets
    }
    return _back_up_each(
        "postgres", jobs, settings, _keep(keep_daily, keep_weekly, keep_monthly), offsite
    )


@flow(name="backup-redis", log_prints=True, timeout_seconds=1800)
def backup_redis(
    keep_daily: NonNegative = 7,
    keep_weekly: NonNegative = 4,
    keep_monthly: NonNegative = 0,
    offsite: bool | None = None,
    method: Literal["auto", "rdb-cli"] = "auto",
) -> list[dict]:
    """Snapshot the Redis at INVESTFLOW_REDIS_URL and keep it like the database dumps.

    method: "auto" copies the server's own RDB after BGSAVE when it is on this host, else
    pulls with `redis-cli --rdb`; "rdb-cli" always pulls.
    """
    settings = get_settings()
    target = RedisTarget(settings.redis_url)
    jobs = {
        target.label: (
            lambda keep: backup_redis_server(target, settings.backup_dir, keep, method=method)
        )
    }
    return _back_up_each(
        "redis", jobs, settings, _keep(keep_daily, keep_weekly, keep_monthly), offsite
    )


@flow(name="verify-backups", log_prints=True, timeout_seconds=3600)
def verify_backups(databases: list[DatabaseName] | None = None, redis: bool = True) -> list[dict]:
    """Prove the backups: every retained file against its checksum, newest dumps restored."""
    settings = get_settings()
    root, engine = Path(settings.backup_dir), engine_from_settings(settings)
    rows, problems = check_every_file(root, engine)
    restores = newest_restores(root, databases, redis, settings)
    rows += restore_each(restores, engine, problems)
    catalog.publish("verify-backups", rows, _ages_text(catalog.newest_verified(engine)))
    if problems:
        raise BackupError("backup verification failed:\n" + "\n".join(problems))
    log = "Verified %d files and %d restores"
    get_run_logger().info(log, len(rows) - len(restores), len(restores))
    return rows


def check_every_file(root: Path, engine) -> tuple[list[dict], list[str]]:
    """Each retained file against its checksum; a mismatch is recorded as a failed check."""
    rows, problems = [], []
    for bset in retained_sets(root):
        problem = verify_checksums(bset)
        rows.append(
            {"check": "sha256", "file": str(bset.data.relative_to(root)), "result": problem or "ok"}
        )
        if problem:
            problems.append(problem)
            label = bset.data.parent.parent.name
            error = {"error": problem}
            catalog.record_verification(
                engine, label, str(bset.data), None, False, error, clock.now()
            )
    return rows, problems


def newest_restores(
    root: Path, databases: list[str] | None, redis: bool, settings
) -> list[tuple[str, Callable[[], dict]]]:
    """The restores to prove: each database's newest dump, each Redis target's newest RDB."""
    restores: list[tuple[str, Callable[[], dict]]] = []
    pg_dir = root / "postgres"
    if databases or (pg_dir.is_dir() and any(pg_dir.iterdir())):
        for target in resolve_targets(databases, settings):
            restores.append((target.label, lambda t=target: verify_postgres_restore(t, root)))
    if redis and (root / "redis").is_dir():
        for tdir in sorted(p for p in (root / "redis").iterdir() if p.is_dir()):
            restores.append((tdir.name, lambda d=tdir: verify_redis_restore(d)))
    return restores


def restore_each(restores, engine, problems: list[str]) -> list[dict]:
    """Every restore tried, each recorded in the catalog; failures added to problems."""
    rows = []
    for label, restore in restores:
        started = clock.now()
        try:
            result = restore()
        except Exception as exc:  # noqa: BLE001 - every target is tried; the run fails after
            problems.append(f"{label}: {exc}")
            rows.append({"check": "restore", "file": label, "result": f"FAILED: {exc}"})
            error = {"error": str(exc)}
            catalog.record_verification(engine, label, "", None, False, error, started)
            continue
        rows.append({"check": "restore", "file": result["path"], "result": "ok"})
        details = {k: str(v) for k, v in result.items()}
        catalog.record_verification(
            engine, label, result["path"], result["sha256"], True, details, started
        )
    return rows


# ------------------------------------------------------------------ shared by both backups


def _keep(daily: int, weekly: int, monthly: int) -> dict[str, int]:
    return {"daily": daily, "weekly": weekly, "monthly": monthly}


def _back_up_each(
    kind: str, jobs: dict, settings, keep: dict[str, int], offsite: bool | None
) -> list[dict]:
    """Run each target's backup, copy it offsite, catalog it; one failure doesn't stop the rest."""
    root, engine = Path(settings.backup_dir), engine_from_settings(settings)
    bucket = load_bucket(offsite, settings.s3_endpoint_url)
    rows, failures, notes = [], [], []
    for label, job in jobs.items():
        started = clock.now()
        try:
            stored = job(keep)
        except Exception as exc:  # noqa: BLE001 - recorded, and the run fails below
            failures.append(f"{label}: {exc}")
            try:
                catalog.record_failure(engine, kind, label, str(exc), started)
            except Exception as why:  # noqa: BLE001 - the catalog lives on the same data node
                notes.append(f"the backup catalog could not record this failure ({_first(why)})")
            rows.append(
                {"file": label, "size": "", "sha256": "", "status": f"FAILED: {exc}", "offsite": ""}
            )
            continue
        remote = {}
        if bucket is not None:
            try:
                remote = upload_backup(bucket, root, stored)
                prune_remote(bucket, root, stored.backup.data.parent.parent, keep)
            except Exception as exc:  # noqa: BLE001 - the local backup stands; the run fails
                failures.append(f"{label}: offsite copy failed: {exc}")
        catalog.record_backup(engine, kind, label, stored, remote)
        rows += catalog.file_rows(stored, remote)
    try:
        ages = _ages_text(catalog.newest_verified(engine))
    except Exception as exc:  # noqa: BLE001 - the catalog is on the data node, which may be down
        ages = f"The backup catalog could not be read: {_first(exc)}"
        if failures:
            notes.append(f"the backup catalog could not be read ({_first(exc)})")
    catalog.publish(f"backup-{kind}", rows, ages)
    if failures:
        failed = len({f.split(": ", 1)[0] for f in failures})
        raise BackupError(
            f"{failed} of {len(jobs)} {kind} backup(s) failed (older backups untouched):\n"
            + "\n".join(failures + notes)
        )
    return rows


def _first(exc: BaseException) -> str:
    """An error's first line: SQLAlchemy and libpq add lines of background and hints."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _ages_text(ages: list[dict]) -> str:
    if not ages:
        return "No backup has been verified by a restore yet."
    return "Newest verified backup: " + "; ".join(
        f"{a['target']} {a['age_hours']} h ago" for a in ages
    )
