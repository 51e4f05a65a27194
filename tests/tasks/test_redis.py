"""Redis backups on the real Redis: BGSAVE copies and `redis-cli --rdb` load back whole."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time
import uuid

import pytest
import redis
from pydantic import SecretStr

from tasks import redis as redis_backup
from tasks.backups.files import BackupError

pytestmark = pytest.mark.integration

KEEP = {"daily": 7, "weekly": 4, "monthly": 0}
SCRATCH_DB = 9  # other people's data lives in the other databases: never flushed here


@pytest.fixture
def never_saved_redis(tmp_path_factory):
    """A real redis-server whose folder has no dump.rdb yet, as on a fresh machine."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    folder = tmp_path_factory.mktemp("never-saved-redis")
    port = redis_backup.free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
        + ["--save", "", "--appendonly", "no", "--logfile", str(folder / "redis.log")],
        stdin=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    assert not (folder / "dump.rdb").exists()
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(params=["machine", "never-saved"])
def redis_target(request):
    """300 keys of ours in a scratch database, removed afterwards: on this machine's Redis,
    and on a server that has never written an RDB (a fresh machine's, whatever ran before)."""
    if request.param == "machine":
        base = request.getfixturevalue("redis_url")
    else:
        base = request.getfixturevalue("never_saved_redis")
    url = base.rsplit("/", 1)[0] + f"/{SCRATCH_DB}"
    client = redis.Redis.from_url(url)
    prefix = f"investflow-test:{uuid.uuid4().hex[:8]}:"
    pipe = client.pipeline()
    for i in range(200):
        pipe.set(f"{prefix}s{i}", f"value {i}")
    for i in range(100):
        pipe.hset(f"{prefix}h{i}", mapping={"close": i * 1.5, "symbol": f"S{i}"})
    pipe.execute()
    yield redis_backup.RedisTarget(SecretStr(url)), prefix
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.parametrize("method", ["auto", "rdb-cli"])
def test_an_rdb_backup_loads_into_a_scratch_server_with_the_same_key_count(
    redis_target, tmp_path, method
):
    target, prefix = redis_target
    stored = redis_backup.backup_server(target, tmp_path, KEEP, method=method)

    manifest = stored.manifest
    assert manifest["method"].startswith("BGSAVE" if method == "auto" else "redis-cli")
    assert manifest["keys_source"] == "redis-check-rdb"
    assert manifest["keys"] >= 300 and manifest["sha256"] == stored.sha256
    assert stored.backup.data.read_bytes()[:5] == b"REDIS"
    assert redis_backup.loaded_keys(stored.backup.data, tmp_path) == manifest["keys"]
    # Our own keys came back with their values, in their database.
    with redis_backup.scratch_server(stored.backup.data, tmp_path) as scratch:
        port = scratch.connection_pool.connection_kwargs["port"]
        restored = redis.Redis(host="127.0.0.1", port=port, db=SCRATCH_DB)
        assert restored.get(f"{prefix}s7") == b"value 7"
        assert restored.hgetall(f"{prefix}h3") == {b"close": b"4.5", b"symbol": b"S3"}
        assert len(list(restored.scan_iter(f"{prefix}*", count=1000))) == 300
        restored.close()
    assert not list(tmp_path.rglob(".verify-*"))  # the scratch folder is cleaned up


def test_verify_restore_uses_the_newest_backup(redis_target, tmp_path):
    target, _ = redis_target
    day = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    for i in range(2):
        stored = redis_backup.backup_server(target, tmp_path, KEEP, now=day + dt.timedelta(i))
    result = redis_backup.verify_restore(stored.backup.data.parent.parent)
    assert result["path"] == str(stored.backup.data)
    assert result["keys"] == stored.manifest["keys"]


def test_bgsave_waits_on_info_persistence(redis_url):
    client = redis.Redis.from_url(redis_url)
    saves = client.info("persistence")["rdb_saves"]
    info = redis_backup.bgsave_and_wait(client)
    assert info["rdb_bgsave_in_progress"] == 0 and info["rdb_last_bgsave_status"] == "ok"
    assert info["rdb_saves"] > saves


def test_an_unreachable_redis_fails_clearly_without_showing_the_password(tmp_path):
    target = redis_backup.RedisTarget(SecretStr("redis://:hunter2-pw@127.0.0.1:1/0"))
    with pytest.raises(BackupError) as err:
        redis_backup.backup_server(target, tmp_path, KEEP)
    assert "cannot reach Redis 127.0.0.1:1" in str(err.value)
    assert "hunter2-pw" not in str(err.value)


def test_parse_check_rdb_reads_the_summary():
    out = (
        "[offset 89] \\o/ RDB looks OK! \\o/\n[info] 12 keys read\n[info] 3 expires\n"
        "[info] 1 already expired\n"
    )
    assert redis_backup.parse_check_rdb(out) == {"keys": 12, "expires": 3, "already_expired": 1}


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_a_corrupt_rdb_is_refused_by_the_scratch_server(tmp_path):
    bad = tmp_path / "bad-20260101T000000Z.rdb"
    bad.write_bytes(b"REDIS0010" + b"\xff" * 40)
    with pytest.raises(BackupError, match="could not load"):
        redis_backup.loaded_keys(bad, tmp_path)
