"""tasks.market.chart: a chart answer read by us lands as the rows yfinance's history() gives.

Each answer is served by the Yahoo stand-in twice, once to fetch_history and once to
yfinance's own Ticker.history() (the reference: the library the answer used to go through),
over the same client and transport; both results go through to_frames, so what is compared is
what the store would get."""

from __future__ import annotations

import copy
import datetime as dt
import json

import pandas as pd
import pytest
import yfinance as yf
from yfinance.data import YfData
from yfinance.exceptions import YFPricesMissingError

from tasks.limits import set_limit
from tasks.market.chart import chart_query
from tasks.market.frames import History, to_frames
from tasks.market.yahoo import describe_error, fetch_history, reset_yfinance, yahoo_session
from tests.fakes.yahoo import FakeYahoo

NY, SEOUL = "America/New_York", "Asia/Seoul"
START, END = "2024-06-03", "2024-06-15"  # two weeks: sessions 3-7 and 10-14 June


@pytest.fixture(scope="module")
def fake():
    set_limit("yahoo", 1, 200.0)
    with FakeYahoo() as server:
        session = yahoo_session(server.url, str(server.ca_file))
        reset_yfinance(session)
        server.session = session
        yield server


def stamp(day: str, clock: str = "09:30", tz: str = NY) -> int:
    return int(pd.Timestamp(f"{day} {clock}", tz=tz).timestamp())


def served(fake, symbol: str, tz: str = NY) -> dict:
    """The stand-in's own answer for the two weeks, as JSON it would send."""
    query = {k: str(v) for k, v in chart_query(START, END, tz).items()}
    return json.loads(json.dumps(fake.chart(symbol, query).body))


def both(fake, symbol: str, answer: dict, tz: str = NY):
    """to_frames of our reading and of history()'s, of the same answer served twice."""
    body = json.dumps(answer)
    fake.fail(f"/v8/finance/chart/{symbol}?", 200, body, times=2)
    ours = fetch_history(symbol, START, END, tz, fake.session, 5.0)
    YfData.cache_get.cache_clear()  # history() keeps past ranges' answers per process
    ticker = yf.Ticker(symbol, session=fake.session)
    ticker._tz = tz
    frame = ticker.history(
        start=START, end=END, interval="1d", auto_adjust=False, actions=True, repair=False
    )
    meta = ticker.history_metadata
    reference = History.from_frame(
        symbol, frame, meta.get("currency"), meta.get("exchangeTimezoneName")
    )
    market, currency = ("US", "USD") if tz == NY else ("KR", "KRW")
    return to_frames([ours], market, currency), to_frames([reference], market, currency)


def same(ours, reference) -> None:
    pd.testing.assert_frame_equal(ours.prices, reference.prices, check_dtype=False)
    pd.testing.assert_frame_equal(ours.actions, reference.actions, check_dtype=False)
    assert ours.instruments == reference.instruments


def result(answer: dict) -> dict:
    return answer["chart"]["result"][0]


def bars(answer: dict) -> dict:
    return result(answer)["indicators"]["quote"][0]


def add_bar(answer: dict, when: int, values: dict, adj: float | None = None) -> None:
    r = result(answer)
    r["timestamp"].append(when)
    for key in ("open", "high", "low", "close", "volume"):
        bars(answer)[key].append(values.get(key))
    r["indicators"]["adjclose"][0]["adjclose"].append(adj)


def quirk_live_row(a):
    # During a session Yahoo sends today's bar twice: the day's and a live one, later.
    add_bar(
        a, stamp("2024-06-14", "15:59"), {"open": 1, "high": 2, "low": 1, "close": 2, "volume": 9}
    )


def quirk_past_the_end(a):
    # ...and appends the latest price after the range asked.
    add_bar(a, stamp("2024-06-17"), {"open": 1, "high": 2, "low": 1, "close": 2, "volume": 9}, 2)


def quirk_dst_slip(a):
    # A bar stamped 23:00 the evening before: Yahoo meant midnight of the next day.
    r = result(a)
    r["timestamp"][3] = stamp("2024-06-05", "23:00")


def quirk_weekend_dividend(a):
    # A dividend on a Saturday belongs to Friday's row; two on one day add up.
    result(a)["events"] = {
        "dividends": {
            "1": {"amount": 0.2, "date": stamp("2024-06-08", "09:30")},
            "2": {"amount": 0.1, "date": stamp("2024-06-11")},
            "3": {"amount": 0.05, "date": stamp("2024-06-11", "12:00")},
        }
    }


