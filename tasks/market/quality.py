"""Price quality checks: before writing (calendar, OHLC, volume, jumps), after (freshness).

Every Issue becomes a quality_flags row (tasks.store.ledger), once per symbol, day and kind.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.market.calendars import Market, sessions_between
from tasks.store.ledger import Issue

# A daily move past this factor (either way) with no corporate action that day is worth a look.
JUMP_FACTOR = 1.8
# adj_close / close only moves on an ex-dividend or split day; a move past this elsewhere means
# an action the source did not report (or a broken adjustment).
ADJ_RATIO_JUMP = 0.001


@dataclass
class Checked:
    """A chunk's rows after the checks that need nothing stored: the rows to write, the issues
    found, each symbol's first and last day among them, and what they were checked against."""

    prices: pd.DataFrame
    issues: list[Issue]
    spans: pd.DataFrame | None
    starts: dict[str, dt.date]
    through: dt.date


def check_chunk(
    prices: pd.DataFrame,
    actions: pd.DataFrame,
    market: Market,
    starts: dict[str, dt.date],
    through: dt.date,
) -> Checked:
    """Every check a chunk's rows get before the store's own (calendar, then OHLC, volume and
    jumps), and their date spans. Pure: the fetch task runs it on a chunk while the chunk
    before it is written, so the writing thread, the backfill's critical path, does not."""
    after = min(starts.values()) - dt.timedelta(days=1)
    kept, issues = calendar_issues(
        prices, set(sessions_between(market, after, through)), starts, through
    )
    clean, more = check_prices(kept, actions)
    return Checked(clean, issues + more, date_spans(clean), dict(starts), through)


def check_prices(
    prices: pd.DataFrame, actions: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, list[Issue]]:
    """Return the rows to write and the issues found; only duplicate dates are dropped.

    Rows that cannot be stored at all (NaN or negative prices, high < low) are left for the
    store's own checks, which set them aside in rejected_rows with their reason.
    """
    if prices.empty:
        return prices, []
    issues: list[Issue] = []
    if in_order(prices):  # as a chart's rows come: nothing to sort, no day twice
        frame = prices
    else:
        frame = prices.sort_values(["symbol", "trade_date"], kind="stable")
        dup = frame.duplicated(["symbol", "trade_date"], keep="last")
        for row in frame.loc[dup, ["symbol", "trade_date"]].itertuples(index=False):
            issues.append(Issue(row.symbol, row.trade_date, "duplicate", "kept the last copy"))
        frame = frame[~dup]

    o, h, lo, c = (frame[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    with np.errstate(invalid="ignore"):
        bad = (h < np.maximum(o, c)) | (lo > np.minimum(o, c))
    for row in frame.loc[bad, ["symbol", "trade_date", "open", "high", "low", "close"]].itertuples(
        index=False
    ):
        issues.append(
            Issue(
                row.symbol,
                row.trade_date,
                "ohlc",
                f"open {row.open} / close {row.close} outside low {row.low} - high {row.high}",
            )
        )

    if "volume" in frame.columns:
        zero = frame["volume"].fillna(0).to_numpy() == 0
        for row in frame.loc[zero, ["symbol", "trade_date"]].itertuples(index=False):
            issues.append(Issue(row.symbol, row.trade_date, "zero_volume", "no shares traded"))

    issues.extend(_jumps(frame, actions))
    return frame, issues


def _jumps(frame: pd.DataFrame, actions: pd.DataFrame | None) -> list[Issue]:
    action_days = set()
    if actions is not None and not actions.empty:
        action_days = set(zip(actions["symbol"], actions["action_date"], strict=True))
    by_symbol = frame.groupby("symbol", sort=False)
    out = []
    ratio = frame["close"] / by_symbol["close"].shift(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        jumped = np.abs(np.log(ratio.to_numpy(dtype=float))) > math.log(JUMP_FACTOR)
    for row, r in zip(
        frame.loc[jumped, ["symbol", "trade_date"]].itertuples(index=False),
        ratio[jumped],
        strict=True,
    ):
        if (row.symbol, row.trade_date) not in action_days:
            why = f"close x{r:.2f}, no corporate action"
            out.append(Issue(row.symbol, row.trade_date, "price_jump", why))
    if "adj_close" in frame.columns:
        adj = pd.to_numeric(frame["adj_close"], errors="coerce") / frame["close"]
        moved = (adj / adj.groupby(frame["symbol"], sort=False).shift(1) - 1).abs()
        for row, m in zip(
            frame.loc[moved > ADJ_RATIO_JUMP, ["symbol", "trade_date"]].itertuples(index=False),
            moved[moved > ADJ_RATIO_JUMP],
            strict=True,
        ):
            if (row.symbol, row.trade_date) not in action_days:
                out.append(
                    Issue(
                        row.symbol,
                        row.trade_date,
                        "adj_ratio_jump",
                        f"adj_close/close moved {m:.3%} with no dividend or split",
                    )
                )
    return out


def calendar_issues(
    prices: pd.DataFrame, sessions: set[dt.date], starts: dict[str, dt.date], through: dt.date
) -> tuple[pd.DataFrame, list[Issue]]:
    """Drop bars on days that are not sessions, and flag them and sessions the source lacks.

    sessions: the calendar's sessions over the fetched range; starts: each symbol's first
    asked date. A session before a symbol's first bar is not a gap (it was not listed yet).
    """
    if prices.empty:
        return prices, []
    issues = []
    # As numpy days: the per-symbol Python sets and scans of every session cost a backfill
    # about a second (20 chunks of 25 symbols x 2,500 sessions).
    days = day_array(prices["trade_date"])
    calendar = np.array(sorted(sessions), dtype="datetime64[D]")
    off = ~_among(days, calendar)
    for row in prices.loc[off].itertuples(index=False):
        issues.append(
            Issue(
                row.symbol,
                row.trade_date,
                "non_session_bar",
                f"a bar on a day the calendar has no session (close {row.close}, "
                f"volume {getattr(row, 'volume', None)}); not stored",
            )
        )
    kept = prices[~off] if off.any() else prices  # no copy of a whole chunk for nothing
    days = days[~off]
    codes, symbols = pd.factorize(kept["symbol"])  # in order of appearance
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(symbols) + 1))
    last = np.datetime64(through, "D")
    for i, symbol in enumerate(symbols):
        dates = np.sort(days[order[bounds[i] : bounds[i + 1]]])
        first = dates[0]
        if symbol in starts:
            first = max(np.datetime64(starts[symbol], "D"), first)
        window = calendar[(calendar >= first) & (calendar <= last)]
        for day in window[~_among(window, dates)].astype(object):
            issues.append(
                Issue(symbol, day, "missing_session", "the calendar has a session; no bar")
            )
    return kept, issues


def _among(days: np.ndarray, sorted_days: np.ndarray) -> np.ndarray:
    """Which of days are in sorted_days (np.isin sorts both sides again: a third of the
    checks' time)."""
    if not len(sorted_days):
        return np.zeros(len(days), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_days, days), len(sorted_days) - 1)
    return sorted_days[at] == days


