"""The store's engine: it waits for a data node it cannot reach yet (and only for that), and
on SQLite a writer waits for another instead of failing."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from tasks.store.engine import CONNECT_PATIENCE_S, get_engine
from tests import datanode

needs_cluster = pytest.mark.skipif(bool(datanode.available()), reason=str(datanode.available()))


@pytest.fixture(scope="module")
def cluster():
    with datanode.pg_cluster() as started:
        started.create_database("engine_patience")
        yield started


@needs_cluster
def test_a_connection_waits_for_a_data_node_that_comes_back(cluster):
    """A restart or a short network cut costs a wait, not the run (tasks/store/engine.py)."""
    engine = get_engine(cluster.url("engine_patience"))
    engine.dispose()
    cluster.down()
    back = threading.Timer(4, cluster.up)
    began = time.monotonic()
    back.start()
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        back.join()
    assert 3 < time.monotonic() - began < CONNECT_PATIENCE_S


@needs_cluster
def test_a_database_that_does_not_exist_fails_at_once_and_says_which(cluster):
    engine = get_engine(cluster.url("no_such_store"))
    began = time.monotonic()
    with pytest.raises(sa.exc.OperationalError, match="no_such_store"):
        with engine.connect():
            pass
    assert time.monotonic() - began < 5


def test_runs_writing_one_sqlite_store_at_once_all_land(tmp_path):
    """Two price runs at once on the default store (a market's children, a schedule and a
    manual run) both land: each waits for the other's write instead of failing."""
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd

    from tasks.store.engine import migrate
    from tasks.store.upsert import write_frame

    url = f"sqlite:///{tmp_path / 'market.db'}"
    migrate(url)
    engine = get_engine(url)

    def run(symbol: str) -> int:
        days = pd.bdate_range("2024-01-01", periods=40)
        written = 0
        for day in days:  # a read, then a write, in each transaction: what a chunk's write does
            frame = pd.DataFrame({"symbol": [symbol], "trade_date": [day.date()], "open": [1.0],
                                  "high": [1.0], "low": [1.0], "close": [1.0],
                                  "adj_close": [1.0], "volume": [1.0], "currency": ["USD"],
                                  "source": ["yahoo"]})  # fmt: skip
            with engine.begin() as conn:
                conn.execute(sa.text("SELECT count(*) FROM daily_prices")).scalar()
                time.sleep(0.005)
                written += write_frame(conn, "daily_prices", frame).inserted
        return written

    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(run, ["AAA", "BBB", "CCC", "DDD"]))
    assert counts == [40, 40, 40, 40]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM daily_prices")).scalar() == 160
