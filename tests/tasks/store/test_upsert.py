"""The market store: migrations and the idempotent upsert, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.store.engine import migrate
from tasks.store.schema import daily_prices, ingest_batches, rejected_rows
from tasks.store.sql import lock_entities
from tasks.store.upsert import latest_dates, upsert_frame

pytestmark = pytest.mark.integration


def prices(symbols=("AAPL", "MSFT"), days=5, start=dt.date(2024, 1, 2), bump=0.0):
    rows = []
    for s_i, symbol in enumerate(symbols):
        for d in range(days):
            base = 100.0 + 10 * s_i + d + bump
            rows.append(
                dict(
                    symbol=symbol,
                    trade_date=start + dt.timedelta(days=d),
                    open=base,
                    high=base + 2,
                    low=base - 2,
                    close=base + 1,
                    adj_close=base + 0.5,
                    volume=1000 + d,
                    currency="USD",
                    source="yahoo",
                )
            )
    return pd.DataFrame(rows)


def stored(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.DataFrame(
            conn.execute(sa.select(daily_prices).order_by("symbol", "trade_date")).mappings()
        )


def migrations_head() -> str:
    """The newest revision in migrations/ (one head: a second would be a merge to make)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from tasks.settings import PROJECT_ROOT

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    (head,) = ScriptDirectory.from_config(config).get_heads()
    return head


def test_migrations_from_empty_and_again_are_safe(pg_admin_url):
    from tests.conftest import create_database, drop_database

    url = create_database(pg_admin_url)
    try:
        migrate(url)
        migrate(url)  # a second upgrade on an existing database changes nothing
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        engine.dispose()
        assert {"daily_prices", "macro_observations", "backup_catalog", "predictions",
                "universe_members"} <= tables  # fmt: skip
        assert version == migrations_head()
    finally:
        drop_database(url)


def test_migrating_a_sqlite_store_creates_its_missing_folder(tmp_path):
    # A fresh clone has no ./data: the first `make up` migrates into a folder not there yet.
    path = tmp_path / "not-yet" / "data" / "market.db"
    migrate(f"sqlite:///{path}")
    assert path.exists()
    with sa.create_engine(f"sqlite:///{path}").connect() as conn:
        assert "daily_prices" in sa.inspect(conn).get_table_names()


def test_upgrading_keeps_one_row_per_refused_row(pg_admin_url):
    from alembic import command
    from alembic.config import Config

    from tasks.settings import PROJECT_ROOT
    from tasks.store.engine import normalize_url
    from tests.conftest import create_database, drop_database

    url = create_database(pg_admin_url)
    try:
        cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
        cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
        cfg.attributes["url"] = normalize_url(url)
        command.upgrade(cfg, "0002")
        engine = sa.create_engine(normalize_url(url))
        refused = {"table_name": "daily_prices", "row_key": "X/2024-01-02", "reason": "high < low"}
        with engine.begin() as conn:  # the same refusal, recorded by three runs
            for run in ("a", "b", "c"):
                conn.execute(
                    sa.text(
                        "INSERT INTO rejected_rows (table_name, row_key, reason, payload, "
                        "flow_run_id) VALUES (:table_name, :row_key, :reason, '{\"high\": 1}', :r)"
                    ),
                    refused | {"r": run},
                )
        migrate(url)
        with engine.connect() as conn:
            kept = conn.execute(sa.text("SELECT flow_run_id FROM rejected_rows")).scalars().all()
        engine.dispose()
        assert kept == ["a"]
    finally:
        drop_database(url)


def test_same_frame_twice_changes_nothing(store):
    first = upsert_frame(store, "daily_prices", prices())
    second = upsert_frame(store, "daily_prices", prices())
    assert (first.inserted, first.updated, first.unchanged) == (10, 0, 0)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, 10)
    assert len(stored(store)) == 10


def test_changed_values_are_updated_and_only_those(store):
    upsert_frame(store, "daily_prices", prices())
    frame = prices()
    frame.loc[3, "close"] = 999.0
    frame.loc[7, "volume"] = 1
    result = upsert_frame(store, "daily_prices", frame)
    assert (result.inserted, result.updated, result.unchanged) == (0, 2, 8)
    table = stored(store).set_index(["symbol", "trade_date"])
    assert table.loc[("AAPL", dt.date(2024, 1, 5)), "close"] == 999.0
    assert table.loc[("MSFT", dt.date(2024, 1, 4)), "volume"] == 1


