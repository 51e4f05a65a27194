"""The one idempotent upsert every flow writes with, and the watermarks it leaves."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine

from tasks.store import schema
from tasks.store.compare import changed_prices
from tasks.store.copy import as_days, copy_frame, python_columns
from tasks.store.sql import insert_new, lock_entities
from tasks.store.validate import Rejected, fingerprint, split_rejects


@dataclass
class UpsertResult:
    """What one batch did: counts, and the rows it refused with their reasons."""

    table: str
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    # (inserted, updated, unchanged) per entity (symbol or series), for per-entity reports.
    by_entity: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def written(self) -> int:
        return self.inserted + self.updated

    def __add__(self, other: UpsertResult) -> UpsertResult:
        return UpsertResult(
            self.table,
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
            self.rejected + other.rejected,
        )


def upsert_frame(
    engine: Engine, table_name: str, frame: pd.DataFrame, *, flow_run_id: str | None = None
) -> UpsertResult:
    """Write frame into table_name idempotently, whole or not at all (its own transaction).

    Rows that fail the checks in tasks.store.validate are set aside in rejected_rows with their
    reason, in the same transaction, and returned; the good rows of the batch still land.
    Same frame twice: the second call inserts and updates nothing.
    """
    with engine.begin() as conn:
        return write_frame(conn, table_name, frame, flow_run_id=flow_run_id)


def write_frame(
    conn: Connection, table_name: str, frame: pd.DataFrame, *, flow_run_id: str | None = None
) -> UpsertResult:
    """upsert_frame inside the caller's transaction, so several tables can land together."""
    spec = schema.UPSERT_SPECS[table_name]
    missing = [k for k in spec.key if k not in frame.columns]
    if missing:
        raise ValueError(f"{table_name}: frame lacks key column(s) {missing}")
    columns = [c for c in spec.columns if c in frame.columns]
    good, rejects = split_rejects(frame, table_name, spec.key)
    result = UpsertResult(table_name, rejected=rejects)
    if rejects:
        insert_new(
            conn,
            schema.rejected_rows,
            [
                {
                    "table_name": table_name,
                    "row_key": r.row_key,
                    "reason": r.reason,
                    "payload": r.payload,
                    "flow_run_id": flow_run_id,
                    "fingerprint": fingerprint(table_name, r),
                }
                for r in rejects
            ],
        )
    if not good.empty:
        entities = Entities.of(good[spec.key[0]])
        lock_entities(conn, table_name, entities.names)
        write = _upsert_postgres if conn.dialect.name == "postgresql" else _upsert_sqlite
        changed = write(conn, spec, columns, good, entities)  # entity -> (inserted, updated)
        rows = entities.counts()
        result.by_entity = {
            e: (*changed.get(e, (0, 0)), n - sum(changed.get(e, (0, 0)))) for e, n in rows.items()
        }
        result.inserted = sum(c[0] for c in result.by_entity.values())
        result.updated = sum(c[1] for c in result.by_entity.values())
        result.unchanged = len(good) - result.inserted - result.updated
    conn.execute(
        schema.ingest_batches.insert().values(
            table_name=table_name,
            flow_run_id=flow_run_id,
            inserted=result.inserted,
            updated=result.updated,
            unchanged=result.unchanged,
            rejected=len(rejects),
        )
    )
    return result


@dataclass
class Entities:
    """A batch's entities (its first key column) as codes per row and their names, found once:
    the lock, the watermark and the counts each used to convert and hash 500k strings."""

    codes: np.ndarray
    names: list[str]

    @classmethod
    def of(cls, column: pd.Series) -> Entities:
        codes, uniques = pd.factorize(column)
        return cls(codes, [str(u) for u in uniques])

    def counts(self, rows: np.ndarray | None = None) -> dict[str, int]:
        """Rows per entity, of all rows or of those rows marks."""
        codes = self.codes if rows is None else self.codes[rows]
        found = np.bincount(codes, minlength=len(self.names))
        return {name: int(n) for name, n in zip(self.names, found, strict=True) if n}


