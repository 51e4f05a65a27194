"""pg_dump backups on the real PostgreSQL: restores match, failures leave good backups alone."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from pydantic import SecretStr

from tasks import postgres
from tasks.backups.files import PARTIAL_PREFIX, BackupError, verify_set
from tests.conftest import create_database, drop_database

pytestmark = pytest.mark.integration

KEEP = {"daily": 7, "weekly": 4, "monthly": 0}


@pytest.fixture(scope="module")
def source_db(pg_admin_url):
    """A database with a few thousand rows in two schemas, awkward names included."""
    url = create_database(pg_admin_url, prefix="investflow_bk")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE prices (symbol text, d date, close float8)")
        conn.execute(
            "INSERT INTO prices SELECT 'S' || (g % 50), date '2020-01-01' + (g / 50), g * 0.5 "
            "FROM generate_series(1, 20000) g"
        )
        conn.execute('CREATE SCHEMA "Odd Schema"')
        conn.execute('CREATE TABLE "Odd Schema"."Mixed Case" (id int)')
        conn.execute('INSERT INTO "Odd Schema"."Mixed Case" SELECT generate_series(1, 7)')
        conn.execute("CREATE TABLE empty_one (id int)")
    yield url
    drop_database(url)


def test_a_backup_restores_to_the_same_row_counts(source_db, tmp_path):
    target = postgres.PgTarget(SecretStr(source_db))
    stored = postgres.backup_database(target, tmp_path, KEEP)

    manifest = stored.manifest
    assert manifest["row_counts"] == {
        "public.prices": 20000,
        "Odd Schema.Mixed Case": 7,
        "public.empty_one": 0,
    }
    assert manifest["server_version"].startswith("15")
    assert "pg_dump (PostgreSQL)" in manifest["pg_dump_version"]
    assert manifest["database"] == target.dbname and manifest["sha256"] == stored.sha256
    assert stored.backup.data.read_bytes()[:5] == b"PGDMP"  # custom format
    assert postgres.restore_counts(target, stored.backup.data) == manifest["row_counts"]
    # The scratch database is gone again.
    with psycopg.connect(source_db) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'investflow_verify_%'"
        ).fetchone()[0]
    assert left == 0


def test_a_dump_that_fails_midway_leaves_the_previous_backups_and_no_partial_file(
    source_db, tmp_path
):
    target = postgres.PgTarget(SecretStr(source_db))
    day = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    good = [
        postgres.backup_database(target, tmp_path, KEEP, now=day + dt.timedelta(days=i))
        for i in range(2)
    ]
    tdir = good[0].backup.data.parent.parent
    before = {p: p.read_bytes() for p in tdir.rglob("*") if p.is_file()}

    # An 8 KiB quota makes pg_dump's writes fail partway through, as a full disk would.
    with pytest.raises(BackupError, match=r"pg_dump of .* failed .*File too large"):
        postgres.backup_database(
            target, tmp_path, KEEP, now=day + dt.timedelta(days=9), max_bytes=8 * 1024
        )

    after = {p: p.read_bytes() for p in tdir.rglob("*") if p.is_file()}
    assert after == before
    assert not list(tdir.rglob(PARTIAL_PREFIX + "*"))
    assert all(verify_set(s.backup) is None for s in good)


def test_an_unreachable_database_fails_clearly_without_showing_the_password(tmp_path):
    target = postgres.PgTarget(SecretStr("postgresql://backup:s3cret-pw@127.0.0.1:1/market"))
    with pytest.raises(BackupError) as err:
        postgres.backup_database(target, tmp_path, KEEP)
    message = str(err.value)
    assert "cannot reach PostgreSQL 127.0.0.1:1/market" in message
    assert "s3cret-pw" not in message
    assert not list((tmp_path / "postgres").rglob("*.dump"))


def test_the_password_reaches_pg_dump_through_its_environment_only():
    target = postgres.PgTarget(SecretStr("postgresql+psycopg://u:p%40ss@db.example:5433/prefect"))
    env = postgres.child_env(target)
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGDATABASE"]) == (
        "db.example",
        "5433",
        "u",
        "prefect",
    )
    assert env["PGPASSWORD"] == "p@ss"
    assert target.label == "db.example:5433/prefect"  # what logs and the catalog show


def test_databases_are_names_on_the_configured_server(monkeypatch):
    from tasks.settings import get_settings

    monkeypatch.setenv("INVESTFLOW_DATABASE_URL", "sqlite:///x.db")
    monkeypatch.setenv(
        "INVESTFLOW_BACKUP_DATABASE_URLS",
        "postgresql://a:pw@10.0.0.5/market, postgresql://a:pw@10.0.0.5/prefect",
    )
    settings = get_settings()
    assert [t.label for t in postgres.resolve_targets(None, settings)] == [
        "10.0.0.5:5432/market",
        "10.0.0.5:5432/prefect",
    ]
    named = postgres.resolve_targets(["prefect"], settings)
    assert [t.label for t in named] == ["10.0.0.5:5432/prefect"]
    assert named[0].params["password"] == "pw"

    monkeypatch.delenv("INVESTFLOW_BACKUP_DATABASE_URLS")
    with pytest.raises(BackupError, match="INVESTFLOW_BACKUP_DATABASE_URLS"):
        postgres.resolve_targets(None, get_settings())


def test_a_url_as_a_database_parameter_is_refused_before_any_work():
    from flows.backups import backup_postgres

    # A URL would be stored with the run's parameters, password and all.
    state = backup_postgres(databases=["postgresql://u:hunter2x@db/market"], return_state=True)
    assert state.is_failed() and "databases" in state.message
    assert "hunter2x" not in state.message


def test_a_malformed_configured_url_is_named_by_position_not_repeated(monkeypatch):
    from tasks.settings import get_settings

    monkeypatch.setenv("INVESTFLOW_BACKUP_DATABASE_URLS", "postgresql://u:hunter2x@[::1/m")
    with pytest.raises(BackupError, match="entry 1 of INVESTFLOW_BACKUP_DATABASE_URLS") as err:
        postgres.resolve_targets(None, get_settings())
    assert "hunter2x" not in str(err.value)
