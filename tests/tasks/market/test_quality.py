"""tasks.market.quality: the checks a day's prices must pass, on small tables."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from tasks.market.quality import check_prices, stale_symbols


def test_quality_flags_ohlc_duplicates_zero_volume_and_unexplained_jumps():
    d = [dt.date(2024, 6, i) for i in (3, 4, 5, 6, 6)]
    prices = pd.DataFrame(
        {
            "symbol": ["X"] * 5,
            "trade_date": d,
            "open": [10.0, 10.0, 10.0, 25.0, 25.0],
            "high": [11.0, 10.5, 10.5, 26.0, 26.0],
            "low": [9.0, 9.5, 9.5, 24.0, 24.0],
            "close": [10.0, 11.0, 10.0, 25.0, 25.0],  # Jun 4: close above high
            "volume": [100, 100, 0, 100, 100],
        }
    )
    clean, issues = check_prices(
        prices, pd.DataFrame(columns=["symbol", "action_date", "action_type"])
    )
    assert len(clean) == 4
    assert sorted((i.date.day, i.kind) for i in issues) == [
        (4, "ohlc"),
        (5, "zero_volume"),
        (6, "duplicate"),
        (6, "price_jump"),
    ]
    split = pd.DataFrame(
        {"symbol": ["X"], "action_date": [dt.date(2024, 6, 6)], "action_type": ["split"]}
    )
    assert "price_jump" not in {i.kind for i in check_prices(prices, split)[1]}


def test_stale_symbols_are_those_behind_the_last_session():
    latest = {"A": dt.date(2024, 6, 14), "B": dt.date(2024, 6, 13)}
    assert stale_symbols(latest, ["A", "B", "C"], dt.date(2024, 6, 14)) == {
        "B": dt.date(2024, 6, 13),
        "C": None,
    }
