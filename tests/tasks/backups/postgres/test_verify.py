"""Verifying PostgreSQL backups: the newest dump restored and checked against its manifest."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from tasks.backups.files import BackupError
from tasks.backups.postgres.dump import backup_database
from tasks.backups.postgres.target import PgTarget
from tasks.backups.postgres.verify import compare_counts, verify_postgres_restore
from tests.tasks.backups.conftest import KEEP


def test_compare_counts_names_each_table_that_differs():
    assert compare_counts({"a": 1, "b": 2}, {"a": 1, "b": 2}) == []
    assert compare_counts({"a": 1, "b": 2}, {"a": 1, "c": 0}) == [
        "b: manifest 2, restored None",
        "c: manifest None, restored 0",
    ]


@pytest.mark.integration
def test_a_restore_that_disagrees_with_its_manifest_fails_naming_the_table(source_db, tmp_path):
    target = PgTarget(SecretStr(source_db))
    stored = backup_database(target, tmp_path, KEEP)
    result = verify_postgres_restore(target, tmp_path)
    assert result["path"] == str(stored.backup.data)
    assert (result["tables"], result["rows"]) == (3, 20007)

    # A manifest that promises other counts than the dump holds.
    manifest = json.loads(stored.backup.manifest.read_text())
    manifest["row_counts"]["public.prices"] = 19999
    stored.backup.manifest.write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match=r"public\.prices: manifest 19999, restored 20000"):
        verify_postgres_restore(target, tmp_path)
