"""yfinance's frames to store rows: daily_prices, corporate_actions and instruments (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SOURCE = "yahoo"
# yfinance's column names and ours in daily_prices.
YFINANCE_COLUMNS = {
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Adj Close": "adj_close",
    "Volume": "volume",
}


@dataclass
class History:
    """One symbol's download: its bars as yfinance's columns (a row per exchange-local trade
    date, days naive datetime64 at 00:00) and the metadata that came with them.

    Arrays, not a frame: a pandas frame per symbol cost a daily run's five-row charts more
    than reading them did. History.from_frame takes yfinance's own history() frame."""

    symbol: str
    days: np.ndarray
    columns: dict[str, np.ndarray]
    currency: str | None
    exchange_tz: str | None

    @classmethod
    def from_frame(
        cls, symbol: str, frame: pd.DataFrame, currency: str | None, exchange_tz: str | None
    ) -> History:
        """A history() frame (its index zone-aware or naive) as a History."""
        columns = {str(name): frame[name].to_numpy() for name in frame.columns}
        return cls(symbol, local_days(frame.index), columns, currency, exchange_tz)

    def __len__(self) -> int:
        return len(self.days)

    @property
    def frame(self) -> pd.DataFrame:
        """The bars as history() returns them (naive dates for its index)."""
        return pd.DataFrame(self.columns, index=pd.DatetimeIndex(self.days, name="Date"))


@dataclass
class Frames:
    """Rows ready for the store from one or more symbols."""

    prices: pd.DataFrame
    actions: pd.DataFrame
    instruments: list[dict] = field(default_factory=list)


def to_frames(histories: list[History], market: str, currency: str) -> Frames:
    """Turn yfinance's frames into daily_prices and corporate_actions rows (pure).

    All of a chunk's symbols at once: pandas costs about as much per call on five rows as on
    five thousand, so a daily run's symbol-at-a-time conversion cost more than its data."""
    kept = [h for h in histories if len(h)]
    if not kept:
        empty = pd.DataFrame(columns=["symbol", "trade_date"])
        return Frames(empty, pd.DataFrame(columns=["symbol", "action_date"]))
    lengths = [len(h) for h in kept]
    df = pd.DataFrame(concat_columns(kept), copy=False)
    # Each symbol, currency and trade date is one object shared by its rows: a chunk's symbols
    # trade on the same few thousand days, and an object per row was 190k of them per chunk.
    df["symbol"] = np.repeat(np.array([h.symbol for h in kept], dtype=object), lengths)
    codes, days = pd.factorize(np.concatenate([h.days for h in kept]))
    df["trade_date"] = np.asarray(pd.DatetimeIndex(days).date, dtype=object)[codes]
    df["currency"] = np.repeat(
        np.array([h.currency or currency for h in kept], dtype=object), lengths
    )
    priced = [old for old in YFINANCE_COLUMNS if old in df.columns]
    prices = drop_empty_rows(
        df[["symbol", "trade_date", *priced, "currency"]].rename(columns=YFINANCE_COLUMNS)
    ).reset_index(drop=True)
    prices["source"] = SOURCE
    actions = []
    for column, kind in (("Dividends", "dividend"), ("Stock Splits", "split")):
        if column in df.columns:
            hit = (df[column].fillna(0) != 0).to_numpy()
            actions.append(
                pd.DataFrame(
                    {
                        "symbol": df["symbol"].to_numpy()[hit],
                        "action_date": df["trade_date"].to_numpy()[hit],
                        "action_type": kind,
                        "value": df[column].to_numpy(dtype=float)[hit],
                        "source": SOURCE,
                    }
                )
            )
    present = set(prices["symbol"])
    instruments = [
        {
            "symbol": h.symbol,
            "market": market,
            "currency": h.currency or currency,
            "exchange_tz": h.exchange_tz,
        }
        for h in kept
        if h.symbol in present
    ]
    actions_frame = pd.concat(actions, ignore_index=True) if actions else pd.DataFrame()
    if not actions_frame.empty:
        actions_frame = actions_frame[actions_frame["symbol"].isin(present)]
    return Frames(prices, actions_frame.reset_index(drop=True), instruments)


def concat_columns(histories: list[History]) -> dict[str, np.ndarray]:
    """The histories' columns end to end, as pd.concat joins frames: a column some lack is
    NaN on their rows (and float)."""
    names = list(dict.fromkeys(name for h in histories for name in h.columns))
    joined = {}
    for name in names:
        parts = [h.columns.get(name) for h in histories]
        if any(part is None for part in parts):
            parts = [np.full(len(h), np.nan) if p is None else p for h, p in zip(histories, parts)]
        joined[name] = np.concatenate(parts)
    return joined


def local_days(index: pd.DatetimeIndex) -> np.ndarray:
    """A frame's dates as naive datetime64: a zone-aware index (yfinance's) at its local days."""
    return (index.tz_localize(None) if index.tz is not None else index).values


def drop_empty_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop rows where every price is missing: the other market's holidays in a mixed download."""
    priced = [c for c in frame.columns if c in ("open", "high", "low", "close", "adj_close")]
    if not priced:
        return frame
    return frame[frame[priced].notna().any(axis=1)]