def _stamp(spec: schema.UpsertSpec) -> str:
    """The column that records when a row last changed."""
    return "ingested_at" if "ingested_at" in spec.table.c else "updated_at"


def _upsert_postgres(conn: Connection, spec, columns: list[str], frame: pd.DataFrame, entities):
    table = spec.table.name
    cursor = conn.connection.driver_connection.cursor()
    direct = np.zeros(len(frame), dtype=bool)
    if spec.watermark:
        entity, order = spec.watermark
        own = entities if entity == spec.key[0] else Entities.of(frame[entity])
        marks = newest_per_entity(conn, spec, sorted(own.names))
        # Rows past their entity's newest stored date cannot conflict: copy them straight in.
        # (Each entity's mark looked up once and spread by its codes: mapping every row to a
        # Python date and parsing those back cost a third of a 500k-row write.)
        newest = np.array([marks.get(n) for n in own.names], dtype="datetime64[D]")[own.codes]
        direct = np.isnat(newest)
        if not direct.all():  # a batch of new entities (a backfill) needs none of its dates
            direct |= as_days(frame[order]) > newest
    entity_of = spec.key[0]
    counts: dict[str, list[int]] = {}
    if direct.any():
        rows = frame if direct.all() else frame[direct]
        copy_frame(cursor, table, spec, columns, rows)
        for entity, n in entities.counts(direct).items():
            counts.setdefault(entity, [0, 0])[0] += n
    rest = frame[~direct] if direct.any() else frame
    # Prices are read back and compared here (tasks.store.compare), so only the rows that are
    # new or differ are staged; known is then that mask. Other tables: the server compares.
    known = None
    if len(rest) and table == "daily_prices":
        codes = entities.codes if not direct.any() else entities.codes[~direct]
        known = changed_prices(cursor, rest, codes, entities.names, columns)
        if known is not None and not known.all():
            rest = rest[known]
    if len(rest):
        stage = f"_stage_{uuid.uuid4().hex[:12]}"
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS "
            f"SELECT {', '.join(columns)} FROM {table} WITH NO DATA"
        )
        copy_frame(cursor, stage, spec, columns, rest)
        values = [c for c in columns if c not in spec.key]
        key = ", ".join(spec.key)
        join = " AND ".join(f"t.{k} = s.{k}" for k in spec.key)
        if values:
            t_vals = ", ".join(f"t.{v}" for v in values)
            s_vals = ", ".join(f"s.{v}" for v in values)
            x_vals = ", ".join(f"EXCLUDED.{v}" for v in values)
            # Only rows that are new or differ reach the INSERT: an unchanged re-run of a
            # table not compared here is one hash join and no writes.
            changed = f"t.{spec.key[0]} IS NULL OR ROW({t_vals}) IS DISTINCT FROM ROW({s_vals})"
            on_conflict = (
                f"DO UPDATE SET {', '.join(f'{v} = EXCLUDED.{v}' for v in values)}, "
                f"{_stamp(spec)} = now() WHERE ROW({t_vals}) IS DISTINCT FROM ROW({x_vals})"
            )
        else:
            changed = f"t.{spec.key[0]} IS NULL"
            on_conflict = "DO NOTHING"
        # Rows already compared need no join: ON CONFLICT finds each one's stored row.
        source = (
            f"{stage} s WHERE true" if known is not None else
            f"{stage} s LEFT JOIN {table} t ON {join} WHERE {changed}"
        )  # fmt: skip
        merged = conn.exec_driver_sql(
            f"WITH up AS (INSERT INTO {table} AS t ({', '.join(columns)}) "
            f"SELECT s.{', s.'.join(columns)} FROM {source} "
            f"ON CONFLICT ({key}) {on_conflict} RETURNING {entity_of}, (xmax = 0) AS fresh) "
            f"SELECT {entity_of}, count(*) FILTER (WHERE fresh), "
            f"count(*) FILTER (WHERE NOT fresh) FROM up GROUP BY {entity_of}"
        ).all()
        for entity, fresh, stale in merged:
            entry = counts.setdefault(str(entity), [0, 0])
            entry[0] += fresh
            entry[1] += stale
    return {entity: (ins, upd) for entity, (ins, upd) in counts.items()}


