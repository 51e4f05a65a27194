"""Trading calendars: which sessions a run fetches, in each market's own timezone."""

from __future__ import annotations

import datetime as dt

from tasks.market.calendars import (
    MARKETS,
    last_closed_session,
    lookback_start,
    market_of,
    plan_fetches,
    sessions_between,
    trading_calendar,
)

US, KR = MARKETS["US"], MARKETS["KR"]


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def test_symbols_find_their_market():
    assert market_of("AAPL") is US and market_of("brk-b") is US
    assert market_of("005930.KS") is KR and market_of("247540.KQ") is KR


def test_last_closed_session_waits_for_the_close_in_new_york():
    # 2024-06-14 is a Friday; NYSE closes 16:00 EDT = 20:00 UTC.
    assert last_closed_session(US, utc(2024, 6, 14, 19, 59)) == dt.date(2024, 6, 13)
    assert last_closed_session(US, utc(2024, 6, 14, 20, 0)) == dt.date(2024, 6, 14)
    # The Saturday 09:00 UTC run sees Friday.
    assert last_closed_session(US, utc(2024, 6, 15, 9, 0)) == dt.date(2024, 6, 14)


def test_thanksgiving_has_no_session():
    # Scheduled Friday 09:00 UTC after Thanksgiving 2024: the last session is Wednesday.
    assert last_closed_session(US, utc(2024, 11, 29, 9, 0)) == dt.date(2024, 11, 27)
    assert sessions_between(US, dt.date(2024, 11, 27), dt.date(2024, 11, 28)) == []


def test_seoul_sessions_are_read_in_seoul_time():
    # 21:00 UTC Friday is 06:00 KST Saturday: Friday's KRX session is closed and counted.
    assert last_closed_session(KR, utc(2024, 9, 13, 21, 0)) == dt.date(2024, 9, 13)
    # 05:00 UTC Friday is 14:00 KST: the session is still open, Thursday is the last.
    assert last_closed_session(KR, utc(2024, 9, 13, 5, 0)) == dt.date(2024, 9, 12)


def test_chuseok_has_no_session():
    # Chuseok 2024: Monday 16 to Wednesday 18 September.
    assert last_closed_session(KR, utc(2024, 9, 18, 21, 0)) == dt.date(2024, 9, 13)
    assert sessions_between(KR, dt.date(2024, 9, 13), dt.date(2024, 9, 18)) == []
    assert sessions_between(KR, dt.date(2024, 9, 13), dt.date(2024, 9, 19)) == [
        dt.date(2024, 9, 19)
    ]


def test_lookback_counts_sessions_not_days():
    # Five sessions up to Tuesday 2024-06-18: Jun 12, 13, 14, 17, 18.
    assert lookback_start(US, dt.date(2024, 6, 18), 5) == dt.date(2024, 6, 12)
    # Juneteenth (Wed 19th) is skipped counting back from Friday the 21st.
    assert lookback_start(US, dt.date(2024, 6, 21), 3) == dt.date(2024, 6, 18)
    assert lookback_start(US, dt.date(2024, 6, 21), 0) == dt.date(2024, 6, 22)


def test_plan_fetches_backfills_new_symbols_and_skips_up_to_date_ones():
    stored = {"AAPL": dt.date(2024, 6, 14), "MSFT": dt.date(2024, 6, 18)}
    plans = plan_fetches(
        US,
        ["AAPL", "MSFT", "NEW"],
        stored,
        through=dt.date(2024, 6, 18),
        backfill_start=dt.date(2014, 6, 18),
        lookback_sessions=5,
    )
    assert [(p.symbol, p.start, p.end, p.backfill) for p in plans] == [
        ("AAPL", dt.date(2024, 6, 10), dt.date(2024, 6, 19), False),
        ("NEW", dt.date(2014, 6, 18), dt.date(2024, 6, 19), True),
    ]


def test_plan_fetches_with_an_explicit_start_refetches_everyone():
    stored = {"AAPL": dt.date(2024, 6, 18)}
    plans = plan_fetches(
        US, ["AAPL"], stored, dt.date(2024, 6, 18), dt.date(2024, 1, 2), 5, force_start=True
    )
    assert [(p.symbol, p.start) for p in plans] == [("AAPL", dt.date(2024, 1, 2))]


def test_a_calendar_is_built_once_then_loaded_from_the_cache_folder(tmp_path, monkeypatch):
    # Building XKRX costs a fresh process ~2 s (each run of a process worker); a week-old
    # build is as good, so the second process loads it instead.
    import exchange_calendars as xcals

    monkeypatch.setenv("INVESTFLOW_CACHE_DIR", str(tmp_path / "cache"))
    trading_calendar.cache_clear()
    built = trading_calendar("XNYS")
    (cached,) = (tmp_path / "cache").iterdir()
    assert cached.name.startswith(f"XNYS-xcals{xcals.__version__}-pandas")

    def not_again(*args, **kwargs):
        raise AssertionError("the calendar was built again instead of loaded")

    monkeypatch.setattr(xcals, "get_calendar", not_again)
    trading_calendar.cache_clear()  # as a new process starts
    loaded = trading_calendar("XNYS")
    assert loaded is not built
    assert list(loaded.sessions) == list(built.sessions)
    assert list(loaded.closes) == list(built.closes)
    trading_calendar.cache_clear()


def test_a_stale_or_broken_cache_is_built_anew_and_an_unwritable_one_ignored(tmp_path, monkeypatch):
    import os

    from tasks.market.calendars import CALENDAR_CACHE_DAYS

    folder = tmp_path / "cache"
    monkeypatch.setenv("INVESTFLOW_CACHE_DIR", str(folder))
    trading_calendar.cache_clear()
    trading_calendar("XNYS")
    (cached,) = folder.iterdir()
    week_ago = cached.stat().st_mtime - (CALENDAR_CACHE_DAYS + 1) * 86_400
    os.utime(cached, (week_ago, week_ago))
    trading_calendar.cache_clear()
    assert last_closed_session(MARKETS["US"], dt.datetime(2024, 11, 29, 22, tzinfo=dt.UTC)) == (
        dt.date(2024, 11, 29)
    )
    assert cached.stat().st_mtime > week_ago + 86_400  # rebuilt and written again

    cached.write_bytes(b"not a pickle")
    trading_calendar.cache_clear()
    assert trading_calendar("XNYS").name == "XNYS"
    assert cached.stat().st_size > 1000

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("INVESTFLOW_CACHE_DIR", str(blocked / "cache"))  # cannot be a folder
    trading_calendar.cache_clear()
    assert trading_calendar("XNYS").name == "XNYS"
    trading_calendar.cache_clear()
