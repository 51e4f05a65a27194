"""The universes flow against the listing stand-ins (KRX, Wikipedia, Naver) and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from flows.listings import UniverseSourcesFailed, refresh_universes
from tasks.universes.membership import AS_OF_SQL, members_as_of
from tests.fakes.listings import KOSDAQ150, KOSPI200
from tests.flows.test_prices import latest_artifact, table_rows

pytestmark = pytest.mark.integration

MON, TUE, WED = dt.date(2024, 6, 3), dt.date(2024, 6, 4), dt.date(2024, 6, 5)


def refresh(names, day, **kw):
    return refresh_universes.with_options(retries=0)(
        names=names, as_of=day, retry_delay_s=0.01, **kw
    )


def spells(engine, universe: str) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT symbol, valid_from, valid_to, previous_symbol FROM universe_members "
                "WHERE universe = :u ORDER BY symbol, valid_from"
            ),
            {"u": universe},
        ).all()
    out: dict[str, list[tuple]] = {}
    for symbol, start, end, previous in rows:
        out.setdefault(symbol, []).append((start, end, previous))
    return out


def test_every_universe_is_read_and_mapped_to_yahoo_symbols(listings, pg_engine):
    result = refresh(None, MON)
    assert result["members"] == {
        "sp500": 503,
        "nasdaq": 1200,
        "nyse": 1100,
        "kospi200": 200,
        "kosdaq150": 150,
        "kospi": 800,
        "kosdaq": 1000,
    }
    sp500 = members_as_of(pg_engine, "sp500", MON)
    assert {"AAPL", "BRK-B", "BF-B"} <= set(sp500) and "BRKB" not in sp500
    assert "005930.KS" in members_as_of(pg_engine, "kospi200", MON)
    assert "247540.KQ" in members_as_of(pg_engine, "kosdaq150", MON)
    with pg_engine.connect() as conn:
        query = sa.text("SELECT universe, min(market) FROM universe_members GROUP BY 1")
        markets = {u: m for u, m in conn.execute(query)}
    assert markets["kospi"] == "KR" and markets["nyse"] == "US"
    # Asked of KRX itself (getJsonData.cmd), not of a copy elsewhere.
    forms = [r.body.decode() for r in listings.requests if r.path.endswith("getJsonData.cmd")]
    assert any("MDCSTAT01501" in f for f in forms) and any("MDCSTAT00601" in f for f in forms)


def test_changes_between_runs_are_new_validity_rows(listings, pg_engine):
    refresh(["kospi200", "sp500"], MON)
    first = spells(pg_engine, "kospi200")
    assert len(first) == 200 and all(s == [(MON, None, None)] for s in first.values())

    # Tuesday: one member leaves KOSPI 200, another joins; Meta changes its ticker to MEAT.
    leaver, joiner = listings.indexes[KOSPI200][-1], listings.krx["STK"][300]
    listings.indexes[KOSPI200] = listings.indexes[KOSPI200][:-1] + [joiner]
    listings.sp500 = [(s if s != "META" else "MEAT", n) for s, n in listings.sp500]
    result = refresh(["kospi200", "sp500"], TUE)

    after = spells(pg_engine, "kospi200")
    assert after[leaver[0] + ".KS"] == [(MON, TUE, None)]
    assert after[joiner[0] + ".KS"] == [(TUE, None, None)]
    assert after["005930.KS"] == [(MON, None, None)]  # untouched
    sp = spells(pg_engine, "sp500")
    assert sp["META"] == [(MON, TUE, None)] and sp["MEAT"] == [(TUE, None, "META")]

    # The as-of query answers for the past and the present.
    assert leaver[0] + ".KS" in members_as_of(pg_engine, "kospi200", MON)
    assert joiner[0] + ".KS" not in members_as_of(pg_engine, "kospi200", MON)
    with pg_engine.connect() as conn:
        now = conn.execute(sa.text(AS_OF_SQL), {"universe": "kospi200", "day": WED}).all()
    assert len(now) == 200 and joiner[0] + ".KS" in {r.symbol for r in now}

    changes = {(c["universe"], c["symbol"], c["change"]) for c in result["changes"]}
    assert changes == {
        ("kospi200", leaver[0] + ".KS", "left"),
        ("kospi200", joiner[0] + ".KS", "joined"),
        ("sp500", "MEAT", "ticker change"),
        ("sp500", "META", "left"),
    }
    table = table_rows("universes-changes")
    assert {(r["symbol"], r["change"]) for r in table} == {(s, c) for _, s, c in changes}

    # The same listing again changes nothing.
    again = refresh(["kospi200", "sp500"], WED)
    assert again["changes"] == []
    assert spells(pg_engine, "kospi200") == after


@pytest.mark.parametrize("fault", ["error", "garbage"])
def test_a_failing_source_leaves_membership_unchanged_and_names_it(listings, pg_engine, fault):
    refresh(["kosdaq150", "sp500"], MON)
    before = (spells(pg_engine, "kosdaq150"), spells(pg_engine, "sp500"))
    listings.indexes[KOSDAQ150] = listings.indexes[KOSDAQ150][10:]  # would be 10 leavers
    listings.sp500 = listings.sp500[:-1]
    listings.broken["krx"] = fault
    with pytest.raises(UniverseSourcesFailed, match=r"kosdaq150 \(krx \(kosdaq150\)") as failure:
        refresh(["kosdaq150", "sp500"], TUE)
    assert "sp500" not in str(failure.value)
    # A read that failed was tried three times (two retries); each try asked KRX again (an
    # index read starts with the last working day, resource bundle B161).
    assert sum(r.query.get("key") == "B161.bld" for r in listings.requests) == 1 + 3
    assert spells(pg_engine, "kosdaq150") == before[0]
    # The other source's universe was still brought up to date.
    assert len(members_as_of(pg_engine, "sp500", TUE)) == 502
    assert "kosdaq150: FAILED, membership unchanged" in str(
        latest_artifact("universes-summary").data
    )


def test_a_short_answer_is_garbage(listings, pg_engine):
    refresh(["kospi200"], MON)
    listings.indexes[KOSPI200] = listings.indexes[KOSPI200][:20]  # KRX cut off mid-answer
    with pytest.raises(UniverseSourcesFailed, match=r"20 members, expected 195-205"):
        refresh(["kospi200"], TUE)
    assert len(members_as_of(pg_engine, "kospi200", TUE)) == 200


def kr_at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(21, 0), dt.UTC)  # after the KRX close


def test_price_runs_follow_the_universe(listings, yahoo, pg_engine):
    from flows.prices import ingest_kr_prices

    kr = ingest_kr_prices.with_options(retries=0)
    refresh(["kosdaq150"], MON)
    first = kr(universe="kosdaq150", start=dt.date(2024, 5, 27), as_of=kr_at(MON), backoff_s=0.01)
    members = {s + ".KQ" for s, _ in listings.indexes[KOSDAQ150]}
    assert first["failed"] == {} and first["fetched"] == 150
    with pg_engine.connect() as conn:
        stored = set(conn.execute(sa.text("SELECT DISTINCT symbol FROM daily_prices")).scalars())
    assert stored == members

    # Tuesday: the last member leaves KOSDAQ 150, a new one joins.
    leaver, joiner = listings.indexes[KOSDAQ150][-1][0] + ".KQ", "300500.KQ"
    listings.indexes[KOSDAQ150] = listings.indexes[KOSDAQ150][:-1] + [("300500", "New Co")]
    refresh(["kosdaq150"], TUE)
    second = kr(universe="kosdaq150", as_of=kr_at(TUE), backoff_s=0.01)
    assert second["failed"] == {}
    # The joiner was backfilled in this run (ten years); the leaver is still fetched (grace).
    joined = yahoo.chart_requests(joiner)
    assert len(joined) == 1
    assert dt.datetime.fromtimestamp(int(joined[0].query["period1"]), dt.UTC).year == 2014
    with pg_engine.connect() as conn:
        count = conn.execute(
            sa.text("SELECT count(*), min(trade_date) FROM daily_prices WHERE symbol = :s"),
            {"s": joiner},
        ).one()
    assert count[0] > 2000 and count[1] < dt.date(2014, 7, 1)
    assert len(yahoo.chart_requests(leaver)) == 2

    # Past the grace period (7 days): the leaver is no longer asked for, its rows are kept,
    # and it was flagged once.
    later = dt.date(2024, 6, 14)
    kr(universe="kosdaq150", as_of=kr_at(later), backoff_s=0.01)
    kr(universe="kosdaq150", as_of=kr_at(later + dt.timedelta(days=3)), backoff_s=0.01)
    assert len(yahoo.chart_requests(leaver)) == 2
    with pg_engine.connect() as conn:
        kept = conn.execute(
            sa.text("SELECT count(*) FROM daily_prices WHERE symbol = :s"), {"s": leaver}
        ).scalar()
        flags = conn.execute(
            sa.text(
                "SELECT entity, flag_date, kind FROM quality_flags WHERE kind = 'left_universe'"
            )
        ).all()
    assert kept >= 7
    assert flags == [(leaver, TUE, "left_universe")]


def test_a_universe_of_the_other_market_is_refused(listings, yahoo, pg_engine):
    from flows.prices import ingest_us_prices

    with pytest.raises(ValueError, match="universe 'kospi200' is not a US universe"):
        ingest_us_prices.with_options(retries=0)(universe="kospi200")


# -- history before the first run, from KRX's past listings ([11006] with a past trdDd)
NEW_YEAR = dt.date(2024, 1, 1)  # a holiday: KRX answers with 2023-12-28, its last trading day


def all_rows(engine, universe: str) -> list[tuple]:
    with engine.connect() as conn:
        query = sa.text(
            "SELECT * FROM universe_members WHERE universe = :u ORDER BY symbol, valid_from"
        )
        return [tuple(r) for r in conn.execute(query, {"u": universe})]


def with_history(listings):
    """KOSPI 200 until 2024-03-15 (an ad-hoc change mid-month): `leaver` in, `joiner` out."""
    now = listings.indexes[KOSPI200]
    leaver, joiner = listings.krx["STK"][300], now[-1]
    earlier = now[:-1] + [leaver]
    listings.index_history[KOSPI200] = [(dt.date(2024, 3, 15), earlier)]
    return {c + ".KS" for c, _ in earlier}, leaver[0] + ".KS", joiner[0] + ".KS"


def past_trdDd(listings) -> list[str]:
    forms = [r.body.decode() for r in listings.requests if r.path.endswith("getJsonData.cmd")]
    return sorted(f.split("trdDd=")[1][:8] for f in forms if "MDCSTAT00601" in f)


def test_history_is_backfilled_before_the_first_run_once(listings, pg_engine, monkeypatch):
    monkeypatch.setattr("tasks.universes.history.PAUSE_S", 0.0)
    refresh(["kospi200"], MON)
    stored = all_rows(pg_engine, "kospi200")
    assert members_as_of(pg_engine, "kospi200", dt.date(2024, 2, 15)) == []  # no history yet
    earlier, leaver, joiner = with_history(listings)

    result = refresh(["kospi200"], MON, history_from=NEW_YEAR)

    # Each date before the first run answers with that date's members (the stand-in's truth).
    for day in (NEW_YEAR, dt.date(2024, 2, 15), dt.date(2024, 3, 4)):
        assert set(members_as_of(pg_engine, "kospi200", day)) == earlier
    now = {c + ".KS" for c, _ in listings.indexes[KOSPI200]}
    for day in (dt.date(2024, 4, 1), dt.date(2024, 5, 31), MON):
        assert set(members_as_of(pg_engine, "kospi200", day)) == now
    # The change of 2024-03-15 is dated to the first sample that sees it (the 1st of April).
    after = spells(pg_engine, "kospi200")
    assert after[leaver] == [(NEW_YEAR, dt.date(2024, 4, 1), None)]
    assert after[joiner] == [(dt.date(2024, 4, 1), MON, None), (MON, None, None)]
    assert after["005930.KS"] == [(NEW_YEAR, MON, None), (MON, None, None)]
    assert result["history"] == {"kospi200": 201}
    # The first run's rows are untouched: every one is still there, unchanged.
    rows = all_rows(pg_engine, "kospi200")
    assert set(stored) <= set(rows)
    assert all(r[3] is not None and r[3] <= MON for r in rows if r not in stored)
    # A sample on a non-trading day was asked for as KRX's last trading day before it.
    asked = past_trdDd(listings)
    assert "20231228" in asked and "20240101" not in asked and "20240301" not in asked

    # The same backfill again finds nothing left to do and asks KRX nothing past.
    again = refresh(["kospi200"], MON, history_from=NEW_YEAR)
    assert again["history"] == {"kospi200": 0}
    assert all_rows(pg_engine, "kospi200") == rows
    assert past_trdDd(listings) == sorted(asked + ["20240603"])


@pytest.mark.parametrize("fault", ["error", "garbage"])
def test_a_failing_past_date_leaves_membership_unchanged(listings, pg_engine, monkeypatch, fault):
    monkeypatch.setattr("tasks.universes.history.PAUSE_S", 0.0)
    refresh(["kospi200"], MON)
    stored = all_rows(pg_engine, "kospi200")
    with_history(listings)
    listings.broken_days[dt.date(2024, 4, 1)] = fault
    with pytest.raises(
        UniverseSourcesFailed, match=r"kospi200 \(listing of 2024-04-01: krx \(kospi200\)"
    ):
        refresh(["kospi200"], MON, history_from=NEW_YEAR)
    assert all_rows(pg_engine, "kospi200") == stored
    assert members_as_of(pg_engine, "kospi200", dt.date(2024, 2, 15)) == []


def test_history_from_beyond_krx_reach_is_refused_before_any_request(listings, pg_engine):
    with pytest.raises(ValueError, match=r"kospi200: krx has listings from 2014-05-02"):
        refresh(["kospi200"], MON, history_from=dt.date(2014, 1, 2))
    with pytest.raises(
        ValueError, match=r"at most 100 a run: give history_from 2017-05-01 or later"
    ):
        refresh(["kospi200"], MON, history_from=dt.date(2014, 5, 2))
    assert listings.requests == [] and all_rows(pg_engine, "kospi200") == []


def test_a_first_run_with_history_from_lands_both_and_leaves_others_as_usual(
    listings, pg_engine, monkeypatch
):
    monkeypatch.setattr("tasks.universes.history.PAUSE_S", 0.0)
    earlier, leaver, joiner = with_history(listings)
    result = refresh(["kospi200", "sp500"], MON, history_from=dt.date(2024, 3, 4))
    assert result["history"] == {"kospi200": 201}  # sp500's source has no past listings
    assert set(members_as_of(pg_engine, "kospi200", dt.date(2024, 3, 4))) == earlier
    assert spells(pg_engine, "kospi200")[joiner] == [
        (dt.date(2024, 4, 1), MON, None),
        (MON, None, None),
    ]
    assert members_as_of(pg_engine, "sp500", dt.date(2024, 5, 31)) == []
    assert len(members_as_of(pg_engine, "sp500", MON)) == 503
