"""How far the market store is behind its sources: per market and macro group.

`make status` reads market_freshness; after each ingestion run the flows emit one
investflow.data.fresh or investflow.data.stale event per dataset (emit_freshness), which the
server's "alert on stale data" automation (deployments/alert_rules.py) listens for.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.market.calendars import MARKETS, Market, last_closed_session, market_of, sessions_between


@dataclass(frozen=True)
class Freshness:
    market: str
    symbols: int
    newest: dt.date | None  # the newest session any symbol of the market has
    last_closed: dt.date  # the market's last session whose close has passed
    behind: int  # sessions between newest and last_closed
    lagging: list[str]  # symbols whose own newest session is older than last_closed

    @property
    def fresh(self) -> bool:
        return self.newest is not None and self.behind == 0


def newest_per_symbol(engine: Engine) -> dict[str, dt.date]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT symbol, MAX(trade_date) FROM daily_prices GROUP BY symbol")
        ).all()
    return {symbol: dt.date.fromisoformat(str(newest)) for symbol, newest in rows}


def market_freshness(newest: dict[str, dt.date], now: dt.datetime) -> list[Freshness]:
    """Per market: its newest stored session, how many sessions behind, which symbols lag."""
    report = []
    for code, market in MARKETS.items():
        mine = {s: d for s, d in newest.items() if market_of(s).code == code}
        last_closed = last_closed_session(market, now)
        top = max(mine.values(), default=None)
        behind = len(sessions_between(market, top, last_closed)) if top else 0
        lagging = sorted(s for s, d in mine.items() if d < last_closed)
        report.append(Freshness(code, len(mine), top, last_closed, behind, lagging))
    return report


# Fresh means less than one day behind the last trading session. One session of slack
# covers the run that is about to bring it.
MAX_SESSIONS_BEHIND = 1


def freshness(market: Market, newest: dt.date | None, last_session: dt.date) -> dict:
    """Sessions between the newest stored one and the last closed one, and whether that's fresh."""
    behind = None if newest is None else len(sessions_between(market, newest, last_session))
    return {
        "newest_session": newest.isoformat() if newest else None,
        "last_session": last_session.isoformat(),
        "sessions_behind": behind,
        "behind": "no data" if behind is None else f"{behind} sessions",
        "fresh": behind is not None and behind <= MAX_SESSIONS_BEHIND,
    }


def emit_freshness(dataset: str, label: str, facts: dict):
    """One investflow.data.fresh or investflow.data.stale event about the dataset."""
    from prefect.events import emit_event

    return emit_event(
        event="investflow.data.fresh" if facts["fresh"] else "investflow.data.stale",
        resource={"prefect.resource.id": f"investflow.dataset.{dataset}",
                  "prefect.resource.name": label},
        payload=facts,
    )  # fmt: skip


def macro_facts(frequency: str, newest: dt.date | None, now: dt.datetime) -> dict | None:
    """A macro group's freshness: daily series by NYSE session, monthly by month.

    FRED publishes a daily rate the next business day, so the newest expected observation is
    the session before the last closed one; a monthly figure (CPI, payrolls) comes out in the
    following month, so two months back is the newest one can insist on. Other frequencies
    have no freshness target here (None).
    """
    nyse = MARKETS["US"]
    if frequency.startswith("Daily"):
        last = last_closed_session(nyse, now)
        expected = last_closed_session(nyse, dt.datetime.combine(last, dt.time(), dt.UTC))
        facts = freshness(nyse, newest, expected)
    elif frequency.startswith("Monthly"):
        month = now.date().replace(day=1)
        expected = (month - dt.timedelta(days=32)).replace(day=1)
        expected = (expected - dt.timedelta(days=1)).replace(day=1)
        behind = None
        if newest is not None:
            behind = max(0, (expected.year - newest.year) * 12 + expected.month - newest.month)
        facts = {
            "newest_session": newest.isoformat() if newest else None,
            "last_session": expected.isoformat(),
            "sessions_behind": behind,
            "behind": "no data" if behind is None else f"{behind} months",
            "fresh": behind is not None and behind <= MAX_SESSIONS_BEHIND,
        }
    else:
        return None
    return facts


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
        return {freq or "unknown": _day(day) for freq, day in conn.execute(query).all()}


def _day(value) -> dt.date | None:
    if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
        return value
    return dt.date.fromisoformat(str(value)[:10])
