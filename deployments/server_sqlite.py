"""Prefect's server on SQLite (`make up`'s default): a write transaction waits for the lock.

Prefect begins most of its SQLite transactions DEFERRED: they read, then ask for the write
lock. When another connection wrote meanwhile, SQLite cannot let them wait (that could
deadlock), so they fail at once with "database is locked", whatever the busy timeout. On a
busy machine the automations' bucket updates failed that way (Prefect issue #10188): the
event was retried four times and dropped, so a run's heartbeat went unseen and the zombie rule
crashed a live run, or an alert was sent twice, four times or never. Beginning IMMEDIATE takes
the write lock first, waiting up to Prefect's busy timeout (60 s). Reads outside a transaction
are unchanged; a PostgreSQL server is untouched.

The server loads it with deployments/event_ordering.py, the setting through which it runs
investflow's code (PREFECT_SERVER_EVENTS_CAUSAL_ORDERING).
"""

from __future__ import annotations

from prefect.server.database import configurations


class _WritesFirst:
    """Prefect's SQLITE_BEGIN_MODE, with DEFERRED read as IMMEDIATE."""

    def __init__(self, mode) -> None:
        self._mode = mode

    def get(self):
        mode = self._mode.get()
        return "IMMEDIATE" if mode == "DEFERRED" else mode

    def set(self, value):
        return self._mode.set(value)

    def reset(self, token) -> None:
        self._mode.reset(token)


def begin_writes_immediately() -> None:
    """Make every SQLite transaction Prefect's server begins take the write lock first."""
    if not isinstance(configurations.SQLITE_BEGIN_MODE, _WritesFirst):
        configurations.SQLITE_BEGIN_MODE = _WritesFirst(configurations.SQLITE_BEGIN_MODE)
