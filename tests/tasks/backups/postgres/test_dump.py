"""pg_dump backups on the real PostgreSQL: what a dump records, failures leave good backups."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import SecretStr

from tasks.backups.files import PARTIAL_PREFIX, BackupError, verify_set
from tasks.backups.postgres.dump import backup_database
from tasks.backups.postgres.target import PgTarget
from tests.tasks.backups.conftest import KEEP

pytestmark = pytest.mark.integration


def test_a_dump_that_fails_midway_leaves_the_previous_backups_and_no_partial_file(
    source_db, tmp_path, set_clock
):
    target = PgTarget(SecretStr(source_db))
    day = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    good = []
    for i in range(2):
        set_clock(day + dt.timedelta(days=i))
        good.append(backup_database(target, tmp_path, KEEP))
    tdir = good[0].backup.data.parent.parent
    before = {p: p.read_bytes() for p in tdir.rglob("*") if p.is_file()}

    # An 8 KiB quota makes pg_dump's writes fail partway through, as a full disk would.
    set_clock(day + dt.timedelta(days=9))
    with pytest.raises(BackupError, match=r"pg_dump of .* failed .*File too large"):
        backup_database(target, tmp_path, KEEP, max_bytes=8 * 1024)

    after = {p: p.read_bytes() for p in tdir.rglob("*") if p.is_file()}
    assert after == before
    assert not list(tdir.rglob(PARTIAL_PREFIX + "*"))
    assert all(verify_set(s.backup) is None for s in good)


def test_an_unreachable_database_fails_clearly_without_showing_the_password(tmp_path):
    target = PgTarget(SecretStr("postgresql://backup:s3cret-pw@127.0.0.1:1/market"))
    with pytest.raises(BackupError) as err:
        backup_database(target, tmp_path, KEEP)
    message = str(err.value)
    assert "cannot reach PostgreSQL 127.0.0.1:1/market" in message
    assert "s3cret-pw" not in message
    assert not list((tmp_path / "postgres").rglob("*.dump"))
