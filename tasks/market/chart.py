"""Yahoo's chart answer to daily bars, read the way yfinance 1.7's history() reads it.

fetch_history asks through yfinance's own client (YfData: its cookie, crumb, consent and 429
handling, over curl_cffi) for the URL and query history() would send, and reads the answer
here: history() spends 20-60 ms of pandas work per symbol (time zones, event merges, its
fixes for intraday quirks), which was most of a 500-symbol backfill's time and nearly all of a
daily run's. What history() does to a daily chart with auto_adjust=False, actions=True,
repair=False and keepna=False is done below with numpy, in its order, and
tests/tasks/market/test_chart.py holds the two to the same rows on the same answers.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np
import pandas as pd
from yfinance.exceptions import YFPricesMissingError

from tasks.market.frames import History

CHART_URL = "https://query2.finance.yahoo.com/v8/finance/chart/"  # yfinance's _BASE_URL_
PRICES = ("Open", "High", "Low", "Close", "Adj Close")
HOUR_NS = 3_600 * 10**9
DAY_NS = 24 * HOUR_NS


def chart_query(start, end, tz: str) -> dict:
    """history()'s query for a daily range: midnight of start and of end (exclusive) in the
    exchange's time zone, as epoch seconds; its events and flags as it spells them."""
    return {
        "period1": midnight(start, tz),
        "period2": midnight(end, tz),
        "interval": "1d",
        "includePrePost": False,
        "events": "div,splits,capitalGains",
    }


def midnight(day, tz: str) -> int:
    """Epoch seconds of a day's 00:00 in tz (a date, or ISO text as history() takes it)."""
    return _midnight(str(day)[:10], tz)


@lru_cache(maxsize=256)
def _midnight(day: str, tz: str) -> int:
    # A run's symbols share a few ranges: pandas' time zone work once per day, not per symbol.
    return int(pd.Timestamp(dt.datetime.strptime(day, "%Y-%m-%d")).tz_localize(tz).timestamp())


def read_chart(symbol: str, payload, query: dict, tz: str) -> History:
    """One symbol's daily bars and actions from a chart answer, as history() returns them.

    Raises what history() raises for an answer without prices (YFPricesMissingError, with
    Yahoo's own reason when it gave one) and lets a malformed one fail as it would."""
    result = chart_result(symbol, payload, query, tz)
    meta = result.get("meta") or {}
    exchange_tz = meta["exchangeTimezoneName"]
    days, columns = daily_bars(result, query["period2"], exchange_tz)
    return History(symbol, days, columns, meta.get("currency"), exchange_tz or tz)


def chart_result(symbol: str, payload, query: dict, tz: str) -> dict:
    """The answer's one result, or history()'s error for an answer that has no prices."""
    if not isinstance(payload, dict) or "status_code" in payload:
        raise YFPricesMissingError(symbol, asked(query, tz))
    chart = payload.get("chart")
    if chart and chart.get("error"):
        raise YFPricesMissingError(symbol, asked(query, tz), chart["error"]["description"])
    if not chart or not chart.get("result") or not chart["result"][0]["indicators"]["quote"][0]:
        raise YFPricesMissingError(symbol, asked(query, tz))
    return chart["result"][0]


def asked(query: dict, tz: str) -> str:
    """history()'s note of the range asked, for its 'no price data found' message."""
    days = [
        pd.Timestamp(query[k], unit="s", tz="UTC").tz_convert(tz).date()
        for k in ("period1", "period2")
    ]
    return f" (1d {days[0]} -> {days[1]})"


