"""How far the store is behind its sources: the one definition of "fresh".

A dataset (a market's prices, a macro group) is fresh when it is at most MAX_SESSIONS_BEHIND
sessions (months, for monthly series) behind the newest one its source can have: one of slack
covers the run that is about to bring it. `make status`, the health page and the stale-data
alert all read `Freshness.verdict`; after each ingestion run the flows emit one
investflow.data.fresh or investflow.data.stale event per dataset (emit_freshness), which the
server's "alert on stale data" automation (deployments/alert_rules.py) listens for.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.clock import as_date
from tasks.market.calendars import MARKETS, Market, last_closed_session, market_of, sessions_between

MAX_SESSIONS_BEHIND = 1


@dataclass(frozen=True)
class Freshness:
    dataset: str  # "US prices", "macro (daily)"
    newest: dt.date | None  # the newest stored session (any symbol of a market)
    expected: dt.date | None  # the newest one the source can have; None: no target
    behind: int | None  # sessions (or months) between the two; None without data or target
    unit: str = "session"
    symbols: int = 0
    lagging: tuple[str, ...] = ()  # symbols whose own newest session is older than expected

    @property
    def fresh(self) -> bool | None:
        if self.expected is None:
            return None
        return self.behind is not None and self.behind <= MAX_SESSIONS_BEHIND

    @property
    def verdict(self) -> str:
        """What every place that shows freshness says: fresh, fresh but one behind, STALE."""
        if self.expected is None:
            return "no freshness target"
        if self.newest is None:
            return "STALE: nothing stored yet"
        if self.behind == 0:
            return "fresh"
        units = f"{self.behind} {self.unit}{'s' if self.behind != 1 else ''} behind"
        if self.fresh:
            return f"fresh ({units}: the next run brings it)"
        return f"STALE: {units}"

    def facts(self) -> dict:
        """The event payload (and the alert's words)."""
        return {
            "newest_session": self.newest.isoformat() if self.newest else None,
            "last_session": self.expected.isoformat() if self.expected else None,
            "sessions_behind": self.behind,
            "behind": "no data" if self.behind is None else f"{self.behind} {self.unit}s",
            "fresh": self.fresh,
            "verdict": self.verdict,
        }


def freshness(market: Market, newest: dt.date | None, last_session: dt.date) -> dict:
    """A market's facts: sessions between the newest stored one and the last closed one."""
    behind = None if newest is None else len(sessions_between(market, newest, last_session))
    return Freshness(f"{market.code} prices", newest, last_session, behind).facts()


def market_freshness(engine: Engine, now: dt.datetime) -> list[Freshness]:
    """Per market: its newest stored session, how many sessions behind, which symbols lag."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT symbol, MAX(trade_date) FROM daily_prices GROUP BY symbol")
        ).all()
    newest = {symbol: as_date(day) for symbol, day in rows}
    report = []
    for code, market in MARKETS.items():
        mine = {s: d for s, d in newest.items() if market_of(s).code == code}
        last_closed = last_closed_session(market, now)
        top = max(mine.values(), default=None)
        behind = len(sessions_between(market, top, last_closed)) if top else None
        lagging = tuple(sorted(s for s, d in mine.items() if d < last_closed))
        report.append(
            Freshness(f"{code} prices", top, last_closed, behind, "session", len(mine), lagging)
        )
    return report


def macro_group(frequency: str) -> str:
    return frequency.split(",")[0].lower()


def macro_freshness_of(frequency: str, newest: dt.date | None, now: dt.datetime) -> Freshness:
    """A macro group's freshness: daily series by NYSE session, monthly by month.

    FRED publishes a daily rate the next business day, so the newest expected observation is
    the session before the last closed one; a monthly figure (CPI, payrolls) comes out in the
    following month, so two months back is the newest one can insist on. Other frequencies
    have no freshness target here.
    """
    dataset = f"macro ({macro_group(frequency)})"
    if frequency.startswith("Daily"):
        nyse = MARKETS["US"]
        last = last_closed_session(nyse, now)
        expected = last_closed_session(nyse, dt.datetime.combine(last, dt.time(), dt.UTC))
        behind = None if newest is None else len(sessions_between(nyse, newest, expected))
        return Freshness(dataset, newest, expected, behind)
    if frequency.startswith("Monthly"):
        month = now.date().replace(day=1)
        expected = (month - dt.timedelta(days=32)).replace(day=1)
        expected = (expected - dt.timedelta(days=1)).replace(day=1)
        behind = None
        if newest is not None:
            behind = max(0, (expected.year - newest.year) * 12 + expected.month - newest.month)
        return Freshness(dataset, newest, expected, behind, "month")
    return Freshness(dataset, newest, None, None)


def macro_facts(frequency: str, newest: dt.date | None, now: dt.datetime) -> dict | None:
    """The event payload of a macro group with a freshness target, else None."""
    found = macro_freshness_of(frequency, newest, now)
    return found.facts() if found.expected is not None else None


def macro_freshness(engine: Engine, now: dt.datetime) -> list[Freshness]:
    return [macro_freshness_of(f, d, now) for f, d in sorted(macro_newest(engine).items())]


def macro_newest(engine: sa.Engine) -> dict[str, dt.date]:
    """The newest stored observation per FRED frequency (the macro groups)."""
    from tasks.store.schema import macro_observations as obs
    from tasks.store.schema import macro_series as series

    query = (
        sa.select(series.c.frequency, sa.func.max(obs.c.obs_date))
        .join(series, series.c.series_id == obs.c.series_id)
        .group_by(series.c.frequency)
    )
    with engine.connect() as conn:
        return {freq or "unknown": as_date(day) for freq, day in conn.execute(query).all()}


def emit_freshness(dataset: str, label: str, facts: dict):
    """One investflow.data.fresh or investflow.data.stale event about the dataset."""
    from prefect.events import emit_event

    return emit_event(
        event="investflow.data.fresh" if facts["fresh"] else "investflow.data.stale",
        resource={"prefect.resource.id": f"investflow.dataset.{dataset}",
                  "prefect.resource.name": label},
        payload=facts,
    )  # fmt: skip
