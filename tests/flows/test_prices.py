"""us-prices and kr-prices against the Yahoo stand-in, the real PostgreSQL and a Prefect server."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.prices import TooManyFailures, ingest_kr_prices, ingest_us_prices
from tasks.market.yahoo import YahooThrottled

pytestmark = pytest.mark.integration

TEN = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "JPM", "XOM", "KO", "PEP"]
# Friday 2024-06-14 after the NYSE close (20:00 UTC), and the next Tuesday evening.
FRI = dt.datetime(2024, 6, 14, 22, 0, tzinfo=dt.UTC)
TUE = dt.datetime(2024, 6, 18, 22, 0, tzinfo=dt.UTC)
START = dt.date(2024, 4, 1)


def rows(engine, sql: str, **params) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def counts_by_symbol(engine) -> dict[str, int]:
    return dict(rows(engine, "SELECT symbol, count(*) FROM daily_prices GROUP BY symbol"))


def us(**kw):
    kw.setdefault("backoff_s", 0.01)
    return ingest_us_prices.with_options(retries=0)(**kw)


def latest_artifact(key: str):
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=50
        )
    return max(found, key=lambda a: a.created)


def table_rows(key: str) -> list[dict]:
    data = latest_artifact(key).data
    return json.loads(data) if isinstance(data, str) else data


def test_backfill_then_daily_fetches_only_new_sessions(yahoo, pg_engine):
    symbols = ["AAPL", "MSFT", "NVDA"]
    first = us(symbols=symbols, start=START, as_of=FRI)
    assert first["failed"] == {}
    sessions = len(pd.bdate_range(START, "2024-06-14")) - 1  # Memorial Day off
    assert counts_by_symbol(pg_engine) == {s: sessions for s in symbols}
    assert len(yahoo.chart_requests()) == 3

    before = len(yahoo.requests)
    second = us(symbols=symbols, as_of=TUE)
    daily = yahoo.chart_requests()[3:]
    # One request per symbol, from 5 sessions back (Jun 10) to the last session (Jun 18).
    assert len(daily) == 3 and len(yahoo.requests) - before <= 3 * 2
    for req in daily:
        assert dt.datetime.fromtimestamp(int(req.query["period1"]), dt.UTC).date() == (
            dt.date(2024, 6, 10)
        )
    assert second["inserted"] == 3 * 2 and second["updated"] == 0
    assert counts_by_symbol(pg_engine) == {s: sessions + 2 for s in symbols}

    table = table_rows("us-prices-run")
    assert {r["symbol"]: (r["inserted"], r["unchanged"]) for r in table} == {
        s: (2, 5) for s in symbols
    }
    instruments = rows(pg_engine, "SELECT symbol, market, currency FROM instruments ORDER BY 1")
    assert instruments == [(s, "US", "USD") for s in sorted(symbols)]


def test_same_run_twice_changes_nothing(yahoo, pg_engine):
    symbols = ["AAPL", "KO"]
    us(symbols=symbols, start=START, as_of=FRI)
    prices = rows(pg_engine, "SELECT * FROM daily_prices ORDER BY symbol, trade_date")
    actions = rows(pg_engine, "SELECT * FROM corporate_actions ORDER BY 1, 2, 3")
    again = us(symbols=symbols, start=START, as_of=FRI)
    assert again["inserted"] == 0 and again["updated"] == 0
    assert rows(pg_engine, "SELECT * FROM daily_prices ORDER BY symbol, trade_date") == prices
    assert rows(pg_engine, "SELECT * FROM corporate_actions ORDER BY 1, 2, 3") == actions
    # And a daily run on an up-to-date store asks Yahoo nothing.
    before = len(yahoo.requests)
    assert us(symbols=symbols, as_of=FRI)["status"] == "up to date"
    assert len(yahoo.requests) == before


def test_split_and_dividend_days_are_stored_right(yahoo, pg_engine):
    yahoo.splits["AAPL"] = {dt.date(2024, 6, 10): (4, 1)}
    yahoo.dividends["AAPL"] = {dt.date(2024, 5, 10): 0.25}
    result = us(symbols=["AAPL"], start=START, as_of=FRI)
    assert result["failed"] == {}
    assert rows(
        pg_engine,
        "SELECT action_date, action_type, value, source FROM corporate_actions ORDER BY 1",
    ) == [
        (dt.date(2024, 5, 10), "dividend", 0.25, "yahoo"),
        (dt.date(2024, 6, 10), "split", 4.0, "yahoo"),
    ]
    series = yahoo.series("AAPL")
    at = {d.date(): i for i, d in enumerate(series["sessions"])}
    stored = {
        d: (c, a)
        for d, c, a in rows(
            pg_engine, "SELECT trade_date, close, adj_close FROM daily_prices ORDER BY 1"
        )
    }
    for day in (dt.date(2024, 5, 9), dt.date(2024, 5, 10), dt.date(2024, 6, 10)):
        assert stored[day][0] == pytest.approx(series["close"][at[day]], abs=5e-5)  # 4 decimals
    # Close is kept unadjusted for dividends; adj_close carries the dividend before its day.
    assert stored[dt.date(2024, 5, 9)][1] < stored[dt.date(2024, 5, 9)][0]
    on_the_day = stored[dt.date(2024, 5, 10)]
    assert on_the_day[1] == pytest.approx(on_the_day[0], abs=1e-4)  # 4 decimals beside 6


def test_thanksgiving_skips_yahoo(yahoo, pg_engine):
    wed = dt.datetime(2024, 11, 27, 22, 0, tzinfo=dt.UTC)
    us(symbols=["AAPL", "MSFT"], start=dt.date(2024, 11, 1), as_of=wed)
    before = len(yahoo.requests)
    # The scheduled Friday 09:00 UTC run after Thanksgiving: no session since Wednesday.
    result = us(symbols=["AAPL", "MSFT"], as_of=dt.datetime(2024, 11, 29, 9, 0, tzinfo=dt.UTC))
    assert result["status"] == "up to date"
    assert len(yahoo.requests) == before
    assert "No XNYS session since the last stored one (2024-11-27)" in str(
        latest_artifact("us-prices-summary").data
    )


def test_chuseok_skips_yahoo(yahoo, pg_engine):
    symbols = ["005930.KS", "247540.KQ"]
    kr = ingest_kr_prices.with_options(retries=0)
    # Friday 2024-09-13 is the last session before Chuseok (Sep 16-18).
    first = kr(symbols=symbols, start=dt.date(2024, 9, 1), as_of=dt.datetime(2024, 9, 13, 21, 0))
    assert first["failed"] == {}
    assert rows(pg_engine, "SELECT max(trade_date), min(currency) FROM daily_prices") == [
        (dt.date(2024, 9, 13), "KRW")
    ]
    before = len(yahoo.requests)
    result = kr(symbols=symbols, as_of=dt.datetime(2024, 9, 18, 21, 0), backoff_s=0.01)
    assert result["status"] == "up to date"
    assert len(yahoo.requests) == before


def test_one_delisted_of_ten_reports_it_and_the_rest_land(yahoo, pg_engine):
    yahoo.delisted.add("XOM")
    result = us(symbols=TEN, start=dt.date(2024, 6, 1), as_of=FRI)
    assert set(result["failed"]) == {"XOM"} and "delisted" in result["failed"]["XOM"]
    assert set(counts_by_symbol(pg_engine)) == set(TEN) - {"XOM"}
    table = {r["symbol"]: r for r in table_rows("us-prices-run")}
    assert table["XOM"]["status"] == "failed" and "delisted" in table["XOM"]["error"]
    assert table["AAPL"]["status"] in ("ok", "flagged") and table["AAPL"]["inserted"] == 10
    assert "XOM" in result["stale"]


def test_throttled_twice_then_all_rows_land(yahoo, pg_engine):
    yahoo.fail("/v8/finance/chart/MSFT", 429, "Too Many Requests", times=2)
    result = us(symbols=["AAPL", "MSFT"], start=dt.date(2024, 6, 1), as_of=FRI)
    assert result["failed"] == {}
    assert counts_by_symbol(pg_engine) == {"AAPL": 10, "MSFT": 10}
    assert len(yahoo.chart_requests("MSFT")) == 3


def test_throttling_past_the_retries_fails_the_run(yahoo, pg_engine):
    yahoo.fail("/v8/finance/chart/MSFT", 429, "Too Many Requests", times=100)
    with pytest.raises(YahooThrottled, match="MSFT"):
        us(symbols=["AAPL", "MSFT", "KO"], start=dt.date(2024, 6, 1), as_of=FRI)
    assert counts_by_symbol(pg_engine) == {"AAPL": 10}  # the good symbol before it landed


def test_a_run_of_several_chunks_shows_its_progress_bar_full_at_the_end(yahoo, pg_engine):
    # Three chunks written within a second: the bar moves at most once a second, but the
    # last chunk always shows, so the UI never leaves a finished run short of 100%.
    result = us(symbols=TEN, start=dt.date(2024, 6, 1), as_of=FRI, chunk_size=4)
    assert result["failed"] == {}
    bar = latest_artifact("us-prices-progress")
    assert bar.type == "progress" and float(bar.data) == 100.0
    assert bar.flow_run_id == latest_artifact("us-prices-summary").flow_run_id


def test_malformed_json_for_one_symbol_is_reported(yahoo, pg_engine):
    yahoo.malformed.add("NVDA")
    result = us(symbols=TEN[:6], start=dt.date(2024, 6, 1), as_of=FRI)
    assert set(result["failed"]) == {"NVDA"} and "malformed" in result["failed"]["NVDA"]
    assert set(counts_by_symbol(pg_engine)) == set(TEN[:6]) - {"NVDA"}


def test_more_than_a_fifth_failing_fails_naming_them(yahoo, pg_engine):
    yahoo.delisted.update({"XOM", "KO", "PEP"})
    with pytest.raises(TooManyFailures, match=r"^3 of 10 symbols failed") as failure:
        us(symbols=TEN, start=dt.date(2024, 6, 1), as_of=FRI, chunk_size=4)
    # The message says which failed and why, so the alert alone tells the operator.
    for symbol in ("XOM", "KO", "PEP"):
        assert f"{symbol} (no data" in str(failure.value)
    assert "AAPL" not in str(failure.value)
    assert len(counts_by_symbol(pg_engine)) == 7
    message = str(latest_artifact("us-prices-summary").data)
    assert all(s in message for s in ("XOM", "KO", "PEP"))
