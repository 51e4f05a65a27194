"""Binary COPY encoded by numpy (tasks/store/copy.py): what lands equals the frame, NULLs too."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.store.copy import copy_frame
from tasks.store.schema import UPSERT_SPECS, daily_prices

pytestmark = pytest.mark.integration


def test_every_row_layout_lands_as_given(pg_engine):
    # Rows of many layouts: symbol lengths, NULL adj_close / volume / currency, an empty
    # string, a non-ASCII symbol, dates either side of PostgreSQL's 2000-01-01 epoch.
    frame = pd.DataFrame(
        {
            "symbol": ["A", "BB", "CCC.KS", "D", "Ü", "A"],
            "trade_date": [dt.date(2020, 1, 1), dt.date(1999, 12, 31), dt.date(2024, 2, 29),
                           dt.date(2000, 1, 1), dt.date(1970, 1, 1), dt.date(2020, 1, 2)],
            "open": [1.5, 2, 3, 4, 5, 6], "high": [2, 3, 4, 5, 6.0, 7], "low": [1, 1, 1, 1, 1.0, 1],
            "close": [1.25, 2, 3, 4, 5, 6], "adj_close": [1.1, np.nan, 3, 4, 1e-300, 0.1],
            "volume": [1, None, 3, 2**40, 0, 5], "currency": ["USD", None, "KRW", "", "USD", "€"],
            "source": ["yahoo"] * 6,
        }
    )  # fmt: skip
    spec = UPSERT_SPECS["daily_prices"]
    with pg_engine.begin() as conn:
        copy_frame(conn.connection.driver_connection.cursor(), "daily_prices", spec,
                   list(spec.columns), frame)  # fmt: skip
    with pg_engine.connect() as conn:
        got = pd.DataFrame(conn.execute(sa.select(daily_prices)).mappings())
    got = got.set_index(["symbol", "trade_date"]).sort_index()
    want = frame.set_index(["symbol", "trade_date"]).sort_index()
    assert list(got.index) == list(want.index)
    for column in ("open", "high", "low", "close", "adj_close"):
        np.testing.assert_array_equal(got[column].astype(float), want[column].astype(float))
    assert [None if pd.isna(v) else int(v) for v in got["volume"]] == [
        None if pd.isna(v) else int(v) for v in want["volume"]
    ]
    assert got["currency"].tolist() == want["currency"].tolist()