def test_overlapping_batch_inserts_new_and_updates_changed(store):
    upsert_frame(store, "daily_prices", prices(days=5))
    # Seven days from the same start: two days new, the last stored day revised.
    frame = prices(days=7)
    frame.loc[frame.trade_date == dt.date(2024, 1, 6), "adj_close"] = 1.0
    result = upsert_frame(store, "daily_prices", frame)
    assert (result.inserted, result.updated, result.unchanged) == (4, 2, 8)
    assert len(stored(store)) == 14


def test_a_change_in_any_one_column_is_found_and_only_that_row_updated(store):
    # Each value column alone, the text ones and NULLs included: PostgreSQL finds changed
    # prices by reading the stored rows back and comparing them (tasks.store.compare), and a
    # change it missed would be lost without a word.
    base = prices(symbols=("AAPL", "MSFT", "005930.KS"), days=4)
    base.loc[base.symbol == "005930.KS", "adj_close"] = float("nan")
    base.loc[base.symbol == "005930.KS", "currency"] = "KRW"
    upsert_frame(store, "daily_prices", base)
    edits = [
        ("open", 1.5), ("high", 999.0), ("low", 0.5), ("close", 150.25),
        ("adj_close", 1.0), ("adj_close", float("nan")), ("volume", 7),
        ("currency", "EUR"), ("currency", None), ("source", "krx"),
    ]  # fmt: skip
    for column, value in edits:
        for row in (1, 9):  # a US row (adj_close stored), a KRW one (adj_close NULL)
            frame = pd.DataFrame(stored(store)[base.columns])
            now = frame.loc[row, column]
            if (pd.isna(now) and pd.isna(value)) or now == value:
                continue  # nothing to change (adj_close of the KRW row is NULL already)
            frame.loc[row, column] = value
            result = upsert_frame(store, "daily_prices", frame)
            what = f"{column}={value!r} on row {row}"
            assert (result.inserted, result.updated, result.unchanged) == (0, 1, 11), what
            after = stored(store).loc[row, column]
            assert after == value or (pd.isna(after) and pd.isna(value)), what


def test_stored_rows_of_mixed_currency_are_compared_row_by_row(store):
    frame = prices(days=4)
    frame.loc[[0, 1], "currency"] = "EUR"  # AAPL's first two days in another currency
    frame.loc[[4, 5], "currency"] = None  # MSFT's first two with none
    upsert_frame(store, "daily_prices", frame)
    again = upsert_frame(store, "daily_prices", frame)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 8)
    frame.loc[2, "currency"] = "EUR"
    frame.loc[4, "currency"] = "USD"
    result = upsert_frame(store, "daily_prices", frame)
    assert (result.inserted, result.updated, result.unchanged) == (0, 2, 6)
    assert list(stored(store).currency) == ["EUR", "EUR", "EUR", "USD", "USD", None, "USD", "USD"]


