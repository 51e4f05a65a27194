"""tasks.market.yahoo: the real yfinance 1.7 and its curl_cffi transport against a stand-in."""

from __future__ import annotations

import datetime as dt

import pytest
from curl_cffi import requests as curl_requests
from yfinance._http import new_session
from yfinance.exceptions import YFPricesMissingError, YFRateLimitError

from tasks.limits import set_limit
from tasks.market.frames import to_frames
from tasks.market.yahoo import (
    YAHOO_HOSTS,
    YahooServerError,
    describe_error,
    fetch_history,
    fetch_symbol,
    is_throttle,
    is_transient,
    reset_yfinance,
    resolve_entries,
    yahoo_session,
)
from tests.fakes.yahoo import CRUMB, FakeYahoo

NY = "America/New_York"


@pytest.fixture
def fake():
    """The stand-in, and the real yahoo rate limit set fast so retries take milliseconds."""
    set_limit("yahoo", 1, 200.0)
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
        symbol, "2024-06-03", "2024-06-15", NY, fake.url, timeout_s, "yahoo", str(fake.ca_file)
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
    assert len(fake.chart_requests("KO")) == 3  # the first try and its 2 retries


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
