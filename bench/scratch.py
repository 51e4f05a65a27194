"""A migrated scratch market store on the local PostgreSQL, and a Prefect server as make up
runs it, for one benchmark run."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg

from tasks.store.engine import get_engine, migrate

ADMIN_URL = os.environ.get(
    "INVESTFLOW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def create_database(admin_url: str = ADMIN_URL, prefix: str = "investflow_bench") -> str:
    """Create an empty database; return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def create_store(admin_url: str = ADMIN_URL, prefix: str = "investflow_bench") -> str:
    """Create and migrate an empty database; return its URL."""
    url = create_database(admin_url, prefix)
    migrate(url)
    return url


def clone_store(url: str, admin_url: str = ADMIN_URL) -> str:
    """A new database holding a copy of url's (nothing may be connected to it meanwhile)."""
    name = f"{url.rsplit('/', 1)[1]}_copy_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{url.rsplit("/", 1)[1]}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_store(url: str, admin_url: str = ADMIN_URL) -> None:
    """Drop the database, closing whatever still holds a connection to it."""
    get_engine.cache_clear()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def prefect_server(backend: str, home: Path):
    """A Prefect server as make up runs it (deployments/local_stack.py SERVER_SETTINGS), on its
    own SQLite file or a fresh PostgreSQL database (not started yet). Not
    prefect_test_harness: its plain SQLite server made each rate-limit call of a backfill
    wait about 2 s for a write lock (20 ms here), which no deployed run sees."""
    from deployments.local_stack import SERVER_SETTINGS
    from tests.deployments.stack import ServerProcess

    home.mkdir(parents=True)
    url = f"sqlite+aiosqlite:///{home}/prefect.db"
    if backend == "postgresql":
        url = create_database(prefix="investflow_bench_prefect")
        url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    return ServerProcess(home, url, PREFECT_SERVER_ANALYTICS_ENABLED="false", **SERVER_SETTINGS)
