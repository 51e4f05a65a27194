"""The market store's engines (one pool per URL) and its migrations."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.settings import PROJECT_ROOT


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whichever spelling of the URL was given."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def ensure_sqlite_folder(url: str) -> None:
    """SQLite creates the file but not its folder: a fresh clone has no ./data yet."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One pooled engine per database URL for the life of the process."""
    url = normalize_url(url)
    ensure_sqlite_folder(url)
    if url.startswith("sqlite:///"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_no_implicit_begin)
        sa.event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    engine = sa.create_engine(
        url, pool_pre_ping=True, pool_size=2, max_overflow=2,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )  # fmt: skip
    sa.event.listen(engine, "do_connect", _connect_patiently)
    return engine


def _sqlite_no_implicit_begin(dbapi_connection, connection_record):
    dbapi_connection.isolation_level = None  # SQLAlchemy's begin event starts transactions


def _sqlite_begin_immediate(conn):
    """Take SQLite's write lock when a transaction starts, waiting up to the 30 s timeout.

    SQLite's default (deferred) transaction reads first and asks for the write lock later; when
    another run wrote meanwhile it cannot wait for it (that would deadlock), so it fails at once
    with "database is locked". Two price runs writing the same store at once (a parent's
    children, a schedule and a manual run) then lost one of them.
    """
    conn.exec_driver_sql("BEGIN IMMEDIATE")


# A connection attempt gives up after this long; one that cannot reach the server (refused,
# no route, timed out, or the server starting up) is tried again for CONNECT_PATIENCE_S: long
# enough for a restart or a brief cut, short enough that a write retried three times against a
# node that stays down fails in about a minute and a half (tasks/market/writes.py).
CONNECT_TIMEOUT_S = 10
CONNECT_PATIENCE_S = 20
_UNREACHABLE = (
    "connection refused",
    "no route to host",
    "network is unreachable",
    "timeout expired",
    "connection timed out",
    "the database system is starting up",
    "the database system is shutting down",
    "server closed the connection unexpectedly",
)


def unreachable(exc: BaseException) -> bool:
    """The server could not be reached (yet): not a wrong password, database or host name."""
    import psycopg

    return isinstance(exc, psycopg.OperationalError) and any(
        words in str(exc).lower() for words in _UNREACHABLE
    )


def _connect_patiently(dialect, conn_rec, cargs, cparams):
    """Open a connection, trying again while the server is unreachable: a data node that
    restarts, or a host whose link is down for a moment, costs a wait instead of the run."""
    from tasks import clock

    deadline = clock.monotonic() + CONNECT_PATIENCE_S
    delay = 0.5
    while True:
        try:
            return dialect.loaded_dbapi.connect(*cargs, **cparams)
        except Exception as exc:
            if not unreachable(exc) or clock.monotonic() + delay > deadline:
                raise
            clock.sleep(delay)
            delay = min(delay * 2, 5.0)


def engine_from_settings(settings=None) -> Engine:
    """The market store: INVESTFLOW_DATABASE_URL, else the market-database block, else SQLite."""
    from blocks.database import database_url
    from tasks.settings import get_settings

    return get_engine(database_url(settings or get_settings()))


def migrate(url: str) -> None:
    """Bring the database at url to the newest schema (alembic upgrade head); safe to repeat."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.attributes["url"] = normalize_url(url)
    ensure_sqlite_folder(cfg.attributes["url"])
    command.upgrade(cfg, "head")
