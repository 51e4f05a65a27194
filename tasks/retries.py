"""What is worth a second try: retry_condition_fn builders, and a lost database connection.

Every retried task states what it retries as a predicate over the exception; `retry_when`
turns one into Prefect's retry_condition_fn, so the tasks share one way of deciding.
"""

from __future__ import annotations

from collections.abc import Callable

# SQLSTATEs of a server going away under a session: pg_ctl stop/restart -m fast (admin
# shutdown), -m immediate or a crash (crash shutdown), and "starting up / shutting down"
# answered to a connection attempt meanwhile.
_SERVER_GONE = {"57P01", "57P02", "57P03"}


def retry_when(predicate: Callable[[BaseException], bool]):
    """A retry_condition_fn that retries exactly the failures predicate accepts."""

    def retry_condition(task, task_run, state) -> bool:
        exc = state.result(raise_on_failure=False)
        return isinstance(exc, BaseException) and predicate(exc)

    retry_condition.__name__ = f"retry_when_{getattr(predicate, '__name__', 'predicate')}"
    return retry_condition


def connection_lost(exc: BaseException | None) -> bool:
    """The database connection died under us or could not be made while the server restarts.

    True for psycopg's connection-level errors (no SQLSTATE: "the connection is lost", "server
    closed the connection unexpectedly", "connection refused") and the shutdown SQLSTATEs,
    also when wrapped by SQLAlchemy; False for every answer the server gave about the
    statement itself (a constraint, a lock timeout, a cancelled query), which would repeat.
    """
    import psycopg

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "connection_lost", False):  # our own errors that say so
            return True
        if getattr(exc, "connection_invalidated", False):  # SQLAlchemy's DBAPIError
            return True
        if isinstance(exc, psycopg.OperationalError):
            sqlstate = getattr(exc, "sqlstate", None)
            return sqlstate is None or sqlstate in _SERVER_GONE
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return False


def describe_lost_connection(exc: BaseException) -> str:
    """The driver's own words for it, on one line (psycopg messages carry no password)."""
    while getattr(exc, "orig", None) is not None:
        exc = exc.orig
    first = str(exc).strip().splitlines()
    return first[0] if first else type(exc).__name__
