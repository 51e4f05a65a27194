"""Price quality checks: before writing (OHLC, duplicates, volume, jumps), after (freshness)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

# A daily move past this factor (either way) with no split that day is worth a human's look.
JUMP_FACTOR = 1.8


@dataclass(frozen=True)
class Issue:
    """One flagged row: which symbol and day, what kind, and the detail."""

    symbol: str
    date: dt.date | None
    kind: str  # ohlc, duplicate, zero_volume, jump, stale
    detail: str

    def __str__(self) -> str:
        return (
            f"{self.date} {self.kind}: {self.detail}"
            if self.date
            else f"{self.kind}: {self.detail}"
        )


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
    split_days = set()
    if actions is not None and not actions.empty:
        splits = actions[actions["action_type"] == "split"]
        split_days = set(zip(splits["symbol"], splits["action_date"], strict=True))
    prev = frame.groupby("symbol", sort=False)["close"].shift(1)
    ratio = frame["close"] / prev
    limit = math.log(JUMP_FACTOR)
    with np.errstate(divide="ignore", invalid="ignore"):
        jumped = np.abs(np.log(ratio.to_numpy(dtype=float))) > limit
    out = []
    for row, r in zip(
        frame.loc[jumped, ["symbol", "trade_date"]].itertuples(index=False),
        ratio[jumped],
        strict=True,
    ):
        if (row.symbol, row.trade_date) not in split_days:
            out.append(Issue(row.symbol, row.trade_date, "jump", f"close x{r:.2f}, no split"))
    return out


def stale_symbols(
    latest: dict[str, dt.date], symbols: list[str], last_session: dt.date
) -> dict[str, dt.date | None]:
    """Symbols whose newest stored session is older than the market's last one."""
    return {s: latest.get(s) for s in symbols if latest.get(s) is None or latest[s] < last_session}
