"""What the store holds of each FRED series, and writing one series' new version whole."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.store.ledger import Issue, record_flags
from tasks.store.schema import macro_observations, macro_series, macro_vintages
from tasks.store.upsert import UpsertResult, write_frame


@dataclass(frozen=True)
class StoredSeries:
    """The version of a series the store holds: FRED's last_updated when it was written."""

    last_updated: dt.datetime | None
    first_obs: dt.date | None
    has_vintages: bool


def same_version(stored: dt.datetime | None, fetched: dt.datetime | None) -> bool:
    """Whether two last_updated stamps are the same instant (SQLite hands them back naive)."""
    if stored is None or fetched is None:
        return False
    a, b = pd.Timestamp(stored), pd.Timestamp(fetched)
    a = a.tz_localize("UTC") if a.tzinfo is None else a
    b = b.tz_localize("UTC") if b.tzinfo is None else b
    return a == b


def needs_fetch(stored: StoredSeries | None, info: dict, vintages: bool) -> bool:
    """Fetch a series only when FRED's version differs from the stored one (or is new)."""
    if stored is None or stored.first_obs is None:
        return True
    if vintages and not stored.has_vintages:
        return True  # first run with vintages: the history was never taken
    return not same_version(stored.last_updated, info["last_updated"])


def missing_values(observations: pd.DataFrame) -> list[Issue]:
    """A flag for each observation FRED publishes as '.' (no value)."""
    gaps = observations[observations["value"].isna()]
    return [
        Issue(r.series_id, r.obs_date, "missing_value", "FRED publishes '.' (no value)")
        for r in gaps.itertuples(index=False)
    ]


# --------------------------------------------------------------------------- thin I/O


def stored_series(engine: Engine, ids: list[str]) -> dict[str, StoredSeries]:
    """The stored version, first observation and vintage presence of each series."""
    s, o, v = macro_series.c, macro_observations.c, macro_vintages.c
    with engine.connect() as conn:
        updated = dict(conn.execute(sa.select(s.series_id, s.last_updated).where(
            s.series_id.in_(ids))).all())  # fmt: skip
        first = dict(conn.execute(sa.select(o.series_id, sa.func.min(o.obs_date)).where(
            o.series_id.in_(ids)).group_by(o.series_id)).all())  # fmt: skip
        with_vintages = set(conn.execute(sa.select(v.series_id).where(
            v.series_id.in_(ids)).distinct()).scalars())  # fmt: skip
    return {
        sid: StoredSeries(updated.get(sid), first.get(sid), sid in with_vintages)
        for sid in set(updated) | set(first)
    }


def write_series(
    engine: Engine,
    info: dict,
    observations: pd.DataFrame,
    vintages: pd.DataFrame,
    flow_run_id: str | None,
) -> tuple[UpsertResult, list[Issue]]:
    """Observations, vintages, flags, then the metadata, in one transaction.

    The metadata carries last_updated: written last and together, it says the stored data is
    that version, never ahead of it.
    """
    with engine.begin() as conn:
        result = write_frame(conn, "macro_observations", observations, flow_run_id=flow_run_id)
        if not vintages.empty:
            write_frame(conn, "macro_vintages", vintages, flow_run_id=flow_run_id)
        flags = record_flags(conn, missing_values(observations), "fred", flow_run_id)
        write_frame(conn, "macro_series", pd.DataFrame([info]), flow_run_id=flow_run_id)
    return result, flags


# "What did FRED say on :on about observation :obs_date?" The value whose real-time period
# began last on or before that day (NULL: not published yet). README, "Macro".
AS_OF_SQL = """
SELECT value FROM macro_vintages
WHERE series_id = :series_id AND obs_date = :obs_date AND realtime_start <= :on
ORDER BY realtime_start DESC LIMIT 1
"""
