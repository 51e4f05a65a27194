"""A throwaway redis-server that loads an RDB, to count what a backup holds.

No Prefect import here: tests/conftest.py takes free_port from this module before it points
Prefect at the test session's own server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tasks.backups.files import BackupError
from tasks.backups.redis.target import parse_keyspace


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on just now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def scratch_server(rdb: Path, workdir: Path, start_timeout_s: float = 120.0) -> Iterator:
    """A throwaway redis-server on a free loopback port that loads rdb and saves nothing."""
    import redis

    folder = Path(tempfile.mkdtemp(prefix=".verify-", dir=workdir))
    try:
        try:
            os.link(rdb, folder / "dump.rdb")  # Redis only reads it: a link costs no space
        except OSError:
            shutil.copyfile(rdb, folder / "dump.rdb")
        port = free_port()
        proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(folder),
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                str(folder / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=60)
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                try:
                    client.ping()
                    break
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log = (folder / "redis.log").read_text(errors="replace")[-1500:]
                        raise BackupError(
                            f"scratch redis-server could not load {rdb}: {log}"
                        ) from None
                    time.sleep(0.05)
            yield client
        finally:
            client.close()
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def loaded_keys(rdb: Path, workdir: Path) -> int:
    """Keys a scratch redis-server finds in rdb (those already expired at load included)."""
    with scratch_server(rdb, workdir) as client:
        keys = sum(parse_keyspace(client.info("keyspace")).values())
        return keys + int(client.info("persistence").get("rdb_last_load_keys_expired", 0))
