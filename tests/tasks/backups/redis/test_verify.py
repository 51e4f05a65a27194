"""Verifying Redis backups: the newest RDB loaded into a scratch server and counted."""

from __future__ import annotations

import datetime as dt

import pytest

from tasks.backups.redis.dump import backup_redis_server
from tasks.backups.redis.verify import verify_redis_restore
from tests.tasks.backups.conftest import KEEP

pytestmark = pytest.mark.integration


def test_verify_restore_uses_the_newest_backup(redis_target, tmp_path):
    target, _ = redis_target
    day = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    for i in range(2):
        stored = backup_redis_server(target, tmp_path, KEEP, now=day + dt.timedelta(i))
    result = verify_redis_restore(stored.backup.data.parent.parent)
    assert result["path"] == str(stored.backup.data)
    assert result["keys"] == stored.manifest["keys"]
