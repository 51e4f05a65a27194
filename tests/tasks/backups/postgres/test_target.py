"""Which databases a backup reaches, and how: names on the configured server, secrets kept."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from tasks.backups.files import BackupError
from tasks.backups.postgres.target import PgTarget, child_env, resolve_targets
from tasks.settings import get_settings


def test_the_password_reaches_pg_dump_through_its_environment_only():
    target = PgTarget(SecretStr("postgresql+psycopg://u:p%40ss@db.example:5433/prefect"))
    env = child_env(target)
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGDATABASE"]) == (
        "db.example",
        "5433",
        "u",
        "prefect",
    )
    assert env["PGPASSWORD"] == "p@ss"
    assert target.label == "db.example:5433/prefect"  # what logs and the catalog show


def test_databases_are_names_on_the_configured_server(monkeypatch):
    monkeypatch.setenv("INVESTFLOW_DATABASE_URL", "sqlite:///x.db")
    monkeypatch.setenv(
        "INVESTFLOW_BACKUP_DATABASE_URLS",
        "postgresql://a:pw@10.0.0.5/market, postgresql://a:pw@10.0.0.5/prefect",
    )
    settings = get_settings()
    assert [t.label for t in resolve_targets(None, settings)] == [
        "10.0.0.5:5432/market",
        "10.0.0.5:5432/prefect",
    ]
    named = resolve_targets(["prefect"], settings)
    assert [t.label for t in named] == ["10.0.0.5:5432/prefect"]
    assert named[0].params["password"] == "pw"

    monkeypatch.delenv("INVESTFLOW_BACKUP_DATABASE_URLS")
    with pytest.raises(BackupError, match="INVESTFLOW_BACKUP_DATABASE_URLS"):
        resolve_targets(None, get_settings())


def test_a_malformed_configured_url_is_named_by_position_not_repeated(monkeypatch):
    monkeypatch.setenv("INVESTFLOW_BACKUP_DATABASE_URLS", "postgresql://u:hunter2x@[::1/m")
    with pytest.raises(BackupError, match="entry 1 of INVESTFLOW_BACKUP_DATABASE_URLS") as err:
        resolve_targets(None, get_settings())
    assert "hunter2x" not in str(err.value)
