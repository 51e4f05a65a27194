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
