"""Rows of the backup_catalog table and the run artifacts: what was backed up, pruned, verified."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from sqlalchemy.engine import Engine

from tasks import clock
from tasks.backups.retention import StoredBackup
from tasks.logs import run_id
from tasks.store.schema import backup_catalog


@task(name="catalog-backup", cache_policy=NONE)
def record_backup(
    engine: Engine,
    kind: str,
    target: str,
    stored: StoredBackup,
    remote_uris: dict[str, str] | None = None,
) -> None:
    """One row per tier the new backup landed in; rows of pruned files marked `pruned`."""
    flow_run_id, remote_uris = run_id(), remote_uris or {}
    m = stored.manifest
    tdir = stored.backup.data.parent.parent
    rows = [
        {
            "kind": kind,
            "target": target,
            "tier": tier,
            "status": "ok",
            "path": str(tdir / tier / stored.backup.data.name),
            "size_bytes": stored.size_bytes,
            "sha256": stored.sha256,
            "started_at": dt.datetime.fromisoformat(m["started_at"]),
            "finished_at": dt.datetime.fromisoformat(m["finished_at"]),
            "remote_uri": remote_uris.get(tier),
            "flow_run_id": flow_run_id,
            "detail": {k: v for k, v in m.items() if k not in ("file", "sha256", "size_bytes")},
        }
        for tier in stored.tiers
    ]
    with engine.begin() as conn:
        conn.execute(backup_catalog.insert(), rows)
        mark_pruned(conn, kind, target, [p.data for p in stored.pruned], flow_run_id)


def mark_pruned(conn, kind: str, target: str, paths: list[Path], flow_run_id: str | None) -> None:
    for path in paths:
        updated = conn.execute(
            backup_catalog.update()
            .where(backup_catalog.c.path == str(path), backup_catalog.c.status == "ok")
            .values(status="pruned")
        ).rowcount
        if not updated:  # made before the catalog knew it (or by hand): still say it went
            conn.execute(
                backup_catalog.insert().values(
                    kind=kind,
                    target=target,
                    path=str(path),
                    tier=path.parent.name,
                    status="pruned",
                    finished_at=clock.now(),
                    flow_run_id=flow_run_id,
                )
            )


@task(name="catalog-failure", cache_policy=NONE)
def record_failure(
    engine: Engine, kind: str, target: str, error: str, started_at: dt.datetime
) -> None:
    """A failed backup or verification is a row too, with the error that stopped it."""
    with engine.begin() as conn:
        conn.execute(
            backup_catalog.insert().values(
                kind=kind,
                target=target,
                status="failed",
                started_at=started_at,
                finished_at=clock.now(),
                detail={"error": error[:4000]},
                flow_run_id=run_id(),
            )
        )


@task(name="catalog-verification", cache_policy=NONE)
def record_verification(
    engine: Engine,
    target: str,
    path: str,
    sha256: str | None,
    ok: bool,
    detail: dict,
    started_at: dt.datetime,
) -> None:
    """A verification row, and verified_at stamped on the backup rows of that file."""
    now = clock.now()
    with engine.begin() as conn:
        conn.execute(
            backup_catalog.insert().values(
                kind="verify",
                target=target,
                path=path,
                sha256=sha256,
                status="verified" if ok else "failed",
                started_at=started_at,
                finished_at=now,
                verified_at=now if ok else None,
                detail=detail,
                flow_run_id=run_id(),
            )
        )
        if ok:
            name = Path(path).name
            conn.execute(
                backup_catalog.update()
                .where(
                    backup_catalog.c.kind != "verify",
                    backup_catalog.c.path.like(f"%/{name}"),
                    backup_catalog.c.sha256 == sha256,
                )
                .values(verified_at=now)
            )


def newest_verified(engine: Engine) -> list[dict]:
    """Per target: the newest verified backup and its age (when did a restore last work)."""
    query = (
        sa.select(
            backup_catalog.c.target, sa.func.max(backup_catalog.c.verified_at).label("verified_at")
        )
        .where(backup_catalog.c.kind == "verify", backup_catalog.c.status == "verified")
        .group_by(backup_catalog.c.target)
    )
    now = clock.now()
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    out = []
    for target, verified_at in rows:
        if verified_at.tzinfo is None:  # SQLite hands back naive UTC
            verified_at = verified_at.replace(tzinfo=dt.UTC)
        age_h = (now - verified_at).total_seconds() / 3600
        out.append(
            {"target": target, "verified_at": verified_at.isoformat(), "age_hours": round(age_h, 1)}
        )
    return out


def file_rows(stored: StoredBackup, remote: dict[str, str] | None = None) -> list[dict]:
    """Artifact rows: the new files (kept) and the files retention removed (pruned)."""
    tdir = stored.backup.data.parent.parent
    rows = [
        {
            "file": f"{tier}/{stored.backup.data.name}",
            "size": stored.size_bytes,
            "sha256": stored.sha256,
            "status": "kept (new)",
            "offsite": (remote or {}).get(tier, ""),
        }
        for tier in stored.tiers
    ]
    rows += [
        {
            "file": str(s.data.relative_to(tdir)),
            "size": "",
            "sha256": "",
            "status": "pruned",
            "offsite": "",
        }
        for s in stored.pruned
    ]
    return rows


def publish(key: str, rows: list[dict], description: str) -> None:
    """A table artifact for the run (the UI's answer to 'what happened')."""
    create_table_artifact(table=rows or [{"file": "(none)"}], key=key, description=description)
