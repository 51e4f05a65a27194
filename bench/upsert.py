"""Benchmark: 500,000 daily price rows into PostgreSQL, raw COPY vs to_sql vs our upsert.

Run: .venv/bin/python bench/upsert.py [--rows N]. Writes bench/results/upsert.json.
The admin URL comes from INVESTFLOW_TEST_DATABASE_URL (default: local postgres, trust auth);
a scratch database is created and dropped.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import create_store, drop_store  # noqa: E402
from tasks.schema import UPSERT_SPECS  # noqa: E402
from tasks.store import copy_frame, get_engine, upsert_frame  # noqa: E402

REPEATS = 3
RESULTS = Path(__file__).resolve().parent / "results" / "upsert.json"


def synthetic_prices(rows: int, seed: int = 7) -> pd.DataFrame:
    """rows daily bars: 500 symbols of business days, random-walk prices."""
    symbols = 500
    days = rows // symbols
    rng = np.random.default_rng(seed)
    # datetime64 dates and shared symbol strings: a frame as compact as a real one can be.
    dates = pd.bdate_range("2015-01-02", periods=days).values
    names = np.array([f"S{i:04d}" for i in range(symbols)], dtype=object)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (symbols, days)), axis=1)).ravel()
    frame = pd.DataFrame(
        {
            "symbol": np.repeat(names, days),
            "trade_date": np.tile(dates, symbols),
            "open": close * 0.998,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "adj_close": close * 0.97,
            "volume": rng.integers(1_000, 5_000_000, symbols * days),
            "currency": "USD",
            "source": "bench",
        }
    )
    return frame


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
    seconds = timed(
        lambda: frame.to_sql(
            "raw_to_sql", engine, if_exists="append", index=False, chunksize=10_000
        )
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--to-sql-into", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.to_sql_into:
        run_to_sql(args.to_sql_into, args.rows)
        return

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

        def raw_copy():
            with engine.begin() as conn:
                cursor = conn.connection.driver_connection.cursor()
                copy_frame(cursor, "raw_copy", spec, columns, frame)

        changed = frame.copy()
        picked = np.random.default_rng(1).choice(n, size=n // 20, replace=False)
        changed.loc[picked, "close"] = changed.loc[picked, "close"] * 1.01

        t_to_sql, to_sql_rss = to_sql_in_child(url, args.rows)
        # Best of REPEATS for each, interleaved, so a busy moment on the machine hits all alike.
        t_copy = t_fresh = t_unchanged = t_changed = float("inf")
        for _ in range(REPEATS):
            with engine.begin() as conn:
                conn.exec_driver_sql("TRUNCATE raw_copy, daily_prices")
            t_copy = min(t_copy, timed(raw_copy))
            t_fresh = min(t_fresh, timed(lambda: upsert_frame(engine, "daily_prices", frame)))
            t_unchanged = min(
                t_unchanged, timed(lambda: upsert_frame(engine, "daily_prices", frame))
            )
            start = time.perf_counter()
            result = upsert_frame(engine, "daily_prices", changed)
            t_changed = min(t_changed, time.perf_counter() - start)
            assert result.updated == n // 20, result
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM daily_prices")).scalar() == n
        engine.dispose()
    finally:
        drop_store(url)

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "rows": n,
        "copy_rows_s": round(n / t_copy),
        "to_sql_rows_s": round(n / t_to_sql),
        "ours_fresh_rows_s": round(n / t_fresh),
        "ours_unchanged_rows_s": round(n / t_unchanged),
        "ours_5pct_changed_rows_s": round(n / t_changed),
        # The process that built the frame, ran raw COPY and our upsert three times.
        "peak_rss_mb": round(peak_rss_mb, 1),
        "to_sql_peak_rss_mb": round(to_sql_rss, 1),
    }
    figures["ratios"] = {
        "fresh_vs_copy": round(t_copy / t_fresh, 2),
        "unchanged_vs_copy": round(t_copy / t_unchanged, 2),
        "changed_5pct_vs_copy": round(t_copy / t_changed, 2),
        "fresh_vs_to_sql": round(t_to_sql / t_fresh, 2),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key:>26}: {value}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
