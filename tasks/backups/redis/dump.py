"""Redis RDB snapshots: BGSAVE and copy the server's file, or `redis-cli --rdb`; redis-check-rdb."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote

from prefect import task
from prefect.cache_policies import NONE

from tasks import clock
from tasks.backups.files import BackupError
from tasks.backups.redis.target import RedisTarget, parse_keyspace
from tasks.backups.retention import StoredBackup
from tasks.backups.take import take_backup
from tasks.logs import run_logger


def parse_check_rdb(output: str) -> dict[str, int]:
    """redis-check-rdb's summary lines -> {"keys": n, "expires": n, "already_expired": n}."""
    found = {}
    for name, pattern in (
        ("keys", r"\[info\] (\d+) keys read"),
        ("expires", r"\[info\] (\d+) expires"),
        ("already_expired", r"\[info\] (\d+) already expired"),
    ):
        match = re.search(pattern, output)
        if match:
            found[name] = int(match.group(1))
    return found


def bgsave_and_wait(
    client,
    *,
    timeout_s: float = 900.0,
    poll_s: float = 0.1,
) -> dict:
    """BGSAVE, then wait on INFO persistence (not LASTSAVE, which only has 1 s resolution)."""
    import redis

    deadline = time.monotonic() + timeout_s
    while True:
        before = client.info("persistence")
        if not before.get("rdb_bgsave_in_progress"):
            try:
                client.bgsave()
                break
            except redis.ResponseError as exc:  # a save or AOF rewrite started just now
                if "in progress" not in str(exc):
                    raise BackupError(f"BGSAVE refused: {exc}") from None
        if time.monotonic() > deadline:
            raise BackupError("Redis kept a background save running; BGSAVE timed out")
        time.sleep(poll_s)
    while True:
        info = client.info("persistence")
        done = not info.get("rdb_bgsave_in_progress")
        if done and info.get("rdb_saves", 0) > before.get("rdb_saves", 0):
            if info.get("rdb_last_bgsave_status") != "ok":
                raise BackupError(
                    f"Redis BGSAVE failed (rdb_last_bgsave_status="
                    f"{info.get('rdb_last_bgsave_status')}); see the Redis server log"
                )
            return info
        if time.monotonic() > deadline:
            raise BackupError(f"Redis BGSAVE did not finish within {timeout_s:.0f} s")
        time.sleep(poll_s)


def rdb_path(client) -> Path | None:
    """Where the server writes its RDB, when CONFIG GET is allowed and the file is readable."""
    import redis

    try:
        folder = client.config_get("dir")["dir"]
        name = client.config_get("dbfilename")["dbfilename"]
    except (redis.ResponseError, KeyError):
        return None  # CONFIG disabled (managed Redis): fall back to redis-cli --rdb
    path = Path(folder) / name
    if path.exists():
        return path if os.access(path, os.R_OK) else None
    # A server that never saved has no file yet: BGSAVE writes it, if we can read the folder.
    return path if os.access(folder, os.R_OK | os.X_OK) else None


def pull_rdb(target: RedisTarget, partial: Path, timeout_s: float = 900.0) -> None:
    """`redis-cli --rdb`: the server streams a fresh snapshot, as it would to a replica."""
    parts = target.parts
    argv = ["redis-cli", "-h", target.host, "-p", str(target.port)]
    if parts.username:
        argv += ["--user", unquote(parts.username)]
    if parts.scheme == "rediss":
        argv.append("--tls")
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    if parts.password:
        env["REDISCLI_AUTH"] = unquote(parts.password)  # never in argv, never logged
    try:
        out = subprocess.run(
            argv + ["--rdb", str(partial)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        raise BackupError(f"redis-cli --rdb from {target.label} timed out") from None
    if out.returncode != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        message = (out.stderr or out.stdout).strip()[-1000:]
        raise BackupError(f"redis-cli --rdb from {target.label} failed: {message}")


def check_rdb(path: Path) -> dict[str, int] | None:
    """Run redis-check-rdb when it is installed; its counts, or None when it is not."""
    tool = shutil.which("redis-check-rdb")
    if tool is None:
        return None
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise BackupError(f"redis-check-rdb rejected {path}: {out.stdout.strip()[-1000:]}")
    return parse_check_rdb(out.stdout)


@task(name="backup-redis-server", tags=["backup"], cache_policy=NONE)
def backup_redis_server(
    target: RedisTarget,
    root: Path,
    keep: dict[str, int],
    *,
    method: str = "auto",
) -> StoredBackup:
    """Snapshot one Redis server into <root>/redis/<host_port>/, then checksum and prune."""
    logger = run_logger()
    started = clock.now()
    client = target.client()
    try:
        server = client.info("server")
        keyspace = parse_keyspace(client.info("keyspace"))
    except Exception as exc:  # noqa: BLE001 - redis-py's message has host:port, not secrets
        raise BackupError(f"cannot reach Redis {target.label}: {exc}") from None

    def dump(partial: Path, final: Path) -> dict:
        source = rdb_path(client) if method != "rdb-cli" and target.is_local else None
        try:
            if source is not None:
                bgsave_and_wait(client)
                # Redis renames a finished save over the file, so this copy is one whole save.
                shutil.copyfile(source, partial)
                how = f"BGSAVE and copy of {source}"
            else:
                pull_rdb(target, partial)
                how = "redis-cli --rdb"
            checked = check_rdb(partial)
        except OSError as exc:
            raise BackupError(f"copying the RDB of {target.label} failed: {exc}") from None
        return {
            "kind": "redis",
            "target": target.label,
            "method": how,
            "redis_version": server.get("redis_version"),
            "started_at": started.isoformat(),
            "finished_at": clock.now().isoformat(),
            "dbsize_before": keyspace,
            # Exact when redis-check-rdb read the file; else DBSIZE just before the save.
            "keys": checked["keys"] if checked else sum(keyspace.values()),
            "keys_source": "redis-check-rdb" if checked else "dbsize",
            "rdb_check": checked,
        }

    stored = take_backup(root, "redis", target.label, ".rdb", keep, dump)
    logger.info(
        "Backed up Redis %s via %s: %s (%s keys, sha256 %s); pruned %d",
        target.label,
        stored.manifest["method"],
        stored.backup.data.name,
        stored.manifest["keys"],
        stored.sha256,
        len(stored.pruned),
    )
    return stored
