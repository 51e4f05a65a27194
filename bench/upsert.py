"""Benchmark: daily price rows into PostgreSQL, raw COPY vs to_sql vs our upsert.

Run: .venv/bin/python bench/upsert.py [--rows N] [--repeats R]. Writes bench/results/upsert.json.
The admin URL comes from INVESTFLOW_TEST_DATABASE_URL (default: local postgres, trust auth);
a scratch database is created and dropped.

Two shapes of write, each timed R times (median reported, every side of a ratio alike):
- one call of all rows into an empty table (COPY, our upsert fresh / unchanged / 5% changed,
  pandas to_sql in a child process so its memory is not counted as ours);
- the flow's real path (flows/prices.py write_chunk): one call per symbol into a table that
  already holds other symbols' history: a backfill of new symbols (against a raw COPY per
  symbol into the same kind of table) and a daily run (each symbol's 5 lookback sessions,
  unchanged, plus one new session).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.memory import peak_rss_mb  # noqa: E402
from bench.scratch import create_store, drop_store  # noqa: E402
from tasks.store.copy import copy_frame  # noqa: E402
from tasks.store.engine import get_engine
from tasks.store.schema import UPSERT_SPECS  # noqa: E402
from tasks.store.upsert import upsert_frame  # noqa: E402

SYMBOLS = 500
LOOKBACK = 5  # flows/prices.py lookback_sessions default
RESULTS = Path(__file__).resolve().parent / "results" / "upsert.json"


def synthetic_prices(rows: int, seed: int = 7, prefix: str = "S") -> pd.DataFrame:
    """rows daily bars: 500 symbols of business days, random-walk prices."""
    days = rows // SYMBOLS
    rng = np.random.default_rng(seed)
    # datetime64 dates and shared symbol strings: a frame as compact as a real one can be.
    dates = pd.bdate_range("2015-01-02", periods=days).values
    names = np.array([f"{prefix}{i:04d}" for i in range(SYMBOLS)], dtype=object)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (SYMBOLS, days)), axis=1)).ravel()
    return pd.DataFrame(
        {
            "symbol": np.repeat(names, days),
            "trade_date": np.tile(dates, SYMBOLS),
            "open": close * 0.998,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "adj_close": close * 0.97,
            "volume": rng.integers(1_000, 5_000_000, SYMBOLS * days),
            "currency": "USD",
            "source": "bench",
        }
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def to_sql_in_child(url: str, rows: int) -> tuple[float, float]:
    """Time pandas.to_sql in its own interpreter, so its memory is not counted as ours."""
    out = subprocess.run(
        [sys.executable, __file__, "--rows", str(rows), "--to-sql-into", url],
        check=True,
        capture_output=True,
        text=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    return figures["seconds"], figures["peak_rss_mb"]


def run_to_sql(url: str, rows: int) -> None:
    frame = synthetic_prices(rows)
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE raw_to_sql")
    seconds = timed(
        lambda: frame.to_sql(
            "raw_to_sql", engine, if_exists="append", index=False, chunksize=10_000
        )
    )
    peak = peak_rss_mb()
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--to-sql-into", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.to_sql_into:
        run_to_sql(args.to_sql_into, args.rows)
        return

    runs: dict[str, list[float]] = {}
    load_before = os.getloadavg()[0]

    def record(name: str, seconds: float) -> None:
        runs.setdefault(name, []).append(seconds)

    url = create_store()
    try:
        engine = get_engine(url)
        frame = synthetic_prices(args.rows)
        n = len(frame)
        spec = UPSERT_SPECS["daily_prices"]
        columns = list(spec.columns)
        with engine.begin() as conn:
            for table in ("raw_copy", "raw_to_sql"):
                conn.exec_driver_sql(f"CREATE TABLE {table} (LIKE daily_prices INCLUDING ALL)")

        def raw_copy(table: str, rows: pd.DataFrame) -> None:
            with engine.begin() as conn:
                cursor = conn.connection.driver_connection.cursor()
                copy_frame(cursor, table, spec, columns, rows)

        changed = frame.copy()
        picked = np.random.default_rng(1).choice(n, size=n // 20, replace=False)
        changed.loc[picked, "close"] = changed.loc[picked, "close"] * 1.01

        # 1. One call into an empty table; the sides interleaved within each repetition, so a
        #    busy moment on the shared machine hits them all alike.
        for _ in range(args.repeats):
            with engine.begin() as conn:
                conn.exec_driver_sql("TRUNCATE raw_copy, daily_prices")
            record("copy", timed(lambda: raw_copy("raw_copy", frame)))
            record("fresh", timed(lambda: upsert_frame(engine, "daily_prices", frame)))
            record("unchanged", timed(lambda: upsert_frame(engine, "daily_prices", frame)))
            start = time.perf_counter()
            result = upsert_frame(engine, "daily_prices", changed)
            record("changed", time.perf_counter() - start)
            assert result.updated == n // 20, result
            seconds, to_sql_rss = to_sql_in_child(url, args.rows)
            record("to_sql", seconds)
        del changed
        one_call_peak_mb = peak_rss_mb()

        # 2. The flow's path. The history: the frame above (500 symbols), in both tables.
        with engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE raw_copy")
        raw_copy("raw_copy", frame)
        upsert_frame(engine, "daily_prices", frame)  # undo the 5% change: stored == frame
        new = synthetic_prices(args.rows, seed=8, prefix="N")
        per_symbol = [rows for _, rows in new.groupby("symbol", sort=False)]
        run_id = str(uuid.uuid4())
        for _ in range(args.repeats):
            with engine.begin() as conn:
                for table in ("raw_copy", "daily_prices"):
                    conn.execute(sa.text(f"DELETE FROM {table} WHERE symbol LIKE :p"), {"p": "N%"})
            record("copy_per_symbol", timed(lambda: [raw_copy("raw_copy", r) for r in per_symbol]))
            record(
                "fresh_per_symbol",
                timed(
                    lambda: [
                        upsert_frame(engine, "daily_prices", r, flow_run_id=run_id)
                        for r in per_symbol
                    ]
                ),
            )
        # A daily run: each history symbol's last LOOKBACK stored sessions plus one new one.
        days = args.rows // SYMBOLS
        next_day = pd.bdate_range("2015-01-02", periods=days + 1).values[-1]
        daily_frames = []
        for _, rows in frame.groupby("symbol", sort=False):
            tail = rows.iloc[-LOOKBACK:]
            new_row = tail.iloc[[-1]].assign(trade_date=next_day)
            daily_frames.append(pd.concat([tail, new_row], ignore_index=True))
        for _ in range(args.repeats):
            with engine.begin() as conn:
                conn.execute(
                    sa.text("DELETE FROM daily_prices WHERE trade_date = :d"),
                    {"d": pd.Timestamp(next_day).date()},
                )
            start = time.perf_counter()
            results = [
                upsert_frame(engine, "daily_prices", r, flow_run_id=run_id) for r in daily_frames
            ]
            record("daily_per_symbol", time.perf_counter() - start)
            assert sum(r.inserted for r in results) == SYMBOLS, results[:3]
            assert sum(r.unchanged for r in results) == SYMBOLS * LOOKBACK, results[:3]
        with engine.connect() as conn:
            total = conn.execute(sa.text("SELECT count(*) FROM daily_prices")).scalar()
        assert total == 2 * n + SYMBOLS, total
        engine.dispose()
    finally:
        drop_store(url)

    med = {name: statistics.median(values) for name, values in runs.items()}
    peak_mb = peak_rss_mb()
    figures = {
        # The floor: a raw binary COPY of the same rows into an empty table like daily_prices
        # (the least a write can cost); the peer: pandas to_sql of the same frame.
        "floor": "raw binary COPY",
        "peer": "pandas.to_sql",
        "rows": n,
        "repeats": args.repeats,
        "statistic": "median",
        "copy_rows_s": round(n / med["copy"]),
        "to_sql_rows_s": round(n / med["to_sql"]),
        "ours_fresh_rows_s": round(n / med["fresh"]),
        "ours_unchanged_rows_s": round(n / med["unchanged"]),
        "ours_5pct_changed_rows_s": round(n / med["changed"]),
        "flow_path": {
            "history_rows": n,
            "calls": SYMBOLS,
            "copy_per_symbol_rows_s": round(n / med["copy_per_symbol"]),
            "ours_per_symbol_rows_s": round(n / med["fresh_per_symbol"]),
            "ours_per_symbol_ms_per_call": round(1000 * med["fresh_per_symbol"] / SYMBOLS, 2),
            "daily_run_s": round(med["daily_per_symbol"], 2),
            "daily_ms_per_call": round(1000 * med["daily_per_symbol"] / SYMBOLS, 2),
            "daily_rows_per_call": LOOKBACK + 1,
        },
        # The process that built the 500k-row frame and ran COPY and our one-call upserts;
        # then with the flow-path part too (a second 500k frame, split per symbol, held).
        "peak_rss_mb": round(one_call_peak_mb, 1),
        "peak_rss_mb_with_flow_path": round(peak_mb, 1),
        "to_sql_peak_rss_mb": round(to_sql_rss, 1),
        # The host (2 cores) is shared with other sessions' test runs: the 1-minute load
        # average before and after says how quiet it was.
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    figures["ratios"] = {
        "fresh_vs_copy": round(med["copy"] / med["fresh"], 2),
        "unchanged_vs_copy": round(med["copy"] / med["unchanged"], 2),
        "changed_5pct_vs_copy": round(med["copy"] / med["changed"], 2),
        "fresh_vs_to_sql": round(med["to_sql"] / med["fresh"], 2),
        "per_symbol_vs_copy_per_symbol": round(med["copy_per_symbol"] / med["fresh_per_symbol"], 2),
        "per_symbol_vs_one_call": round(med["fresh"] / med["fresh_per_symbol"], 2),
    }
    figures["runs_s"] = {name: [round(v, 3) for v in values] for name, values in runs.items()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key:>26}: {value}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
