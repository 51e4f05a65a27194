"""Prefect's in-memory causal ordering of events, for a server that restarts.

The server's triggers hold back an event that `follows` another until they have processed
the one it follows, remembering processed events in memory only. After a restart that memory
is empty, so the next status event of every work pool (each follows the pool's previous one,
processed by the server before it restarted) waits PRECEDING_EVENT_LOOKBACK, 15 minutes,
before the automations see it: "no live worker" arrives 15 minutes late, or never when the
server restarts again meanwhile. Here an event that was created before this server process
started counts as processed: the process before it handled it (or it is lost for good), and
waiting cannot bring it back.

The server loads it by its setting (deployments/server/prefect-server.env.example, `make up`):
    PREFECT_SERVER_EVENTS_CAUSAL_ORDERING=deployments.event_ordering
"""

from __future__ import annotations

from uuid import UUID

from prefect.server.events.ordering import memory
from prefect.server.events.schemas.events import Event

from deployments.server_sqlite import begin_writes_immediately
from tasks import clock

# The server's other investflow change, loaded with this module (deployments/server_sqlite.py).
begin_writes_immediately()

SETTING = {"PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "deployments.event_ordering"}
_STARTED_MS = int(clock.wall() * 1000)


def made_before_start(event_id: UUID) -> bool:
    """True for a time-ordered (version 7) id minted before this process started."""
    return event_id.version == 7 and (event_id.int >> 80) < _STARTED_MS


class CausalOrdering(memory.CausalOrdering):
    """memory.CausalOrdering, where an event from before this process started counts as seen."""

    _instances: dict[str, CausalOrdering] = {}

    async def event_has_been_seen(self, event: UUID | Event) -> bool:
        if await super().event_has_been_seen(event):
            return True
        return made_before_start(event.id if isinstance(event, Event) else event)
