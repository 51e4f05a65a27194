"""Verifying Redis backups: the newest RDB loaded into a scratch server and counted."""

from __future__ import annotations

import datetime as dt

import pytest

from tasks.backups.redis.dump import backup_redis_server
from tasks.backups.redis.verify import verify_redis_restore
from tests.tasks.backups.conftest import KEEP

pytestmark = pytest.mark.integration


def test_verify_restore_uses_the_newest_backup(redis_target, tmp_path, set_clock):
    target, _ = redis_target
    day = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    for i in range(2):
        set_clock(day + dt.timedelta(i))
        stored = backup_redis_server(target, tmp_path, KEEP)
    assert stored.backup.taken_at == day + dt.timedelta(1)  # named by the clock the code reads
    result = verify_redis_restore(stored.backup.data.parent.parent)
    assert result["path"] == str(stored.backup.data)
    assert result["keys"] == stored.manifest["keys"]
