"""The server's event ordering after a restart: events from before it count as processed."""

from __future__ import annotations

import asyncio
import uuid

from prefect._internal.uuid7 import uuid7

from deployments import event_ordering


def minted_at(ms: int) -> uuid.UUID:
    """A time-ordered event id, as the server mints them, from the given unix milliseconds."""
    low = uuid7().int & ((1 << 80) - 1)
    return uuid.UUID(int=(ms << 80) | low)


def test_only_an_event_from_before_the_server_started_is_not_waited_for():
    ordering = event_ordering.CausalOrdering(scope="test-restart")
    started = event_ordering._STARTED_MS
    seen = lambda event_id: asyncio.run(ordering.event_has_been_seen(event_id))  # noqa: E731
    # A pool's last status event, handled by the server before it restarted.
    assert minted_at(started - 60_000).version == 7 and seen(minted_at(started - 60_000))
    assert not seen(minted_at(started + 60_000))  # this life's: really waited for
    assert not seen(uuid.uuid4())  # no time in it: waited for, as Prefect does


def test_the_servers_setting_loads_it():
    from prefect.server.events.ordering import get_triggers_causal_ordering
    from prefect.settings import PREFECT_SERVER_EVENTS_CAUSAL_ORDERING, temporary_settings

    from deployments.local_stack import SERVER_SETTINGS

    path = SERVER_SETTINGS["PREFECT_SERVER_EVENTS_CAUSAL_ORDERING"]
    with temporary_settings({PREFECT_SERVER_EVENTS_CAUSAL_ORDERING: path}):
        assert isinstance(get_triggers_causal_ordering(), event_ordering.CausalOrdering)


def test_the_tests_servers_load_it_as_make_up_does():
    import os

    from deployments.local_stack import SERVER_SETTINGS

    assert {k: os.environ.get(k) for k in SERVER_SETTINGS} == SERVER_SETTINGS


def test_a_server_on_sqlite_waits_for_the_write_lock_instead_of_failing(tmp_path):
    """Two transactions that read, then write (as the automations' bucket updates do): Prefect's
    DEFERRED begin fails the second with "database is locked"; loaded, both land."""
    import asyncio

    import sqlalchemy as sa
    from prefect.server.database import configurations
    from prefect.server.database.configurations import AioSqliteConfiguration

    from deployments.server_sqlite import begin_writes_immediately

    async def both_write(url: str) -> list:
        config = AioSqliteConfiguration(url)
        engine = await config.engine()
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE bucket (id INTEGER PRIMARY KEY, n INTEGER)"))
            await conn.execute(sa.text("INSERT INTO bucket VALUES (1, 0)"))
        sessions = sa.ext.asyncio.async_sessionmaker(engine)
        read = asyncio.Event()

        async def increment(first: bool):
            async with sessions() as session, config.begin_transaction(session):
                await session.execute(sa.text("SELECT n FROM bucket"))
                if first:
                    read.set()
                    await asyncio.sleep(0.5)  # the other writes meanwhile
                else:
                    await read.wait()
                await session.execute(sa.text("UPDATE bucket SET n = n + 1"))

        try:
            return await asyncio.gather(increment(True), increment(False), return_exceptions=True)
        finally:
            await engine.dispose()

    begin_writes_immediately()  # as importing event_ordering did
    loaded = configurations.SQLITE_BEGIN_MODE
    configurations.SQLITE_BEGIN_MODE = loaded._mode  # Prefect's own, for the comparison
    try:
        deferred = asyncio.run(both_write(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"))
    finally:
        configurations.SQLITE_BEGIN_MODE = loaded
    assert any("database is locked" in str(r) for r in deferred), deferred
    immediate = asyncio.run(both_write(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"))
    assert immediate == [None, None]
