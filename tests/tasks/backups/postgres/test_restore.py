"""pg_restore into scratch on the real PostgreSQL: a dump comes back with its row counts."""

from __future__ import annotations

import psycopg
import pytest
from pydantic import SecretStr

from tasks.backups.postgres.dump import backup_database
from tasks.backups.postgres.restore import restore_counts
from tasks.backups.postgres.target import PgTarget
from tests.tasks.backups.conftest import KEEP

pytestmark = pytest.mark.integration


def test_a_backup_restores_to_the_same_row_counts(source_db, tmp_path):
    target = PgTarget(SecretStr(source_db))
    stored = backup_database(target, tmp_path, KEEP)

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
    assert restore_counts(target, stored.backup.data) == manifest["row_counts"]
    # The scratch database is gone again.
    with psycopg.connect(source_db) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'investflow_verify_%'"
        ).fetchone()[0]
    assert left == 0
