"""Alembic environment: migrate the market store named by the caller or by the settings."""

from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context

from tasks.settings import get_settings
from tasks.store.engine import normalize_url
from tasks.store.schema import metadata

config = context.config
if config.config_file_name and not config.attributes.get("url"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    return config.attributes.get("url") or normalize_url(
        get_settings().database_url.get_secret_value()
    )


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = sa.create_engine(_url(), poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        # render_as_batch lets ALTERs work on SQLite too.
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
