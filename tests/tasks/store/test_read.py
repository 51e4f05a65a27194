"""Reading the store back (tasks/store/read.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from fredapi import Fred

from flows.macro import ingest_macro
from tasks.store import read as store_read
from tasks.store.read import read_macro, read_prices, read_prices_wide
from tasks.store.schema import daily_prices
from tasks.store.upsert import upsert_frame
from tests.fakes.fred import FakeFred

pytestmark = pytest.mark.integration

D = dt.date
SYMBOLS = ["MSFT", "AAPL", "005930.KS", "BRK-B"]  # not in sorted order, one with a suffix


def stored_prices(engine) -> pd.DataFrame:
    """Four symbols over 300 calendar days, with a NULL adj_close and volume here and there."""
    rng = np.random.default_rng(3)
    rows = []
    for i, symbol in enumerate([*SYMBOLS, "NOTASKED"]):
        for d in range(300):
            day = D(2020, 1, 1) + dt.timedelta(days=d)
            if day.weekday() >= 5 or (symbol == "BRK-B" and d < 40):  # listed later
                continue
            close = float(100 + 10 * i + rng.normal(0, 2))
            rows.append(
                dict(symbol=symbol, trade_date=day, open=close - 0.5, high=close + 1,
                     low=close - 1, close=close,
                     adj_close=None if d % 13 == 5 else close * 0.9,
                     volume=None if d % 11 == 7 else int(rng.integers(1, 10**9)),
                     currency="USD", source="yahoo")
            )  # fmt: skip
    frame = pd.DataFrame(rows)
    upsert_frame(engine, "daily_prices", frame)
    actions = pd.DataFrame(
        [
            dict(symbol="MSFT", action_date=D(2020, 3, 2), action_type="dividend", value=0.51),
            dict(symbol="MSFT", action_date=D(2020, 6, 1), action_type="dividend", value=0.51),
            dict(symbol="MSFT", action_date=D(2020, 8, 3), action_type="split", value=2.0),
            dict(symbol="AAPL", action_date=D(2020, 5, 11), action_type="dividend", value=0.82),
            # before BRK-B's first stored session: adjusts nothing that is stored
            dict(symbol="BRK-B", action_date=D(2020, 1, 3), action_type="dividend", value=1.0),
            dict(symbol="NOTASKED", action_date=D(2020, 5, 1), action_type="dividend", value=5.0),
        ]
    ).assign(source="yahoo")
    upsert_frame(engine, "corporate_actions", actions)
    return frame


def test_raw_prices_equal_the_stored_rows(store):
    stored_prices(store)
    got = read_prices(store, SYMBOLS, "2020-02-01", D(2020, 9, 30))
    with store.connect() as conn:
        want = pd.DataFrame(
            conn.execute(
                sa.select(daily_prices).where(
                    daily_prices.c.symbol.in_(SYMBOLS),
                    daily_prices.c.trade_date.between(D(2020, 2, 1), D(2020, 9, 30)),
                )
            ).mappings()
        )
    assert list(got.columns) == ["symbol", "trade_date", "open", "high", "low", "close",
                                 "adj_close", "volume"]  # fmt: skip
    assert list(dict.fromkeys(got["symbol"])) == sorted(SYMBOLS)
    assert len(got) == len(want) > 0
    want = want.sort_values(["symbol", "trade_date"])
    assert got["symbol"].astype(str).tolist() == want["symbol"].tolist()
    assert got["trade_date"].dt.date.tolist() == want["trade_date"].tolist()
    for column in ("open", "high", "low", "close", "adj_close", "volume"):
        expected = pd.to_numeric(want[column]).astype(float).to_numpy()
        np.testing.assert_array_equal(got[column].to_numpy(), expected, err_msg=column)
    assert got["adj_close"].isna().any() and got["volume"].isna().any()  # NULLs came back NaN


def test_adjusted_prices_equal_an_adjustment_from_the_corporate_actions(store):
    frame = stored_prices(store)
    got = read_prices(store, SYMBOLS, "2020-02-01", "2020-09-30", adjusted=True)
    # Independently, row by row: each dividend after a session scales it by
    # 1 - amount / (the close of the last stored session before the ex-date).
    closes = {(r.symbol, r.trade_date): r.close for r in frame.itertuples()}
    dividends = [(s, day, amount) for s, day, kind, amount in [
        ("MSFT", D(2020, 3, 2), "dividend", 0.51), ("MSFT", D(2020, 6, 1), "dividend", 0.51),
        ("AAPL", D(2020, 5, 11), "dividend", 0.82)]]  # fmt: skip
    for row in got.itertuples():
        day = row.trade_date.date()
        factor = 1.0
        for symbol, ex, amount in dividends:
            if symbol == row.symbol and day < ex:
                prev = max(d for (s, d) in closes if s == symbol and d < ex)
                factor *= 1 - amount / closes[(symbol, prev)]
        raw = closes[(row.symbol, day)]
        assert row.close == pytest.approx(raw * factor, rel=1e-12), (row.symbol, day)
        assert row.open == pytest.approx((raw - 0.5) * factor, rel=1e-12)
    # A split is already in the stored basis (Yahoo's), so it changes nothing; sessions after
    # the last dividend, and symbols whose only dividend precedes their data, are as stored.
    raw = read_prices(store, SYMBOLS, "2020-02-01", "2020-09-30")
    late = got["trade_date"] >= "2020-06-01"
    np.testing.assert_array_equal(got.loc[late, "close"], raw.loc[late, "close"])
    brk = got["symbol"] == "BRK-B"
    np.testing.assert_array_equal(got.loc[brk, "close"], raw.loc[brk, "close"])
    assert (got.loc[~late & (got["symbol"] == "MSFT"), "close"]
            < raw.loc[~late & (raw["symbol"] == "MSFT"), "close"]).all()  # fmt: skip


def test_adjusted_prices_do_not_depend_on_the_range_read(store):
    """A range that starts the day before an ex-date (the session before it is not read) or
    ends before later dividends scales each session as a read of the whole range does."""
    stored_prices(store)
    whole = read_prices(store, SYMBOLS, "2020-01-01", "2020-12-31", adjusted=True)
    for start, end in [("2020-03-01", "2020-12-31"), ("2020-01-01", "2020-04-30"),
                       ("2020-05-10", "2020-05-20")]:  # fmt: skip
        part = read_prices(store, SYMBOLS, start, end, adjusted=True)
        want = whole[whole["trade_date"].between(start, end)].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, want, check_exact=False, rtol=1e-13)


def test_wide_prices_are_dates_by_symbols(store):
    stored_prices(store)
    wide = read_prices_wide(store, ["AAPL", "BRK-B", "NOSUCH"], "2020-01-01", "2020-03-31")
    long = read_prices(store, ["AAPL", "BRK-B"], "2020-01-01", "2020-03-31")
    assert list(wide.columns) == ["AAPL", "BRK-B"]
    assert wide.index.is_monotonic_increasing
    aapl = long[long["symbol"] == "AAPL"].set_index("trade_date")["close"]
    pd.testing.assert_series_equal(wide["AAPL"], aapl, check_names=False)
    assert wide["BRK-B"].isna().sum() > 0  # before it was listed


def test_bad_arguments_are_named(store):
    with pytest.raises(ValueError, match="not a date: 'soon'"):
        read_prices(store, ["AAPL"], "soon")
    with pytest.raises(ValueError, match="after end"):
        read_prices(store, ["AAPL"], "2021-01-01", "2020-01-01")
    with pytest.raises(ValueError, match="'vwap'"):
        read_prices_wide(store, ["AAPL"], field="vwap")
    assert read_prices(store, ["NOSUCH"]).empty


def test_postgres_copy_decoded_as_it_comes_in_any_blocks(pg_engine, monkeypatch):
    """The COPY is decoded as its bytes arrive: blocks that end mid-header or mid-row, and
    a server order that needs the sort, give the same frame."""
    stored_prices(pg_engine)
    whole = read_prices(pg_engine, SYMBOLS, "2020-02-01", "2020-09-30", adjusted=True)
    blocks = psycopg.Copy.__iter__

    def small_blocks(copy):
        for block in blocks(copy):
            for at in range(0, len(block), 7):  # 7 bytes: splits the header and every row
                yield block[at : at + 7]

    monkeypatch.setattr(psycopg.Copy, "__iter__", small_blocks)
    pd.testing.assert_frame_equal(
        read_prices(pg_engine, SYMBOLS, "2020-02-01", "2020-09-30", adjusted=True), whole
    )
    newest_first = store_read._PG_PRICES.replace("trade_date OFFSET", "trade_date DESC OFFSET")
    monkeypatch.setattr(store_read, "_PG_PRICES", newest_first)
    pd.testing.assert_frame_equal(
        read_prices(pg_engine, SYMBOLS, "2020-02-01", "2020-09-30", adjusted=True), whole
    )
    assert read_prices(pg_engine, ["NOSUCH"]).empty


KEY = "abcdef0123456789abcdef0123456789"
MONTHS = [D(2023, m, 1) for m in range(1, 13)]


def test_macro_as_of_a_day_equals_what_fred_served_that_day(store, monkeypatch):
    with FakeFred(KEY) as fake:
        fake.add_series("CPIAUCSL", {d: 300.0 + i for i, d in enumerate(MONTHS)}, lag_days=45)
        fake.revise("CPIAUCSL", D(2023, 3, 1), "302.7", on=D(2023, 6, 14))
        fake.revise("CPIAUCSL", D(2023, 3, 1), "302.2", on=D(2024, 2, 10))
        fake.revise("CPIAUCSL", D(2023, 7, 1), ".", on=D(2023, 9, 20))  # withdrawn
        fake.today = D(2024, 6, 1)
        monkeypatch.setenv("INVESTFLOW_FRED_BASE_URL", fake.url)
        monkeypatch.setenv("INVESTFLOW_FRED_API_KEY", KEY)
        state = ingest_macro.with_options(retries=0)(
            series=["CPIAUCSL"], vintages=True, retry_backoff_s=0.05, return_state=True
        )
        assert state.is_completed(), state.message
        fred = Fred(api_key=KEY)
        fred.root_url = fake.url.rstrip("/") + "/fred"
        for on in (D(2023, 4, 1), D(2023, 6, 13), D(2023, 6, 14), D(2023, 10, 1), D(2024, 3, 1)):
            served = fred.get_series("CPIAUCSL", realtime_start=str(on), realtime_end=str(on))
            got = read_macro(store, ["CPIAUCSL"], as_of=on).set_index("obs_date")["value"]
            served.index = pd.to_datetime(served.index)
            assert list(got.index) == list(served.index), on
            np.testing.assert_array_equal(got.to_numpy(), served.to_numpy(dtype=float))
    now = read_macro(store, "CPIAUCSL")
    assert now.set_index("obs_date")["value"][pd.Timestamp("2023-03-01")] == 302.2
    with pytest.raises(ValueError, match="no vintages stored for DGS10"):
        read_macro(store, ["CPIAUCSL", "DGS10"], as_of=D(2024, 1, 1))
