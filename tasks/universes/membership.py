"""universe_members: record a universe's listing as validity rows, and read it back as of a day.

A spell is one row: valid_from (inclusive) to valid_to (exclusive; NULL while a member). A
run that sees a new member opens a spell, a leaver's open spell is closed on the run's day, a
renamed company (another name, same symbol) gets a new spell; nothing else is ever updated.
A leaver and a joiner of one run under the same name are a ticker change: the joiner's spell
names the old symbol in previous_symbol (each symbol's prices stay under its own symbol).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tasks.store.schema import universe_members as um
from tasks.universes.sources import Member

# "Which symbols were in KOSPI 200 on 2024-06-03": the documented as-of query.
AS_OF_SQL = """
SELECT symbol, name, market FROM universe_members
WHERE universe = :universe AND valid_from <= :day AND (valid_to IS NULL OR valid_to > :day)
ORDER BY symbol
"""


@dataclass(frozen=True)
class Change:
    universe: str
    symbol: str
    change: str  # joined, left, renamed, ticker change
    name: str | None
    day: dt.date
    detail: str = ""


def members_as_of(engine: Engine, universe: str, day: dt.date) -> list[str]:
    """The universe's members on day (AS_OF_SQL)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(AS_OF_SQL), {"universe": universe, "day": day})
        return [r.symbol for r in rows]


def open_spells(conn: Connection, universe: str) -> dict[str, sa.Row]:
    query = sa.select(um).where(um.c.universe == universe, um.c.valid_to.is_(None))
    return {r.symbol: r for r in conn.execute(query)}


def name_key(name: str | None) -> str:
    return " ".join((name or "").lower().replace(",", " ").replace(".", " ").split())


def record_members(
    conn: Connection,
    universe: str,
    members: list[Member],
    day: dt.date,
    source: str,
    flow_run_id: str | None,
) -> list[Change]:
    """Write what changed since the stored membership as validity rows; return the changes."""
    stored = open_spells(conn, universe)
    now = {m.symbol: m for m in members}
    latest = conn.execute(
        sa.select(sa.func.max(um.c.valid_from)).where(um.c.universe == universe)
    ).scalar()
    if latest is not None and day < latest:
        raise ValueError(
            f"{universe}: listing of {day} is older than the stored one of {latest}; "
            "membership is only ever written forward"
        )
    leavers = {s: r for s, r in stored.items() if s not in now}
    joiners = {s: m for s, m in now.items() if s not in stored}
    renamed = {
        s: m
        for s, m in now.items()
        if s in stored
        and m.name
        and stored[s].name
        and name_key(m.name) != name_key(stored[s].name)
    }
    old_by_name = {name_key(r.name): s for s, r in leavers.items() if r.name}
    changes: list[Change] = []
    for symbol in sorted(leavers) + sorted(renamed):
        conn.execute(
            um.update()
            .where(um.c.universe == universe, um.c.symbol == symbol, um.c.valid_to.is_(None))
            .values(valid_to=day)
        )
    for symbol, member in sorted(joiners.items()) + sorted(renamed.items()):
        previous = old_by_name.pop(name_key(member.name), None) if symbol in joiners else None
        # Left and back on the same day: its spell starting today opens again.
        reopened = conn.execute(
            um.update()
            .where(um.c.universe == universe, um.c.symbol == symbol, um.c.valid_from == day)
            .values(valid_to=None, name=member.name)
        ).rowcount
        if not reopened:
            conn.execute(
                um.insert().values(
                    universe=universe,
                    symbol=symbol,
                    valid_from=day,
                    name=member.name,
                    market=member.market,
                    previous_symbol=previous,
                    source=source,
                    flow_run_id=flow_run_id,
                )
            )
        if symbol in renamed:
            was = stored[symbol].name
            changes.append(Change(universe, symbol, "renamed", member.name, day, f"was {was}"))
        elif previous:
            changes.append(
                Change(universe, symbol, "ticker change", member.name, day, f"was {previous}")
            )
        else:
            changes.append(Change(universe, symbol, "joined", member.name, day))
    renamed_from = {c.detail.removeprefix("was ") for c in changes if c.change == "ticker change"}
    for symbol in sorted(leavers):
        detail = "ticker change" if symbol in renamed_from else ""
        changes.append(Change(universe, symbol, "left", leavers[symbol].name, day, detail))
    return changes


def fetch_list(engine: Engine, universe: str, day: dt.date, grace_days: int) -> dict:
    """What a price run of day fetches: the members, plus leavers still within their grace
    period; and the leavers (symbol -> the day they left) it must flag."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(um).where(um.c.universe == universe)).all()
    if not rows:
        return {"stored": False, "fetch": [], "left": {}}
    current = {
        r.symbol for r in rows if r.valid_from <= day and (r.valid_to is None or r.valid_to > day)
    }
    left: dict[str, dt.date] = {}
    for r in rows:
        if r.valid_to is not None and r.valid_to <= day and r.symbol not in current:
            left[r.symbol] = max(left.get(r.symbol, r.valid_to), r.valid_to)
    grace = {s for s, d in left.items() if (day - d).days <= grace_days}
    return {"stored": True, "fetch": sorted(current | grace), "left": left}