def in_order(prices: pd.DataFrame) -> bool:
    """Whether prices are sorted by symbol, then date, with no (symbol, day) twice: sorting a
    chunk that is (and finding its duplicates) cost a backfill about half a second."""
    codes, names = pd.factorize(prices["symbol"])
    if (codes < 0).any() or list(names) != sorted(names):
        return False
    days = day_array(prices["trade_date"])
    if np.isnat(days).any():
        return False
    step = np.diff(codes)
    return not ((step < 0).any() or ((step == 0) & (np.diff(days) <= np.timedelta64(0))).any())


def day_array(column: pd.Series) -> np.ndarray:
    """A date column as datetime64[D]; Python dates converted once per distinct day."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return column.to_numpy(dtype="datetime64[D]")
    codes, uniques = pd.factorize(column)
    return np.array(list(uniques), dtype="datetime64[D]")[codes]


def date_spans(prices: pd.DataFrame) -> pd.DataFrame | None:
    """Each symbol's first and last trade_date (as dates), indexed by symbol in order; None for
    no rows. With numpy: pandas' groupby min and max of date objects took a backfill 0.3 s."""
    if not len(prices):
        return None
    codes, names = pd.factorize(prices["symbol"])
    days = day_array(prices["trade_date"]).view(np.int64)
    low = np.full(len(names), np.iinfo(np.int64).max)
    high = np.full(len(names), np.iinfo(np.int64).min)
    np.minimum.at(low, codes, days)
    np.maximum.at(high, codes, days)
    spans = pd.DataFrame(
        {
            "min": low.view("datetime64[D]").astype(object),
            "max": high.view("datetime64[D]").astype(object),
        },
        index=pd.Index(names, name="symbol"),
    )
    return spans.sort_index()


def stale_symbols(
    latest: dict[str, dt.date], symbols: list[str], last_session: dt.date
) -> dict[str, dt.date | None]:
    """Symbols whose newest stored session is older than the market's last one."""
    return {s: latest.get(s) for s in symbols if latest.get(s) is None or latest[s] < last_session}
