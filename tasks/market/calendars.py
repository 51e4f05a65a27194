"""Trading calendars (exchange-calendars XNYS, XKRX): which sessions a run has to fetch."""

from __future__ import annotations

import datetime as dt
import os
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import exchange_calendars as xcals
import pandas as pd

from tasks import clock


@dataclass(frozen=True)
class Market:
    """One market: its calendar, its timezone, its currency."""

    code: str  # US, KR
    calendar: str  # exchange-calendars name
    tz: str
    currency: str


MARKETS = {
    "US": Market("US", "XNYS", "America/New_York", "USD"),
    "KR": Market("KR", "XKRX", "Asia/Seoul", "KRW"),
}


def market_of(symbol: str) -> Market:
    """The market a Yahoo symbol trades on (.KS KOSPI and .KQ KOSDAQ are Korea)."""
    return MARKETS["KR"] if symbol.upper().endswith((".KS", ".KQ")) else MARKETS["US"]


# A built calendar is kept on disk this long: building XKRX takes about 2 s (XNYS 0.25 s) of
# every run in a fresh process, loading it 0.05 s. Its sessions reach a year past the day it
# was built (exchange-calendars' default), its rules are the library's: the file is named
# after the library's and pandas' versions, so an upgrade builds anew.
CALENDAR_CACHE_DAYS = 7


def calendar_cache_dir() -> Path:
    """The cache_dir setting, else $XDG_CACHE_HOME/investflow, else ~/.cache/investflow."""
    from tasks.settings import get_settings

    if (configured := get_settings().cache_dir) is not None:
        return configured.expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "investflow"


@lru_cache(maxsize=4)
def trading_calendar(name: str) -> xcals.ExchangeCalendar:
    """The exchange calendar, once per process: from the disk cache when that is under
    CALENDAR_CACHE_DAYS old, else built (and cached, where the folder can be written)."""
    path = calendar_cache_dir() / f"{name}-xcals{xcals.__version__}-pandas{pd.__version__}.pickle"
    try:
        if clock.wall() - path.stat().st_mtime < CALENDAR_CACHE_DAYS * 86_400:
            with path.open("rb") as f:
                cached = pickle.load(f)  # a file this code wrote, in the user's own folder
            if isinstance(cached, xcals.ExchangeCalendar) and cached.name == name:
                return cached
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        pass  # none yet, unreadable or not ours: build it
    calendar = xcals.get_calendar(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_bytes(pickle.dumps(calendar))
        partial.replace(path)  # whole or not at all, whoever else writes it at once
    except OSError:
        pass  # a read-only home: every run builds it, as before the cache
    return calendar


def as_utc(moment: dt.datetime | str | None) -> dt.datetime:
    """A timezone-aware UTC moment; naive values are read as UTC, None means now."""
    if moment is None:
        return clock.now()
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def last_closed_session(market: Market, now: dt.datetime) -> dt.date:
    """The newest session whose close is at or before now."""
    cal = trading_calendar(market.calendar)
    local_day = now.astimezone(ZoneInfo(market.tz)).date()
    window = cal.sessions_in_range(
        max(cal.first_session, pd.Timestamp(local_day - dt.timedelta(days=20))),
        min(cal.last_session, pd.Timestamp(local_day)),
    )
    closes = cal.closes.loc[window]
    closed = closes[closes <= pd.Timestamp(now)]
    return closed.index[-1].date()


def sessions_between(market: Market, after: dt.date, through: dt.date) -> list[dt.date]:
    """Sessions strictly after `after` and up to `through`, inclusive."""
    if through <= after:
        return []
    cal = trading_calendar(market.calendar)
    start = max(pd.Timestamp(after + dt.timedelta(days=1)), cal.first_session)
    end = min(pd.Timestamp(through), cal.last_session)
    if end < start:
        return []
    return [s.date() for s in cal.sessions_in_range(start, end)]


def lookback_start(market: Market, last_stored: dt.date, sessions: int) -> dt.date:
    """The first of the last `sessions` sessions up to last_stored (re-fetched for corrections)."""
    if sessions <= 0:
        return last_stored + dt.timedelta(days=1)
    cal = trading_calendar(market.calendar)
    end = min(pd.Timestamp(last_stored), cal.last_session)
    window = cal.sessions_in_range(
        max(cal.first_session, end - pd.Timedelta(days=sessions * 3 + 14)), end
    )
    return window[-sessions].date() if len(window) >= sessions else window[0].date()


@dataclass(frozen=True)
class Fetch:
    """One symbol's request: sessions from start to end, end exclusive (as Yahoo takes it)."""

    symbol: str
    start: dt.date
    end: dt.date
    backfill: bool


def plan_fetches(
    market: Market,
    symbols: list[str],
    stored: dict[str, dt.date],
    through: dt.date,
    backfill_start: dt.date,
    lookback_sessions: int,
    force_start: bool = False,
) -> list[Fetch]:
    """Who needs fetching and from when; a symbol with no new session is left out."""
    plans = []
    # Where an up-to-date symbol starts depends only on its last stored day, which most share:
    # asked of the calendar once per day, not per symbol (a daily run's 500 cost 0.08 s).
    starts: dict[dt.date, dt.date | None] = {}
    for symbol in symbols:
        last = stored.get(symbol)
        if last is None or force_start:
            plans.append(Fetch(symbol, backfill_start, through + dt.timedelta(days=1), True))
            continue
        if last not in starts:
            behind = sessions_between(market, last, through)
            starts[last] = lookback_start(market, last, lookback_sessions) if behind else None
        if starts[last] is not None:
            plans.append(Fetch(symbol, starts[last], through + dt.timedelta(days=1), False))
    return plans


# A symbol brought up to date fetches a few sessions, a backfill up to ten years: a chunk holds
# this many of the former for each of the latter, so a daily run is a few chunks, not dozens.
INCREMENTAL_PER_BACKFILL = 20


def chunk_plans(plans: list[Fetch], size: int) -> list[list[Fetch]]:
    """Backfills `size` to a chunk, symbols fetched incrementally 20 times as many (pure)."""
    backfills = [p for p in plans if p.backfill]
    updates = [p for p in plans if not p.backfill]
    per = size * INCREMENTAL_PER_BACKFILL
    return [backfills[i : i + size] for i in range(0, len(backfills), size)] + [
        updates[i : i + per] for i in range(0, len(updates), per)
    ]
