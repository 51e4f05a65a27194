"""tasks.yahoo: the real yfinance 1.7 against the local stand-in, and the pure parsers."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
import yfinance as yf
from curl_cffi import requests as curl_requests
from yfinance._http import new_session
from yfinance.exceptions import YFPricesMissingError, YFRateLimitError

from tasks.quality import check_prices, stale_symbols
from tasks.yahoo import (
    YAHOO_HOSTS,
    History,
    YahooServerError,
    describe_error,
    download_to_long,
    drop_empty_rows,
    fetch_history,
    fetch_symbol,
    is_throttle,
    is_transient,
    reset_yfinance,
    resolve_entries,
    to_frames,
    yahoo_session,
)
from tests.fakes.yahoo import CRUMB, FakeYahoo

NY = "America/New_York"


@pytest.fixture
def fake():
    with FakeYahoo() as server:
        session = yahoo_session(server.url, str(server.ca_file))
        reset_yfinance(session)
        server.session = session
        yield server


def get(fake, symbol, start="2024-06-03", end="2024-06-15", tz=NY, timeout_s=5.0):
    return fetch_history(symbol, start, end, tz, fake.session, timeout_s)


# ---------------------------------------------------------------------------- I/O


def test_every_yfinance_call_reaches_the_stand_in(fake):
    history = get(fake, "AAPL")
    assert len(history.frame) == 10 and history.currency == "USD"
    # yfinance's own URLs, Host headers and TLS names: only the address was changed.
    hosts = {(r.headers.get("Host"), r.path) for r in fake.requests}
    assert ("query2.finance.yahoo.com", "/v8/finance/chart/AAPL") in hosts
    assert {host for host, _ in hosts} <= set(YAHOO_HOSTS)
    # yfinance keeps its cookie and crumb per process, so the cookie and getcrumb calls come
    # once per test session; the crumb on the chart call can only have come from a stand-in.
    chart = fake.chart_requests("AAPL")[0]
    assert chart.query["crumb"] == CRUMB and chart.query["events"] == "div,splits,capitalGains"


def test_the_session_is_yfinances_own_kind_aimed_only_by_address():
    real = yahoo_session()
    assert isinstance(real, curl_requests.Session) and real.impersonate == "chrome"
    # Real Yahoo: nothing redirected, the same trust as the session yfinance makes itself.
    assert not real.curl_options and real.verify == new_session().verify
    entries = resolve_entries("https://127.9.8.7")
    assert entries == [f"{host}:443:127.9.8.7" for host in YAHOO_HOSTS]
    assert "query2.finance.yahoo.com:443:127.9.8.7" in entries


def test_a_base_url_yahoo_cannot_be_reached_on_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="INVESTFLOW_YAHOO_BASE_URL=.*port 443"):
        resolve_entries("http://127.0.0.1:8080")


def test_the_stand_ins_certificate_is_checked():
    # Trusting only the public CAs, the stand-in's throwaway certificate is refused.
    with FakeYahoo() as server:
        session = yahoo_session(server.url)
        with pytest.raises(curl_requests.exceptions.SSLError):
            session.get("https://query2.finance.yahoo.com/v1/test/getcrumb", timeout=5)


def test_unadjusted_close_adj_close_and_actions_are_kept(fake):
    fake.splits["AAPL"] = {dt.date(2024, 6, 10): (4, 1)}
    fake.dividends["AAPL"] = {dt.date(2024, 6, 7): 0.25}
    frames = to_frames([get(fake, "AAPL")], "US", "USD")
    prices = frames.prices.set_index("trade_date")
    assert prices.loc[dt.date(2024, 6, 6), "adj_close"] < prices.loc[dt.date(2024, 6, 6), "close"]
    assert prices.loc[dt.date(2024, 6, 7), "adj_close"] == pytest.approx(
        prices.loc[dt.date(2024, 6, 7), "close"],
        abs=1e-4,  # close has 4 decimals, adj 6
    )
    assert frames.actions[["action_date", "action_type", "value"]].values.tolist() == [
        [dt.date(2024, 6, 7), "dividend", 0.25],
        [dt.date(2024, 6, 10), "split", 4.0],
    ]
    assert frames.instruments == [
        {"symbol": "AAPL", "market": "US", "currency": "USD", "exchange_tz": NY}
    ]


def test_per_symbol_errors_say_what_went_wrong(fake):
    fake.delisted.add("GONE")
    fake.malformed.add("BAD")
    fake.empty.add("NONE")
    reasons = {}
    for symbol in ("GONE", "BAD", "NONE"):
        with pytest.raises(Exception) as info:
            get(fake, symbol)
        reasons[symbol] = describe_error(info.value)
    assert reasons["GONE"].startswith("no data") and "delisted" in reasons["GONE"]
    assert reasons["BAD"].startswith("malformed payload")
    assert reasons["NONE"].startswith("no data")


def fetch(fake, symbol, timeout_s=5.0, delay_s=0.01):
    """The fetch-symbol task as fetch_chunk runs it: Prefect's retries, short delays."""
    task = fetch_symbol.with_options(retry_delay_seconds=[delay_s, delay_s * 2])
    return task(
        symbol, "2024-06-03", "2024-06-15", NY, fake.url, timeout_s, None, str(fake.ca_file)
    )


