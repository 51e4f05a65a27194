"""How far the market store is behind its sources: per market, against the exchange calendar."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.calendars import MARKETS, last_closed_session, market_of, sessions_between


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
