"""The market store's tables (SQLAlchemy Core); migrations/ creates them, code reads these."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

metadata = sa.MetaData()
NOW = sa.func.now()

instruments = sa.Table(
    "instruments",
    metadata,
    sa.Column("symbol", sa.String(20), primary_key=True),
    sa.Column("market", sa.String(8), nullable=False),  # US, KR
    sa.Column("name", sa.Text),
    sa.Column("currency", sa.String(3)),
    sa.Column("exchange_tz", sa.String(40)),
    sa.Column("first_seen", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
)

daily_prices = sa.Table(
    "daily_prices",
    metadata,
    sa.Column("symbol", sa.String(20), primary_key=True),
    sa.Column("trade_date", sa.Date, primary_key=True),
    sa.Column("open", sa.Float(53), nullable=False),
    sa.Column("high", sa.Float(53), nullable=False),
    sa.Column("low", sa.Float(53), nullable=False),
    sa.Column("close", sa.Float(53), nullable=False),
    sa.Column("adj_close", sa.Float(53)),
    sa.Column("volume", sa.BigInteger),
    sa.Column("currency", sa.String(3)),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
)

corporate_actions = sa.Table(
    "corporate_actions",
    metadata,
    sa.Column("symbol", sa.String(20), primary_key=True),
    sa.Column("action_date", sa.Date, primary_key=True),
    sa.Column("action_type", sa.String(8), primary_key=True),  # dividend, split
    sa.Column("value", sa.Float(53), nullable=False),  # cash per share, or split ratio
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
)

macro_series = sa.Table(
    "macro_series",
    metadata,
    sa.Column("series_id", sa.String(40), primary_key=True),
    sa.Column("title", sa.Text),
    sa.Column("frequency", sa.String(40)),
    sa.Column("units", sa.Text),
    sa.Column("seasonal_adjustment", sa.String(60)),
    sa.Column("last_updated", sa.DateTime(timezone=True)),
    sa.Column("observation_start", sa.Date),
    sa.Column("observation_end", sa.Date),
    sa.Column("ingested_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
)

macro_observations = sa.Table(
    "macro_observations",
    metadata,
    sa.Column("series_id", sa.String(40), primary_key=True),
    sa.Column("obs_date", sa.Date, primary_key=True),
    sa.Column("value", sa.Float(53)),  # NULL where FRED says '.', so a revision can fill it
    sa.Column("realtime_start", sa.Date),
    sa.Column("ingested_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
)

# Revision history (vintages) of observations: one row per value a date has ever had.
macro_vintages = sa.Table(
    "macro_vintages",
    metadata,
    sa.Column("series_id", sa.String(40), primary_key=True),
    sa.Column("obs_date", sa.Date, primary_key=True),
    sa.Column("realtime_start", sa.Date, primary_key=True),
    sa.Column("value", sa.Float(53)),
    sa.Column("ingested_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("market", sa.String(8), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
    sa.Column("feature_spec", sa.JSON, nullable=False),
    sa.Column("window", sa.Integer, nullable=False),
    sa.Column("train_start", sa.Date),
    sa.Column("train_end", sa.Date),
    sa.Column("metrics", sa.JSON),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("uri", sa.Text, nullable=False),
    sa.Column("promoted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("promoted_at", sa.DateTime(timezone=True)),
)

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("model_version", sa.String(64), primary_key=True),
    sa.Column("symbol", sa.String(20), primary_key=True),
    sa.Column("as_of", sa.Date, primary_key=True),
    sa.Column("horizon", sa.Integer, primary_key=True),
    sa.Column("predicted_return", sa.Float(53), nullable=False),
    sa.Column("up_probability", sa.Float(53), nullable=False),
    sa.Column("device", sa.String(16)),
    sa.Column("ingested_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
)

backup_catalog = sa.Table(
    "backup_catalog",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # postgres, redis, verify
    sa.Column("target", sa.Text, nullable=False),  # database name or redis address
    sa.Column("path", sa.Text),
    sa.Column("tier", sa.String(8)),  # daily, weekly, monthly
    sa.Column("size_bytes", sa.BigInteger),
    sa.Column("sha256", sa.String(64)),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(16), nullable=False),  # ok, failed, pruned, verified
    sa.Column("verified_at", sa.DateTime(timezone=True)),
    sa.Column("remote_uri", sa.Text),
    sa.Column("detail", sa.JSON),
    sa.Column("flow_run_id", sa.String(36)),
)

# Rows a batch refused, with why: the good rows of the batch land, these wait here.
rejected_rows = sa.Table(
    "rejected_rows",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("table_name", sa.String(40), nullable=False),
    sa.Column("row_key", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("payload", sa.JSON),
    sa.Column("flow_run_id", sa.String(36)),
    sa.Column("rejected_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
    # sha256 of (table, key, reason, payload), unique: a re-run refusing the same row again
    # records nothing new (tasks.validate.fingerprint).
    sa.Column("fingerprint", sa.String(64), unique=True),
)

# What each run found wrong with the data it saw, once per (entity, date, kind).
quality_flags = sa.Table(
    "quality_flags",
    metadata,
    sa.Column("entity", sa.String(40), primary_key=True),  # symbol or FRED series id
    sa.Column("flag_date", sa.Date, primary_key=True),
    # missing_session, non_session_bar, zero_volume, adj_ratio_jump, price_jump, stale,
    # ohlc, missing_value
    sa.Column("kind", sa.String(24), primary_key=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("flow_run_id", sa.String(36)),  # the run that first saw it
    sa.Column("flagged_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
)

# Each time a symbol's stored history was rewritten because the source re-based it.
price_rebases = sa.Table(
    "price_rebases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("symbol", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("first_date", sa.Date),
    sa.Column("last_date", sa.Date),
    sa.Column("rows_changed", sa.Integer, nullable=False),
    sa.Column("flow_run_id", sa.String(36)),
    sa.Column("rebased_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
)

# Lineage: which run wrote how much into which table.
ingest_batches = sa.Table(
    "ingest_batches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("table_name", sa.String(40), nullable=False),
    sa.Column("flow_run_id", sa.String(36)),
    sa.Column("inserted", sa.Integer, nullable=False),
    sa.Column("updated", sa.Integer, nullable=False),
    sa.Column("unchanged", sa.Integer, nullable=False),
    sa.Column("rejected", sa.Integer, nullable=False),
    sa.Column("written_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
)

# Universe membership (tasks/universes/membership.py): one row per spell a symbol spent in a
# universe, valid_from inclusive, valid_to exclusive (NULL: a member now). A change is a new
# row or the closing of an open one; no spell's start, name or symbol is ever rewritten.
universe_members = sa.Table(
    "universe_members",
    metadata,
    sa.Column("universe", sa.String(24), primary_key=True),  # sp500, kospi200, nasdaq, ...
    sa.Column("symbol", sa.String(20), primary_key=True),  # Yahoo's: 005930.KS, BRK-B
    sa.Column("valid_from", sa.Date, primary_key=True),
    sa.Column("valid_to", sa.Date),
    sa.Column("name", sa.Text),
    sa.Column("market", sa.String(8), nullable=False),  # US, KR
    sa.Column("previous_symbol", sa.String(20)),  # set when this spell is a ticker change
    sa.Column("source", sa.String(24), nullable=False),
    sa.Column("flow_run_id", sa.String(36)),
    sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
)


@dataclass(frozen=True)
class UpsertSpec:
    """How a table is upserted: its key, the values compared, and its watermark columns."""

    table: sa.Table
    key: tuple[str, ...]
    # (entity column, ordered column): rows past max(ordered) per entity cannot conflict.
    watermark: tuple[str, str] | None = None

    @property
    def values(self) -> tuple[str, ...]:
        skip = set(self.key) | {"ingested_at", "updated_at", "first_seen"}
        return tuple(c.name for c in self.table.columns if c.name not in skip)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.key + self.values


UPSERT_SPECS = {
    spec.table.name: spec
    for spec in (
        UpsertSpec(daily_prices, ("symbol", "trade_date"), ("symbol", "trade_date")),
        UpsertSpec(corporate_actions, ("symbol", "action_date", "action_type")),
        UpsertSpec(macro_observations, ("series_id", "obs_date"), ("series_id", "obs_date")),
        UpsertSpec(macro_vintages, ("series_id", "obs_date", "realtime_start")),
        UpsertSpec(predictions, ("model_version", "symbol", "as_of", "horizon")),
        UpsertSpec(instruments, ("symbol",)),
        UpsertSpec(macro_series, ("series_id",)),
    )
}