def quirk_dividend_after_last_bar(a):
    # The last bar is missing but its dividend is not: a row of its own, without prices.
    r = result(a)
    for values in (r["timestamp"], *bars(a).values(), r["indicators"]["adjclose"][0]["adjclose"]):
        del values[-1]
    r["events"] = {"dividends": {"1": {"amount": 0.3, "date": stamp("2024-06-14")}}}


def quirk_splits(a):
    # Two splits on one day multiply; one before the first bar is dropped.
    result(a)["events"] = {
        "splits": {
            "1": {"date": stamp("2024-06-10"), "numerator": 2, "denominator": 1},
            "2": {"date": stamp("2024-06-10", "10:00"), "numerator": 3, "denominator": 2},
            "3": {"date": stamp("2024-05-31"), "numerator": 4, "denominator": 1},
        }
    }


def quirk_empty_bars(a):
    # A bar of nulls and a bar of zeros are not sessions; a bar with only a volume is kept
    # by history() and dropped by to_frames.
    for i in (2, 5):
        for key in ("open", "high", "low", "close", "volume"):
            bars(a)[key][i] = None if i == 2 else 0
        result(a)["indicators"]["adjclose"][0]["adjclose"][i] = None if i == 2 else 0
    for key in ("open", "high", "low", "close"):
        bars(a)[key][7] = None


def quirk_out_of_order(a):
    # Bars out of order, a day sent twice in the middle, no adjclose at all.
    r = result(a)
    order = [1, 0, 2, 3, 4, 4, 5, 6, 7, 8, 9]
    r["timestamp"] = [r["timestamp"][i] for i in order]
    for key, values in bars(a).items():
        bars(a)[key] = [values[i] for i in order]
    del r["indicators"]["adjclose"]


QUIRKS = [
    quirk_live_row,
    quirk_past_the_end,
    quirk_dst_slip,
    quirk_weekend_dividend,
    quirk_dividend_after_last_bar,
    quirk_splits,
    quirk_empty_bars,
    quirk_out_of_order,
]


def test_the_stand_ins_answer_reads_as_history_reads_it(fake):
    fake.dividends["AAPL"] = {dt.date(2024, 6, 7): 0.25}
    fake.splits["AAPL"] = {dt.date(2024, 6, 10): (4, 1)}
    ours, reference = both(fake, "AAPL", served(fake, "AAPL"))
    assert len(ours.prices) == 10 and len(ours.actions) == 2
    same(ours, reference)


def test_a_seoul_answer_reads_as_history_reads_it(fake):
    ours, reference = both(fake, "005930.KS", served(fake, "005930.KS", SEOUL), SEOUL)
    assert len(ours.prices) > 0 and ours.prices["currency"].eq("KRW").all()
    same(ours, reference)


@pytest.mark.parametrize("quirk", QUIRKS, ids=lambda q: q.__name__.removeprefix("quirk_"))
def test_yahoos_quirks_read_as_history_reads_them(fake, quirk):
    answer = copy.deepcopy(served(fake, "KO"))
    quirk(answer)
    ours, reference = both(fake, "KO", answer)
    same(ours, reference)


@pytest.mark.parametrize(
    "answer",
    [
        {"chart": {"result": None, "error": {"code": "Not Found", "description": "No data"}}},
        {"chart": {"result": [{"meta": {}, "indicators": {"quote": [{}]}}], "error": None}},
        {"chart": {"result": [], "error": None}},
    ],
    ids=["yahoos-error", "no-bars", "no-result"],
)
def test_an_answer_without_prices_is_the_error_history_raises(fake, answer):
    fake.fail("/v8/finance/chart/KO?", 200, json.dumps(answer), times=1)
    with pytest.raises(YFPricesMissingError) as ours:
        fetch_history("KO", START, END, NY, fake.session, 5.0)
    yf.config.debug.hide_exceptions = False
    fake.fail("/v8/finance/chart/KO?", 200, json.dumps(answer), times=1)
    YfData.cache_get.cache_clear()
    ticker = yf.Ticker("KO", session=fake.session)
    ticker._tz = NY
    with pytest.raises(YFPricesMissingError) as reference:
        ticker.history(start=START, end=END, auto_adjust=False, actions=True)
    assert str(ours.value) == str(reference.value)
    assert describe_error(ours.value).startswith("no data")