def test_three_429s_then_success_is_retried_by_the_task(fake):
    fake.fail("/v8/finance/chart/MSFT", 429, "Too Many Requests", times=3)
    history = fetch(fake, "MSFT")
    assert len(history.frame) == 10
    # yfinance asks again once itself after a 429 (with a fresh crumb), then raises
    # YFRateLimitError: two tries of the task, four chart requests.
    assert len(fake.chart_requests("MSFT")) == 4


def test_throttling_past_the_retries_raises(fake):
    fake.fail("/v8/finance/chart/MSFT", 429, "Too Many Requests", times=100)
    with pytest.raises(YFRateLimitError):
        fetch(fake, "MSFT")
    assert len(fake.chart_requests("MSFT")) == 6  # 3 tries, each with yfinance's own retry


def test_a_503_then_200_completes_the_symbol(fake):
    fake.fail("/v8/finance/chart/KO", 503, "<html>Service Unavailable</html>", times=1)
    history = fetch(fake, "KO")
    assert len(history.frame) == 10
    assert len(fake.chart_requests("KO")) == 2


def test_a_503_that_persists_fails_the_symbol_as_a_server_error(fake):
    fake.fail("/v8/finance/chart/KO", 503, "<html>Service Unavailable</html>", times=100)
    with pytest.raises(YahooServerError, match="HTTP 503"):
        fetch(fake, "KO")
    assert len(fake.chart_requests("KO")) == 3  # DESIGN.md's 2 retries


def test_a_stalled_response_times_out_and_is_retried(fake):
    fake.fail("/v8/finance/chart/KO", 200, "{}", times=1, delay_s=3.0)
    history = fetch(fake, "KO", timeout_s=0.5)
    assert len(history.frame) == 10
    assert len(fake.chart_requests("KO")) == 2


def test_a_connection_reset_is_retried(fake):
    fake.fail("/v8/finance/chart/KO", 200, times=1, reset=True)
    history = fetch(fake, "KO")
    assert len(history.frame) == 10
    assert len(fake.chart_requests("KO")) == 2


def test_a_delisted_symbol_is_not_retried(fake):
    fake.delisted.update({"GONE", "ALSO"})
    with pytest.raises(YFPricesMissingError):
        get(fake, "ALSO")  # one try, as yfinance makes it
    with pytest.raises(YFPricesMissingError) as info:
        fetch(fake, "GONE")
    assert not is_transient(info.value) and not is_throttle(info.value)
    assert len(fake.chart_requests("GONE")) == len(fake.chart_requests("ALSO"))


def test_transport_errors_are_curl_cffis_and_count_as_transient(fake):
    fake.fail("/v8/finance/chart/KO", 200, times=1, reset=True)
    with pytest.raises(curl_requests.exceptions.ConnectionError) as reset:
        get(fake, "KO")
    fake.fail("/v8/finance/chart/KO", 200, "{}", times=1, delay_s=3.0)
    with pytest.raises(curl_requests.exceptions.Timeout) as stalled:
        get(fake, "KO", timeout_s=0.5)
    assert is_transient(reset.value) and is_transient(stalled.value)


def test_mixed_market_download_drops_the_other_markets_holidays(fake):
    # 2024-09-16..18 is Chuseok in Seoul, and New York trades; 2024-06-19 the other way round.
    wide = yf.download(
        ["AAPL", "005930.KS"],
        start="2024-06-17",
        end="2024-09-20",
        auto_adjust=False,
        actions=True,
        session=fake.session,
        progress=False,
        threads=False,
    )
    assert wide.xs("AAPL", axis=1, level="Ticker").isna().all(axis=1).any()
    long = download_to_long(wide)
    assert long[["open", "close"]].notna().all().all()
    kr_days = set(long.loc[long.symbol == "005930.KS", "trade_date"])
    us_days = set(long.loc[long.symbol == "AAPL", "trade_date"])
    assert dt.date(2024, 9, 16) in us_days and dt.date(2024, 9, 16) not in kr_days
    assert dt.date(2024, 6, 19) in kr_days and dt.date(2024, 6, 19) not in us_days


# ---------------------------------------------------------------------------- pure


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
    frames = to_frames([History("KO", frame, "USD", NY)], "US", "USD")
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
            History("KO", priced, None, NY),
            History("GONE", unpriced, "USD", NY),
            History("SPLT", split, "USD", NY),
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
