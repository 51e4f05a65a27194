"""Backfill a KRX index's membership before the first stored listing, from past listings.

KRX's [11006] screen answers for a past trading day, so the index is read as of a set of
sample days and each symbol's run of samples becomes one spell. Changes between two samples
are dated to the sample that first sees them. The spells end where the stored rows begin
(the earliest valid_from), so nothing stored is rewritten and a second backfill to the same
day finds nothing left to do.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasks.store.schema import universe_members as um
from tasks.universes.membership import name_key
from tasks.universes.sources import Member, Universe

# At most this many past listings per universe and run (each is two KRX requests: the last
# working day, B161, then the constituents): 100 samples reach back about seven years.
MAX_SAMPLES = 100
# Between two past listings: KRX answers a burst of scripted requests with "LOGOUT".
PAUSE_S = 1.0
REGULAR_MONTHS = (6, 12)  # KOSPI 200 and KOSDAQ 150 are reconstituted in June and December


def reconstitution_day(year: int, month: int) -> dt.date:
    """The regular change's first day: the day after the second Thursday (the expiry day)."""
    first = dt.date(year, month, 1)
    second_thursday = 1 + (3 - first.weekday()) % 7 + 7
    return dt.date(year, month, second_thursday + 1)


def sample_days(start: dt.date, until: dt.date) -> list[dt.date]:
    """start, the first of each later month and each regular reconstitution day, before until."""
    days = {start}
    month = dt.date(start.year, start.month, 1)
    while month < until:
        days.add(month)
        if month.month in REGULAR_MONTHS:
            days.add(reconstitution_day(month.year, month.month))
        month = dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return sorted(d for d in days if start <= d < until)


def plan(universe: Universe, start: dt.date, until: dt.date) -> list[dt.date]:
    """The days to read universe as of to backfill [start, until); ValueError, before any
    request, when start is beyond the source's reach or the days are too many for one run."""
    since = universe.history_since
    if since is None:
        return []
    if start < since:
        raise ValueError(
            f"{universe.name}: {universe.source} has listings from {since}, "
            f"history_from {start} is earlier"
        )
    days = sample_days(start, until)
    if len(days) > MAX_SAMPLES:
        raise ValueError(
            f"{universe.name}: history from {start} takes {len(days)} past listings, at most "
            f"{MAX_SAMPLES} a run: give history_from {days[-MAX_SAMPLES]} or later, then run "
            "again with an earlier one"
        )
    return days


def first_stored_day(conn: Connection, universe: str) -> dt.date | None:
    """The day the stored history of universe begins (None when nothing is stored)."""
    query = sa.select(sa.func.min(um.c.valid_from)).where(um.c.universe == universe)
    return conn.execute(query).scalar()


def _renamed(spell: dict, member: Member) -> bool:
    return bool(spell["name"] and member.name and name_key(spell["name"]) != name_key(member.name))


def history_spells(samples: list[tuple[dt.date, list[Member]]], until: dt.date) -> list[dict]:
    """Spells from listings in day order, as a run on each sample day would have written them
    (joiner, leaver, renamed, ticker change); the spells still open end at until."""
    current: dict[str, dict] = {}
    spells: list[dict] = []
    for day, members in samples:
        now = {m.symbol: m for m in members}
        joiners = [s for s in sorted(now) if s not in current]
        renamed = [s for s in sorted(now) if s in current and _renamed(current[s], now[s])]
        leavers = [s for s in sorted(current) if s not in now]
        gone = {name_key(current[s]["name"]): s for s in leavers if current[s]["name"]}
        for symbol in leavers + renamed:
            spells.append(current.pop(symbol) | {"valid_to": day})
        for symbol in joiners + renamed:
            member = now[symbol]
            current[symbol] = {
                "symbol": symbol,
                "valid_from": day,
                "name": member.name,
                "market": member.market,
                "previous_symbol": gone.pop(name_key(member.name), None)
                if symbol in joiners
                else None,
            }
    return spells + [spell | {"valid_to": until} for spell in current.values()]


def record_history(
    conn: Connection,
    universe: str,
    spells: list[dict],
    until: dt.date,
    source: str,
    flow_run_id: str | None,
) -> int:
    """Insert the spells before until, the first stored day they were read up to; refused if
    the stored history no longer begins there (another backfill landed meanwhile)."""
    if not spells:
        return 0
    first = first_stored_day(conn, universe)
    if first != until:
        raise ValueError(
            f"{universe}: stored history now begins {first}, not {until}; nothing written"
        )
    rows = [
        s | {"universe": universe, "source": source, "flow_run_id": flow_run_id} for s in spells
    ]
    conn.execute(um.insert(), rows)
    return len(rows)
