"""Session fixtures: a real Prefect server, a scratch PostgreSQL database, Redis, SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tasks.backups.redis.restore import free_port  # imports no Prefect

# Prefect reads its settings when first imported: point it at this session's own server and
# home before anything imports it, so no test touches ~/.prefect or spawns an ephemeral server.
_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="investflow-prefect-"))
_PREFECT_PORT = free_port()
os.environ.update(
    PREFECT_HOME=str(_PREFECT_HOME),
    PREFECT_API_URL=f"http://127.0.0.1:{_PREFECT_PORT}/api",
    PREFECT_UI_URL=f"http://127.0.0.1:{_PREFECT_PORT}",
    PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{_PREFECT_HOME}/prefect.db",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    PREFECT_SERVER_UI_ENABLED="false",
    # Every server the tests start runs investflow's server-side code as make up's does
    # (deployments/local_stack.py, SERVER_SETTINGS; test_event_ordering checks they agree).
    PREFECT_SERVER_EVENTS_CAUSAL_ORDERING="deployments.event_ordering",
    PREFECT_LOGGING_LEVEL="INFO",
    # yfinance caches cookies and timezones under the user's cache folder: keep the stand-ins'
    # out of the developer's, and start every session as a fresh machine would.
    XDG_CACHE_HOME=str(_PREFECT_HOME / "cache"),
    # Tests never read the developer's .env: each sets what it needs.
    INVESTFLOW_DATABASE_URL=f"sqlite:///{_PREFECT_HOME}/market.db",
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ADMIN_PG_URL = os.environ.get(
    "INVESTFLOW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TEST_REDIS_URL = os.environ.get("INVESTFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _unavailable(what: str, how: str, error: Exception):
    message = f"{what} is not reachable ({error}). {how}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    """One real `prefect server start` for the whole session (it takes 10-15 s here)."""
    log = open(_PREFECT_HOME / "server.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(_PREFECT_PORT),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )
    health = f"http://127.0.0.1:{_PREFECT_PORT}/api/health"
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(health, timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(
                "Prefect server did not start:\n"
                + (_PREFECT_HOME / "server.log").read_text()[-3000:]
            )
        time.sleep(0.5)
    yield os.environ["PREFECT_API_URL"]
    # Send the logs still queued for the API before the server goes away.
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    from tests.deployments.stack import stop

    stop(proc)
    log.close()


def _admin_connect():
    import psycopg

    return psycopg.connect(ADMIN_PG_URL, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    try:
        _admin_connect().close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        _unavailable(
            "PostgreSQL at " + ADMIN_PG_URL.rsplit("@", 1)[-1],
            "Start it with: pg_ctlcluster --skip-systemctl-redirect 15 main start "
            "(or set INVESTFLOW_TEST_DATABASE_URL).",
            exc,
        )
    return ADMIN_PG_URL


def create_database(admin_url: str, prefix: str = "investflow_test") -> str:
    """Create an empty database; return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    from tasks.store.engine import get_engine

    get_engine.cache_clear()
    name = url.rsplit("/", 1)[1]
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url(pg_admin_url):
    """A migrated market store in a database of its own, dropped at the end of the session."""
    from tasks.store.engine import migrate

    url = create_database(pg_admin_url)
    migrate(url)
    yield url
    drop_database(url)


@pytest.fixture
def pg_engine(pg_url, monkeypatch):
    """The session's PostgreSQL store, emptied for this test and set as the flows' database."""
    import sqlalchemy as sa

    from tasks.store.engine import get_engine
    from tasks.store.schema import metadata

    engine = get_engine(pg_url)
    names = ", ".join(t.name for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY"))
    monkeypatch.setenv("INVESTFLOW_DATABASE_URL", pg_url)
    return engine


@pytest.fixture
def sqlite_engine(tmp_path, monkeypatch):
    """A migrated SQLite market store in this test's own folder."""
    from tasks.store.engine import get_engine, migrate

    url = f"sqlite:///{tmp_path / 'market.db'}"
    migrate(url)
    monkeypatch.setenv("INVESTFLOW_DATABASE_URL", url)
    return get_engine(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request):
    """The market store on both backends."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_engine")
    return request.getfixturevalue("pg_engine")


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        _unavailable(
            "Redis at " + TEST_REDIS_URL,
            "Start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 "
            "(or set INVESTFLOW_TEST_REDIS_URL).",
            exc,
        )
    return TEST_REDIS_URL