def _upsert_sqlite(conn: Connection, spec, columns: list[str], frame: pd.DataFrame, _entities):
    table = spec.table.name
    stage = sa.Table(
        f"_stage_{uuid.uuid4().hex[:12]}",
        sa.MetaData(),
        *[sa.Column(c, spec.table.c[c].type) for c in columns],
        prefixes=["TEMPORARY"],
    )
    stage.create(conn)
    try:
        arrays = python_columns(frame, spec, columns)
        conn.execute(stage.insert(), [dict(zip(columns, row)) for row in zip(*arrays)])
        values = [c for c in columns if c not in spec.key]
        join = " AND ".join(f"t.{k} = s.{k}" for k in spec.key)
        differs = " OR ".join(f"t.{v} IS NOT s.{v}" for v in values) or "0"
        counts = conn.exec_driver_sql(
            f"SELECT s.{spec.key[0]}, coalesce(sum(t.{spec.key[0]} IS NULL), 0), "
            f"coalesce(sum(t.{spec.key[0]} IS NOT NULL AND ({differs})), 0) "
            f"FROM {stage.name} s LEFT JOIN {table} t ON {join} GROUP BY s.{spec.key[0]}"
        ).all()
        if values:
            excluded = " OR ".join(f"t.{v} IS NOT excluded.{v}" for v in values)
            on_conflict = (
                f"DO UPDATE SET {', '.join(f'{v} = excluded.{v}' for v in values)}, "
                f"{_stamp(spec)} = CURRENT_TIMESTAMP WHERE {excluded}"
            )
        else:
            on_conflict = "DO NOTHING"
        conn.exec_driver_sql(
            f"INSERT INTO {table} AS t ({', '.join(columns)}) "
            f"SELECT {', '.join(columns)} FROM {stage.name} WHERE true "
            f"ON CONFLICT ({', '.join(spec.key)}) {on_conflict}"
        )
    finally:
        stage.drop(conn)
    return {str(entity): (int(new), int(changed)) for entity, new, changed in counts}


def latest_dates(engine: Engine, table_name: str, ids: list[str]) -> dict[str, dt.date]:
    """The newest stored date per entity (symbol or series id) among ids."""
    spec = schema.UPSERT_SPECS[table_name]
    if not spec.watermark or not ids:
        return {}
    with engine.connect() as conn:
        return newest_per_entity(conn, spec, ids)


def newest_per_entity(conn: Connection, spec: schema.UpsertSpec, ids: list[str]) -> dict:
    """The newest watermark value per entity among ids; entities with no rows are left out."""
    entity, order = spec.watermark
    table = spec.table
    if conn.dialect.name == "postgresql":
        # One primary-key probe per id (the newest row of each), not a scan and group of the
        # whole table: what a daily run pays for its watermarks stays per symbol, not per row.
        wanted = sa.func.unnest(sa.cast(sa.bindparam("ids"), ARRAY(sa.Text)))
        wanted = wanted.table_valued("id").render_derived(name="wanted")
        newest = (
            sa.select(sa.func.max(table.c[order]))
            .where(table.c[entity] == wanted.c.id)
            .scalar_subquery()
        )
        query, params = sa.select(wanted.c.id, newest), {"ids": list(ids)}
    else:
        query = (
            sa.select(table.c[entity], sa.func.max(table.c[order]))
            .where(table.c[entity].in_(ids))
            .group_by(table.c[entity])
        )
        params = {}
    return {row[0]: row[1] for row in conn.execute(query, params) if row[1] is not None}
