"""Redis servers with keys of ours that the Redis backup tests snapshot and load back."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import pytest
import redis
from pydantic import SecretStr

from tasks.backups.redis.restore import free_port
from tasks.backups.redis.target import RedisTarget

SCRATCH_DB = 9  # other people's data lives in the other databases: never flushed here


@pytest.fixture
def never_saved_redis(tmp_path_factory):
    """A real redis-server whose folder has no dump.rdb yet, as on a fresh machine."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    folder = tmp_path_factory.mktemp("never-saved-redis")
    port = free_port()
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
    yield RedisTarget(SecretStr(url)), prefix
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()
