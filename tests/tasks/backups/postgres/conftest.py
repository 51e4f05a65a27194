"""A source database the PostgreSQL backup tests dump, restore and verify."""

from __future__ import annotations

import psycopg
import pytest

from tests.conftest import create_database, drop_database


@pytest.fixture(scope="package")
def source_db(pg_admin_url):
    """A database with a few thousand rows in two schemas, awkward names included."""
    url = create_database(pg_admin_url, prefix="investflow_bk")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE prices (symbol text, d date, close float8)")
        conn.execute(
            "INSERT INTO prices SELECT 'S' || (g % 50), date '2020-01-01' + (g / 50), g * 0.5 "
            "FROM generate_series(1, 20000) g"
        )
        conn.execute('CREATE SCHEMA "Odd Schema"')
        conn.execute('CREATE TABLE "Odd Schema"."Mixed Case" (id int)')
        conn.execute('INSERT INTO "Odd Schema"."Mixed Case" SELECT generate_series(1, 7)')
        conn.execute("CREATE TABLE empty_one (id int)")
    yield url
    drop_database(url)
