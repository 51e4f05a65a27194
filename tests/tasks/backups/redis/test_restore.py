"""RDB backups load into a scratch redis-server whole: same keys, same values, nothing left."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import redis

from tasks.backups.files import BackupError
from tasks.backups.redis.dump import backup_redis_server
from tasks.backups.redis.restore import loaded_keys, scratch_server
from tests.tasks.backups.conftest import KEEP
from tests.tasks.backups.redis.conftest import SCRATCH_DB


@pytest.mark.integration
@pytest.mark.parametrize("method", ["auto", "rdb-cli"])
def test_an_rdb_backup_loads_into_a_scratch_server_with_the_same_key_count(
    redis_target, tmp_path, method
):
    target, prefix = redis_target
    stored = backup_redis_server(target, tmp_path, KEEP, method=method)

    manifest = stored.manifest
    assert manifest["method"].startswith("BGSAVE" if method == "auto" else "redis-cli")
    assert manifest["keys_source"] == "redis-check-rdb"
    assert manifest["keys"] >= 300 and manifest["sha256"] == stored.sha256
    assert stored.backup.data.read_bytes()[:5] == b"REDIS"
    assert loaded_keys(stored.backup.data, tmp_path) == manifest["keys"]
    # Our own keys came back with their values, in their database.
    with scratch_server(stored.backup.data, tmp_path) as scratch:
        port = scratch.connection_pool.connection_kwargs["port"]
        restored = redis.Redis(host="127.0.0.1", port=port, db=SCRATCH_DB)
        assert restored.get(f"{prefix}s7") == b"value 7"
        assert restored.hgetall(f"{prefix}h3") == {b"close": b"4.5", b"symbol": b"S3"}
        assert len(list(restored.scan_iter(f"{prefix}*", count=1000))) == 300
        restored.close()
    assert not list(tmp_path.rglob(".verify-*"))  # the scratch folder is cleaned up


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_a_corrupt_rdb_is_refused_by_the_scratch_server(tmp_path):
    bad = tmp_path / "bad-20260101T000000Z.rdb"
    bad.write_bytes(b"REDIS0010" + b"\xff" * 40)
    with pytest.raises(BackupError, match="could not load"):
        loaded_keys(bad, tmp_path)


def test_the_restore_module_imports_no_prefect():
    # tests/conftest.py takes free_port from it before Prefect may be imported.
    code = (
        "import sys; import tasks.backups.redis.restore; "
        "sys.exit(any(m.split('.')[0] == 'prefect' for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
