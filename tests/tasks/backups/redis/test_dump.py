"""Redis RDB snapshots on the real Redis: BGSAVE waits for its own save, failures say why."""

from __future__ import annotations

import pytest
import redis
from pydantic import SecretStr

from tasks.backups.files import BackupError
from tasks.backups.redis.dump import backup_redis_server, bgsave_and_wait, parse_check_rdb
from tasks.backups.redis.target import RedisTarget
from tests.tasks.backups.conftest import KEEP


@pytest.mark.integration
def test_bgsave_waits_on_info_persistence(redis_url):
    client = redis.Redis.from_url(redis_url)
    saves = client.info("persistence")["rdb_saves"]
    info = bgsave_and_wait(client)
    assert info["rdb_bgsave_in_progress"] == 0 and info["rdb_last_bgsave_status"] == "ok"
    assert info["rdb_saves"] > saves


@pytest.mark.integration
def test_an_unreachable_redis_fails_clearly_without_showing_the_password(tmp_path):
    target = RedisTarget(SecretStr("redis://:hunter2-pw@127.0.0.1:1/0"))
    with pytest.raises(BackupError) as err:
        backup_redis_server(target, tmp_path, KEEP)
    assert "cannot reach Redis 127.0.0.1:1" in str(err.value)
    assert "hunter2-pw" not in str(err.value)


def test_parse_check_rdb_reads_the_summary():
    out = (
        "[offset 89] \\o/ RDB looks OK! \\o/\n[info] 12 keys read\n[info] 3 expires\n"
        "[info] 1 already expired\n"
    )
    assert parse_check_rdb(out) == {"keys": 12, "expires": 3, "already_expired": 1}
