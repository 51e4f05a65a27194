"""tasks.market.frames: yfinance's frames to store rows, on small tables."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from tasks.market.frames import History, drop_empty_rows, to_frames

NY = "America/New_York"


def test_to_frames_from_a_small_table():
    index = pd.DatetimeIndex(["2024-06-06", "2024-06-07"]).tz_localize(NY)
    frame = pd.DataFrame(
        {
            "Open": [10.0, 11.0],
            "High": [11.0, 12.0],
            "Low": [9.5, 10.5],
            "Close": [10.5, 11.5],
            "Adj Close": [10.4, 11.5],
            "Volume": [100, 200],
            "Dividends": [0.0, 0.1],
            "Stock Splits": [0.0, 0.0],
        },
        index=index,
    )
    frames = to_frames([History.from_frame("KO", frame, "USD", NY)], "US", "USD")
    assert frames.prices.to_dict("records")[1] == {
        "trade_date": dt.date(2024, 6, 7),
        "symbol": "KO",
        "open": 11.0,
        "high": 12.0,
        "low": 10.5,
        "close": 11.5,
        "adj_close": 11.5,
        "volume": 200,
        "currency": "USD",
        "source": "yahoo",
    }
    assert frames.actions.to_dict("records") == [
        {
            "symbol": "KO",
            "action_date": dt.date(2024, 6, 7),
            "action_type": "dividend",
            "value": 0.1,
            "source": "yahoo",
        }
    ]


def test_to_frames_converts_a_chunk_at_once_and_leaves_out_unpriced_symbols():
    index = pd.DatetimeIndex(["2024-06-06", "2024-06-07"]).tz_localize(NY)
    priced = pd.DataFrame({"Close": [10.5, 11.5], "Volume": [100, 200]}, index=index)
    unpriced = pd.DataFrame({"Close": [None, None], "Volume": [0, 0]}, index=index)
    split = pd.DataFrame({"Close": [5.0], "Volume": [7], "Stock Splits": [2.0]}, index=index[:1])
    frames = to_frames(
        [
            History.from_frame("KO", priced, None, NY),
            History.from_frame("GONE", unpriced, "USD", NY),
            History.from_frame("SPLT", split, "USD", NY),
        ],
        "US",
        "USD",
    )
    assert frames.prices[["symbol", "trade_date", "close"]].values.tolist() == [
        ["KO", dt.date(2024, 6, 6), 10.5],
        ["KO", dt.date(2024, 6, 7), 11.5],
        ["SPLT", dt.date(2024, 6, 6), 5.0],
    ]
    assert [i["symbol"] for i in frames.instruments] == ["KO", "SPLT"]
    assert frames.actions[["symbol", "action_type", "value"]].values.tolist() == [
        ["SPLT", "split", 2.0]
    ]


def test_drop_empty_rows_keeps_partly_priced_rows():
    frame = pd.DataFrame({"open": [1.0, None, None], "close": [1.0, None, 2.0]})
    assert drop_empty_rows(frame).index.tolist() == [0, 2]
