"""The backup flows end to end: real PostgreSQL, Redis, Prefect server and a local S3."""

from __future__ import annotations

import base64
import json
import time

import psycopg
import pytest
import sqlalchemy as sa

from flows.backups import backup_postgres, backup_redis, verify_backups
from tasks.backups.files import MANIFEST_SUFFIX, TIERS, BackupError, manifest_path
from tasks.store.schema import backup_catalog
from tests.conftest import create_database, drop_database
from tests.fakes.s3 import FakeS3

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def source_db(pg_admin_url):
    url = create_database(pg_admin_url, prefix="investflow_bkflow")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE prices (symbol text, d date, close float8)")
        conn.execute(
            "INSERT INTO prices SELECT 'S' || (g % 20), date '2021-01-01' + g, g "
            "FROM generate_series(1, 5000) g"
        )
    yield url
    drop_database(url)


@pytest.fixture
def env(pg_engine, source_db, redis_url, tmp_path, monkeypatch):
    """Backups under tmp_path, the catalog in the test store, the source db by URL."""
    monkeypatch.setenv("INVESTFLOW_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("INVESTFLOW_BACKUP_DATABASE_URLS", source_db)
    monkeypatch.setenv("INVESTFLOW_REDIS_URL", redis_url.rsplit("/", 1)[0] + "/9")
    return tmp_path / "backups"


@pytest.fixture
def s3(monkeypatch):
    with FakeS3() as fake:
        fake.save_blocks(folder="investflow")
        monkeypatch.setenv("INVESTFLOW_S3_ENDPOINT_URL", fake.url)
        yield fake
        fake.delete_blocks()


def local_files(root):
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.parent.name in TIERS
    }


def latest_artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return found[0]


def catalog_rows(engine, **where):
    query = sa.select(backup_catalog).order_by(backup_catalog.c.id)
    for column, value in where.items():
        query = query.where(backup_catalog.c[column] == value)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def test_backups_land_offsite_with_matching_checksums_and_remote_retention_follows(
    env, s3, pg_engine
):
    for _ in range(3):
        backup_postgres(keep_daily=2, keep_weekly=1)
    redis_run = backup_redis(keep_daily=2, keep_weekly=1, return_state=True)

    files = local_files(env)
    pg_daily = [f for f in files if f.startswith("postgres/") and "/daily/" in f]
    assert len(pg_daily) == 4  # 2 kept dumps + their manifests
    # The bucket holds exactly the kept files: the pruned ones went there too.
    assert s3.keys("investflow/") == {f"investflow/{f}" for f in files}
    for f in files:
        if not f.endswith(MANIFEST_SUFFIX):
            sha = json.loads((env / manifest_path(env / f).relative_to(env)).read_text())
            b64 = base64.b64encode(bytes.fromhex(sha["sha256"])).decode()
            assert s3.checksum_sha256(f"investflow/{f}") == b64

    ok = catalog_rows(pg_engine, kind="postgres", status="ok")
    pruned = catalog_rows(pg_engine, kind="postgres", status="pruned")
    assert len(ok) == 2 + 1 and len(pruned) == 1  # daily x2 + weekly; the oldest daily pruned
    assert all(r["remote_uri"].startswith("s3://investflow-backups-test/investflow/") for r in ok)
    assert ok[0]["detail"]["row_counts"] == {"public.prices": 5000}
    redis_rows = catalog_rows(pg_engine, kind="redis", status="ok")
    # Each row names the run that wrote it, so the UI's run page and the catalog meet.
    assert redis_rows and {r["flow_run_id"] for r in redis_rows} == {
        str(redis_run.state_details.flow_run_id)
    }

    rows = verify_backups()
    assert {r["result"] for r in rows} == {"ok"}
    verified = catalog_rows(pg_engine, kind="verify", status="verified")
    assert len(verified) == 2 and all(r["verified_at"] for r in verified)
    newest = catalog_rows(pg_engine, kind="postgres", status="ok")[-1]
    assert newest["verified_at"] is not None

    # Each run left a table artifact: files kept and pruned, and the verified backup's age.
    table = json.loads(latest_artifact("backup-postgres").data)
    assert {r["status"] for r in table} == {"kept (new)", "pruned"}
    assert "h ago" in latest_artifact("verify-backups").description


