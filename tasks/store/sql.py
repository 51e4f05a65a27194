"""SQL both backends need beyond plain Core: per-entity write locks, insert-if-new."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def lock_entities(conn: Connection, table_name: str, ids) -> None:
    """Hold a transaction-scoped PostgreSQL advisory lock per (table, entity) written.

    Two runs writing the same symbol or series then take turns: the second reads the
    watermark only after the first committed, so its rows go through ON CONFLICT instead of
    colliding in the COPY fast path. Sorted, so two runs never wait on each other in a
    circle. SQLite needs none: it has one writer at a time.
    """
    if conn.dialect.name != "postgresql":
        return
    keys = sorted(f"{table_name}:{entity}" for entity in ids)
    if not keys:
        return
    # One statement for the lot: a round trip per symbol was most of a daily run's SQL. The
    # keys are locked in the subquery's order (OFFSET 0 keeps the planner from flattening it).
    conn.execute(
        sa.text(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM "
            "(SELECT k FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k OFFSET 0) AS ordered"
        ),
        {"keys": keys},
    )


def insert_new(conn: Connection, table: sa.Table, rows: list[dict], returning=()) -> list:
    """INSERT ... ON CONFLICT DO NOTHING on either backend; the rows returned are new ones."""
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(table).on_conflict_do_nothing()
    if not returning:
        conn.execute(statement, rows)
        return []
    return list(conn.execute(statement.returning(*returning), rows).all())
