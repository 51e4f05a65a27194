"""Hypertables and compression for the two time series, where TimescaleDB is installed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# (table, time column, segment-by column): compress each symbol's or series' chunk together.
HYPERTABLES = (
    ("daily_prices", "trade_date", "symbol"),
    ("macro_observations", "obs_date", "series_id"),
)


def _timescale_available(bind) -> bool:
    if bind.dialect.name != "postgresql":
        return False
    row = bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    ).first()
    return row is not None


def upgrade() -> None:
    bind = op.get_bind()
    if not _timescale_available(bind):
        # Plain PostgreSQL or SQLite: the tables work as they are.
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    for table, time_col, segment in HYPERTABLES:
        op.execute(
            f"SELECT create_hypertable('{table}', '{time_col}', "
            f"chunk_time_interval => INTERVAL '1 year', migrate_data => true, "
            f"if_not_exists => true)"
        )
        op.execute(
            f"ALTER TABLE {table} SET (timescaledb.compress, "
            f"timescaledb.compress_segmentby = '{segment}', "
            f"timescaledb.compress_orderby = '{time_col} DESC')"
        )
        # Recent rows are still revised (price lookback, FRED revisions): compress older ones.
        op.execute(
            f"SELECT add_compression_policy('{table}', INTERVAL '180 days', if_not_exists => true)"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if not _timescale_available(bind):
        return
    for table, _, _ in HYPERTABLES:
        op.execute(f"SELECT remove_compression_policy('{table}', if_exists => true)")
