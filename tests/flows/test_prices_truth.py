"""us-prices stays true to Yahoo: re-based history, gaps, concurrent runs, crashes mid-chunk."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from tasks.market.writes import StoreConnectionLost
from tests.fakes.yahoo import FakeYahoo
from tests.flows.test_prices import START, rows, table_rows, us

pytestmark = pytest.mark.integration

D = dt.date
FRI = dt.datetime(2024, 6, 14, 22, 0, tzinfo=dt.UTC)
TUE = dt.datetime(2024, 6, 18, 22, 0, tzinfo=dt.UTC)
# What a fresh store must equal: every column the source decides (not when it was written).
TABLES = {
    "daily_prices": "symbol, trade_date, open, high, low, close, adj_close, volume, currency, "
    "source",
    "corporate_actions": "symbol, action_date, action_type, value, source",
    "instruments": "symbol, market, name, currency, exchange_tz",
}


def snapshot(engine) -> dict[str, list]:
    return {t: rows(engine, f"SELECT {c} FROM {t} ORDER BY 1, 2, 3") for t, c in TABLES.items()}


def empty_store(engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE daily_prices, corporate_actions, instruments"))


def fresh_backfill(engine, symbols, as_of) -> dict[str, list]:
    """The same symbols backfilled into an empty store from the stand-in as it is now."""
    empty_store(engine)
    us(symbols=symbols, start=START, as_of=as_of)
    return snapshot(engine)


def test_a_split_rebases_stored_history_to_equal_a_fresh_backfill(yahoo: FakeYahoo, pg_engine):
    yahoo.today = FRI.date()
    us(symbols=["AAPL", "MSFT"], start=START, as_of=FRI)
    stored_before = len(rows(pg_engine, "SELECT 1 FROM daily_prices WHERE symbol = 'AAPL'"))
    # A 4:1 split on Monday: Yahoo now divides every earlier AAPL price by 4.
    yahoo.splits["AAPL"] = {D(2024, 6, 17): (4, 1)}
    yahoo.today = TUE.date()
    yahoo.requests.clear()

    result = us(symbols=["AAPL", "MSFT"], as_of=TUE)

    assert set(result["rebased"]) == {"AAPL"}
    assert "new split 2024-06-17" in result["rebased"]["AAPL"]
    # The whole stored range was asked again, in the same run.
    asked = sorted(int(r.query["period1"]) for r in yahoo.chart_requests("AAPL"))
    assert dt.datetime.fromtimestamp(asked[0], dt.UTC).date() == START
    (log,) = rows(pg_engine, "SELECT symbol, reason, rows_changed, first_date FROM price_rebases")
    assert log[0] == "AAPL" and "split" in log[1] and log[3] == START
    assert log[2] == stored_before  # every session before the split read 4x too high
    (line,) = table_rows("us-prices-rebased")
    assert line["symbol"] == "AAPL" and line["rows_changed"] == stored_before
    served = yahoo.series("AAPL")
    close = dict(zip((d.date() for d in served["sessions"]), served["close"], strict=True))
    for day, stored in rows(pg_engine, "SELECT trade_date, close FROM daily_prices "
                            "WHERE symbol = 'AAPL'"):  # fmt: skip
        assert stored == pytest.approx(close[day], abs=5e-5), day

    incremental = snapshot(pg_engine)
    assert incremental == fresh_backfill(pg_engine, ["AAPL", "MSFT"], TUE)


def test_a_dividend_rescales_stored_adj_close_to_equal_a_fresh_backfill(yahoo, pg_engine):
    yahoo.dividends["KO"] = {D(2024, 5, 10): 0.45}
    yahoo.today = FRI.date()
    us(symbols=["KO"], start=START, as_of=FRI)
    old = dict(rows(pg_engine, "SELECT trade_date, adj_close FROM daily_prices"))
    yahoo.dividends["KO"][D(2024, 6, 17)] = 0.5
    yahoo.today = TUE.date()

    result = us(symbols=["KO"], as_of=TUE)

    assert "new dividend 2024-06-17" in result["rebased"]["KO"]
    new = dict(rows(pg_engine, "SELECT trade_date, adj_close FROM daily_prices"))
    assert all(new[d] < old[d] for d in old)  # every earlier session scaled down
    assert snapshot(pg_engine) == fresh_backfill(pg_engine, ["KO"], TUE)


def test_an_unchanged_source_rebases_nothing(yahoo, pg_engine):
    yahoo.dividends["KO"] = {}
    yahoo.today = FRI.date()
    us(symbols=["KO"], start=START, as_of=FRI)
    yahoo.today = TUE.date()
    result = us(symbols=["KO"], as_of=TUE)
    assert result["rebased"] == {} and result["updated"] == 0
    assert len(yahoo.chart_requests("KO")) == 2  # the backfill and one daily request
    assert rows(pg_engine, "SELECT count(*) FROM price_rebases") == [(0,)]


def test_a_missing_session_and_a_holiday_bar_are_flagged_once(yahoo, pg_engine):
    yahoo.missing["MSFT"] = {D(2024, 6, 12)}
    yahoo.holiday_bars["MSFT"] = {D(2024, 6, 19)}  # Juneteenth: the NYSE was closed
    friday = dt.datetime(2024, 6, 21, 22, 0, tzinfo=dt.UTC)

    first = us(symbols=["MSFT", "AAPL"], start=D(2024, 6, 3), as_of=friday)

    flags = "SELECT entity, flag_date, kind FROM quality_flags ORDER BY 1, 2, 3"
    expected = [("MSFT", D(2024, 6, 12), "missing_session"),
                ("MSFT", D(2024, 6, 19), "non_session_bar")]  # fmt: skip
    assert [f for f in rows(pg_engine, flags) if f[2] != "zero_volume"] == expected
    assert first["new_flags"] == len(rows(pg_engine, flags))
    shown = {(r["symbol"], r["date"], r["kind"]) for r in table_rows("us-prices-flags")}
    assert ("MSFT", "2024-06-19", "non_session_bar") in shown
    # The holiday bar is not stored as a session.
    assert rows(pg_engine, "SELECT count(*) FROM daily_prices WHERE trade_date = '2024-06-19'") == [
        (0,)
    ]
    again = us(symbols=["MSFT", "AAPL"], start=D(2024, 6, 3), as_of=friday)
    assert again["new_flags"] == 0
    assert [f for f in rows(pg_engine, flags) if f[2] != "zero_volume"] == expected


def test_two_overlapping_runs_started_together_both_complete(yahoo, pg_engine):
    symbols = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META"]
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(us, symbols=symbols, start=START, as_of=FRI),
            pool.submit(us, symbols=symbols[::-1], start=START, as_of=FRI),
        ]
        results = [r.result() for r in runs]
    assert all(r["failed"] == {} for r in results)
    assert sum(r["inserted"] for r in results) == len(symbols) * 54  # each row once
    assert rows(pg_engine, "SELECT count(*), count(DISTINCT (symbol, trade_date)) "
                "FROM daily_prices") == [(len(symbols) * 54, len(symbols) * 54)]  # fmt: skip


def test_a_connection_killed_mid_chunk_then_a_rerun_equals_a_clean_run(yahoo, pg_engine):
    symbols = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META"]
    # Chunks of two symbols, each chunk one transaction; the database drops the connection
    # while the third chunk's first symbol, the fifth in all, is being copied in.
    with pg_engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE FUNCTION drop_connection() RETURNS trigger AS $$ BEGIN "
            "IF NEW.symbol = 'GOOGL' THEN PERFORM pg_terminate_backend(pg_backend_pid()); "
            "END IF; RETURN NEW; END $$ LANGUAGE plpgsql; "
            "CREATE TRIGGER drop_connection BEFORE INSERT ON daily_prices "
            "FOR EACH ROW EXECUTE FUNCTION drop_connection()"
        ))  # fmt: skip
    try:
        # write-prices retries a lost connection (3 times); this one is lost on every try, so
        # the run fails saying so, and that a rerun is safe.
        with pytest.raises(StoreConnectionLost, match="rolled back.*A rerun is safe"):
            us(symbols=symbols, start=START, as_of=FRI, chunk_size=2)
    finally:
        with pg_engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER drop_connection ON daily_prices; "
                                 "DROP FUNCTION drop_connection()"))  # fmt: skip
    landed = snapshot(pg_engine)
    # What landed, landed whole: the first two chunks, with their actions and instruments;
    # nothing of the chunk that was cut off.
    whole = {r[0] for r in landed["instruments"]}
    assert whole == {"AAPL", "MSFT", "NVDA", "AMZN"}
    assert {r[0] for r in landed["daily_prices"]} == whole
    assert {r[0] for r in landed["corporate_actions"]} <= whole

    us(symbols=symbols, start=START, as_of=FRI)  # the rerun (or the retry): same parameters
    assert snapshot(pg_engine) == fresh_backfill(pg_engine, symbols, FRI)


def test_a_symbol_whose_every_row_is_refused_fails_the_run(yahoo, pg_engine):
    # Refused before any work now: the flow's signature declares the symbol pattern
    # (tasks/params.py), and the error names the parameter.
    with pytest.raises(Exception, match="symbols"):
        us(symbols=["BAD!"], start=D(2024, 6, 3), as_of=FRI)
    assert rows(pg_engine, "SELECT count(*) FROM daily_prices") == [(0,)]