def test_a_large_batch_of_new_gaps_and_scattered_changes_lands_exactly(store):
    # 40 symbols x 60 sessions stored with every fifth day missing; the batch fills the gaps,
    # adds 5 days past the end and changes 5% of the stored rows in one column each.
    import numpy as np

    rng = np.random.default_rng(3)
    symbols = tuple(f"S{i:02d}" for i in range(40))
    full = prices(symbols=symbols, days=65)
    day = (pd.to_datetime(full.trade_date) - pd.Timestamp("2024-01-02")).dt.days
    stored_part = full[(day % 5 != 4) & (day < 60)]
    upsert_frame(store, "daily_prices", stored_part)
    batch = full.copy()
    picked = rng.choice(stored_part.index.to_numpy(), size=len(stored_part) // 20, replace=False)
    columns = rng.choice(["close", "adj_close", "volume", "currency"], size=len(picked))
    for row, column in zip(picked, columns, strict=True):
        batch.loc[row, column] = {"close": 500.0, "adj_close": float("nan"), "volume": 3,
                                  "currency": "KRW"}[column]  # fmt: skip
    result = upsert_frame(store, "daily_prices", batch)
    new = len(full) - len(stored_part)
    assert (result.inserted, result.updated) == (new, len(picked))
    assert result.unchanged == len(stored_part) - len(picked)
    got = stored(store)[batch.columns].reset_index(drop=True)
    want = batch.sort_values(["symbol", "trade_date"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_bad_rows_are_set_aside_with_reasons_and_good_rows_land(store):
    frame = prices(days=3)
    bad = pd.DataFrame(
        [
            dict(frame.iloc[0], symbol="TSLA", close=float("nan")),
            dict(frame.iloc[0], symbol="NVDA", low=-1.0),
            dict(frame.iloc[0], symbol="AMD", high=1.0, low=5.0),
            dict(frame.iloc[0], symbol="bad symbol!"),
            dict(frame.iloc[0], symbol="DUP"),
            dict(frame.iloc[0], symbol="DUP", close=50.0),
        ]
    )
    result = upsert_frame(store, "daily_prices", pd.concat([frame, bad], ignore_index=True))
    assert result.inserted == 6
    reasons = {r.row_key.split("/")[0]: r.reason for r in result.rejected}
    assert reasons == {
        "TSLA": "missing (NaN) price",
        "NVDA": "negative price",
        "AMD": "high < low",
        "bad symbol!": "symbol outside [A-Z0-9.^=-]{1,20}",
        "DUP": "duplicate key within the batch",
    }
    assert len(result.rejected) == 6
    assert set(stored(store).symbol) == {"AAPL", "MSFT"}
    with store.connect() as conn:
        kept = conn.execute(sa.select(rejected_rows.c.row_key, rejected_rows.c.reason)).all()
    assert ("TSLA/2024-01-02", "missing (NaN) price") in kept
    assert len(kept) == 6

    # A re-run refuses the same rows again (a lookback does, for days): recorded once.
    again = upsert_frame(store, "daily_prices", pd.concat([frame, bad], ignore_index=True))
    assert len(again.rejected) == 6  # still reported to the caller
    with store.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(rejected_rows)).scalar() == 6


def test_failure_in_the_middle_rolls_back_the_whole_batch(store):
    upsert_frame(store, "daily_prices", prices(days=2))
    before = stored(store)
    frame = prices(days=4, bump=5.0)  # updates two stored days, adds two
    frame.loc[5, "source"] = None  # NOT NULL violation in the middle of the batch
    with pytest.raises(sa.exc.IntegrityError):
        upsert_frame(store, "daily_prices", frame)
    after = stored(store)
    pd.testing.assert_frame_equal(before, after)
    with store.connect() as conn:
        batches = conn.execute(sa.select(sa.func.count()).select_from(ingest_batches)).scalar()
    assert batches == 1  # only the first, successful batch left a lineage row


def test_nan_adj_close_is_stored_as_null_not_refused(store):
    frame = prices(symbols=("005930.KS",), days=1)
    frame["adj_close"] = float("nan")
    frame["currency"] = "KRW"
    result = upsert_frame(store, "daily_prices", frame)
    assert result.inserted == 1 and not result.rejected
    assert stored(store).adj_close.isna().all()


def test_other_tables_upsert_by_their_key(store):
    obs = pd.DataFrame(
        {
            "series_id": ["CPIAUCSL"] * 2,
            "obs_date": [dt.date(2024, 1, 1), dt.date(2024, 2, 1)],
            "value": [310.3, None],
            "realtime_start": [dt.date(2024, 3, 12)] * 2,
        }
    )
    assert upsert_frame(store, "macro_observations", obs).inserted == 2
    obs.loc[1, "value"] = 311.0  # a '.' later filled by a revision
    result = upsert_frame(store, "macro_observations", obs)
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 1)


def test_instruments_upsert_by_symbol_and_stamp_updated_at(store):
    frame = pd.DataFrame(
        {"symbol": ["AAPL", "005930.KS"], "market": ["US", "KR"], "currency": ["USD", "KRW"]}
    )
    assert upsert_frame(store, "instruments", frame).inserted == 2
    frame.loc[1, "currency"] = "USD"
    result = upsert_frame(store, "instruments", frame)
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 1)


def test_latest_dates_are_the_newest_stored_per_symbol_and_absent_when_none(store):
    upsert_frame(store, "daily_prices", prices(days=5))
    upsert_frame(
        store, "daily_prices", prices(symbols=("MSFT",), days=3, start=dt.date(2024, 2, 1))
    )
    assert latest_dates(store, "daily_prices", ["AAPL", "MSFT", "NVDA"]) == {
        "AAPL": dt.date(2024, 1, 6),
        "MSFT": dt.date(2024, 2, 3),
    }
    assert latest_dates(store, "daily_prices", []) == {}


def test_a_writer_waits_for_the_other_transaction_holding_a_symbol(pg_engine):
    import threading

    order = []
    with pg_engine.begin() as first:
        lock_entities(first, "daily_prices", ["MSFT", "AAPL"])

        def second_writer():
            with pg_engine.begin() as second:
                lock_entities(second, "daily_prices", ["AAPL", "TSLA"])
                order.append("second")

        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive(), "the second writer must wait for AAPL's lock"
        order.append("first")
    thread.join(timeout=10)
    assert order == ["first", "second"]