def test_a_flipped_byte_in_a_retained_dump_fails_verification_naming_the_file(env, pg_engine):
    backup_postgres()
    dump = next((env / "postgres").rglob("daily/*.dump"))
    with open(dump, "r+b") as fh:
        fh.seek(dump.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))

    with pytest.raises(BackupError, match=dump.name):
        verify_backups(redis=False)
    failed = catalog_rows(pg_engine, kind="verify", status="failed")
    assert any(dump.name in r["detail"]["error"] for r in failed)


def test_a_failed_dump_fails_the_run_and_keeps_the_good_backups(env, pg_engine, source_db):
    backup_postgres()
    before = {p: p.stat().st_ino for p in (env / "postgres").rglob("*") if p.is_file()}

    with pytest.raises(BackupError, match=r"(?s)1 of 1 postgres backup.*pg_dump of .* failed"):
        backup_postgres(max_dump_bytes=4096)

    after = {p: p.stat().st_ino for p in (env / "postgres").rglob("*") if p.is_file()}
    assert after == before  # nothing deleted, nothing half-written left behind
    failed = catalog_rows(pg_engine, kind="postgres", status="failed")
    assert len(failed) == 1 and "File too large" in failed[0]["detail"]["error"]


def test_a_database_by_name_on_the_configured_server(env, pg_engine, source_db, monkeypatch):
    # The Prefect server's own `prefect` database (README.md, Production) is backed up the same
    # way: any name on the configured server.
    monkeypatch.delenv("INVESTFLOW_BACKUP_DATABASE_URLS")
    name = source_db.rsplit("/", 1)[1]
    rows = backup_postgres(databases=[name], offsite=False)
    assert rows[0]["file"].startswith(f"daily/{name}-") and rows[0]["status"] == "kept (new)"


def test_a_url_as_a_database_parameter_is_refused_before_any_work():
    # A URL would be stored with the run's parameters, password and all.
    state = backup_postgres(databases=["postgresql://u:hunter2x@db/market"], return_state=True)
    assert state.is_failed() and "databases" in state.message
    assert "hunter2x" not in state.message


def test_offsite_required_without_the_block_fails_before_dumping(env):
    with pytest.raises(BackupError, match="investflow-backups"):
        backup_postgres(offsite=True)
    assert not (env / "postgres").exists()


def test_a_locked_table_fails_within_the_lock_timeout_and_keeps_the_backups(
    env, pg_engine, source_db
):
    backup_postgres(offsite=False)
    before = local_files(env)
    with psycopg.connect(source_db, application_name="nightly-migration") as holder:
        # Someone else holds the table (a migration, a VACUUM FULL) for longer than we wait.
        holder.execute("LOCK TABLE prices IN ACCESS EXCLUSIVE MODE")
        began = time.monotonic()
        state = backup_postgres(offsite=False, lock_timeout_s=2, return_state=True)
        waited = time.monotonic() - began
        pid = holder.info.backend_pid
        holder.rollback()
    assert state.is_failed() and "2 s lock timeout" in state.message
    # The operator learns which table, which session, and what to do.
    assert "table public.prices" in state.message
    assert f"pid {pid} (application 'nightly-migration'" in state.message
    assert "transaction started 20" in state.message
    assert "older backups are untouched" in state.message and "rerun is safe" in state.message
    assert f"pg_terminate_backend({pid})" in state.message
    assert waited < 30  # the lock timeout, not the lock's holder, decided
    assert local_files(env) == before  # the earlier backup is still there, nothing half-written
    assert catalog_rows(pg_engine, kind="postgres", status="ok")
