"""What the tasks retry: a lost database connection, never the answer about a statement."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy.exc

from tasks.params import database_name
from tasks.retries import connection_lost, describe_lost_connection


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.OperationalError("the connection is lost"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.errors.CrashShutdown("terminating connection because of crash"),
        psycopg.errors.CannotConnectNow("the database system is starting up"),
    ],
)
def test_a_server_going_away_is_worth_a_retry(exc):
    assert connection_lost(exc)
    wrapped = sqlalchemy.exc.OperationalError("INSERT ...", {}, exc)
    assert connection_lost(wrapped)
    assert describe_lost_connection(wrapped) == str(exc).splitlines()[0]


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"),
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
        psycopg.errors.UniqueViolation("duplicate key"),
        ValueError("bad symbol"),
        None,
    ],
)
def test_an_answer_about_the_statement_is_not(exc):
    assert not connection_lost(exc)


def test_a_lost_connection_raised_while_handling_another_error_is_found():
    try:
        try:
            raise psycopg.errors.AdminShutdown("terminating connection")
        except psycopg.Error as exc:
            raise RuntimeError("write failed") from exc
    except RuntimeError as outer:
        assert connection_lost(outer)


def test_a_database_name_is_refused_without_repeating_the_value():
    assert database_name("market_2024") == "market_2024"
    with pytest.raises(ValueError) as refused:
        database_name("postgresql://u:hunter2x@db/market")
    assert "hunter2x" not in str(refused.value) and "not a URL" in str(refused.value)