def daily_bars(result: dict, period2: int, tz: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """history()'s frame as arrays: a row per exchange-local trade date (00:00, naive), and
    yfinance's price columns, Volume as int64, Dividends and Stock Splits merged onto their
    rows."""
    quote = result["indicators"]["quote"][0]
    stamps = np.asarray(result["timestamp"], dtype=np.int64)
    columns = {
        name: floats(quote[key]) for name, key in zip(PRICES[:4], ("open", "high", "low", "close"))
    }
    adjusted = result["indicators"].get("adjclose")
    columns["Adj Close"] = floats(adjusted[0]["adjclose"]) if adjusted else columns["Close"]
    columns["Volume"] = floats(quote["volume"])
    order = np.argsort(stamps, kind="stable")
    stamps = stamps[order]
    columns = {k: v[order] for k, v in columns.items()}
    if len(stamps) and stamps[-1] >= period2:  # Yahoo appends the live price past the end
        stamps, columns = stamps[:-1], {k: v[:-1] for k, v in columns.items()}
    days = local_days(stamps, tz, dst_fix=True)
    keep = one_row_a_day(days)
    days, columns = days[keep], {k: v[keep] for k, v in columns.items()}
    days, columns = merge_events(days, columns, result.get("events") or {}, period2, tz)
    columns["Volume"] = np.nan_to_num(columns["Volume"], nan=0.0).astype(np.int64)
    empty = empty_rows(columns)
    if empty.any():
        days, columns = days[~empty], {k: v[~empty] for k, v in columns.items()}
    return days, columns


def floats(values) -> np.ndarray:
    """A JSON list of numbers and nulls as float64, null as NaN."""
    return np.array(values, dtype=np.float64)


def local_days(stamps: np.ndarray, tz: str, dst_fix: bool = False) -> np.ndarray:
    """Each epoch second's date in tz, as datetime64[ns] at 00:00. With dst_fix, a bar stamped
    22:00 or 23:00 sharp counts for the next day, as history() takes it (Yahoo's DST slip).
    The array may be shared (read-only): index it, never write to it."""
    if not len(stamps):
        return np.empty(0, "datetime64[ns]")
    return _local_days(np.ascontiguousarray(stamps, dtype=np.int64).tobytes(), tz, dst_fix)


@lru_cache(maxsize=64)
def _local_days(stamps: bytes, tz: str, dst_fix: bool) -> np.ndarray:
    # A run's symbols trade the same sessions, so their charts carry the same stamps: the
    # zone conversion (most of reading a five-bar chart) once per set of stamps, not per symbol.
    seconds = np.frombuffer(stamps, dtype=np.int64)
    local = pd.DatetimeIndex(seconds * 10**9, tz="UTC").tz_convert(tz).tz_localize(None)
    ns = local.asi8
    if dst_fix:
        of_day = ns % DAY_NS
        slipped = (of_day % HOUR_NS == 0) & (of_day // HOUR_NS >= 22)
        ns = ns + np.where(slipped, DAY_NS - of_day, 0)
    days = (ns - ns % DAY_NS).astype("datetime64[ns]")
    days.flags.writeable = False
    return days


def one_row_a_day(days: np.ndarray) -> np.ndarray:
    """Which rows history() keeps: of the last two on one day the later (Yahoo's live row),
    then the first of any other day's copies."""
    keep = np.ones(len(days), dtype=bool)
    if len(days) > 1 and days[-1] == days[-2]:
        keep[-2] = False
    rows = np.flatnonzero(keep)
    kept = days[rows]
    if len(kept) > 1 and (kept[1:] >= kept[:-1]).all():  # in order, as the bars were sorted
        seen = np.concatenate([[False], kept[1:] == kept[:-1]])
    else:  # a DST slip moved a bar past the next one
        seen = pd.Index(kept).duplicated(keep="first")
    keep[rows[seen]] = False
    return keep


def merge_events(days, columns: dict, events: dict, period2: int, tz: str):
    """Dividends (summed) and splits (multiplied) onto the row of their day, or of the last
    session before it; an event after the last row gets a row of its own, as in history()."""
    found = {}
    if len(days):  # history() merges nothing into an empty frame
        for name, key, field in (
            ("Dividends", "dividends", "amount"),
            ("Stock Splits", "splits", None),
        ):
            if events.get(key):
                found[name] = event_days(events[key].values(), field, days[0], period2, tz)
    later = [when[when > days[-1]] for when, _ in found.values()]
    if later and sum(map(len, later)):
        extra = np.unique(np.concatenate(later))
        at = np.searchsorted(days, extra)
        days = np.insert(days, at, extra)
        columns = {
            k: np.insert(v, at, 0.0 if k == "Volume" else np.nan) for k, v in columns.items()
        }
    for name in ("Dividends", "Stock Splits"):
        values = np.zeros(len(days))
        if name in found:
            when, amount = found[name]
            row = np.searchsorted(days, when, side="right") - 1
            if name == "Dividends":
                np.add.at(values, row, amount)
            else:
                values[row] = 1.0
                np.multiply.at(values, row, amount)
        columns[name] = values
    return days, columns


def event_days(items, field: str | None, first: np.datetime64, period2: int, tz: str):
    """Events' local days and values (a split's numerator over its denominator), those from
    the first row's day up to the end (exclusive) only."""
    items = list(items)
    stamps = np.array([int(e["date"]) for e in items], dtype=np.int64)
    if field is None:
        values = np.array([e["numerator"] / e["denominator"] for e in items], dtype=np.float64)
    else:
        values = np.array([e[field] for e in items], dtype=np.float64)
    days = local_days(stamps, tz)
    keep = (stamps < period2) & (days >= first)
    order = np.argsort(stamps[keep], kind="stable")
    return days[keep][order], values[keep][order]


def empty_rows(columns: dict) -> np.ndarray:
    """keepna=False: rows where every price, the volume and every action is missing or 0."""
    empty = np.ones(len(columns["Volume"]), dtype=bool)
    for values in columns.values():
        empty &= np.isnan(values) | (values == 0) if values.dtype.kind == "f" else values == 0
    return empty
