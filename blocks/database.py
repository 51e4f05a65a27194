"""The market store's connection as a Prefect block, so remote workers need no local .env."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.names import MARKET_DATABASE


class MarketDatabase(Block):
    """SQLAlchemy URL of the market store (PostgreSQL/TimescaleDB, or SQLite locally)."""

    _block_type_name = "Market Database"
    _block_type_slug = "market-database"
    _description = (
        "Connection URL of investflow's market store; a secret, since it has the password."
    )

    url: SecretStr = Field(description="e.g. postgresql://user:password@host:5432/market")


def database_url(settings) -> str:
    """INVESTFLOW_DATABASE_URL when set, else the market-database block, else the SQLite default."""
    if "database_url" in settings.model_fields_set:
        return settings.database_url.get_secret_value()
    try:
        return MarketDatabase.load(MARKET_DATABASE).url.get_secret_value()
    except ValueError:  # no such block saved: the local default
        return settings.database_url.get_secret_value()
