"""Benchmark: reading 500 symbols x 10 years of daily prices back out of PostgreSQL.

Run: .venv/bin/python bench/read.py [--repeats R]. Writes bench/results/read.json.
Three sides, timed R times each, interleaved (medians compared):
- floor: read_prices' own query (`tasks.store.read._PG_PRICES`: a row per symbol holding its
  sessions as fixed-width records), its binary COPY's records into one buffer, viewed as a
  numpy record array (no per-value work at all);
- ours: tasks.store.read.read_prices (a long DataFrame), raw and dividend-adjusted;
- peer: pandas.read_sql of the plain query (PEER_SQL: `symbol = ANY(...)`, ORDER BY) on the
  same psycopg connection.
Memory: each side once more in its own process; its peak RSS over what it held before the
read, against the frame's own size (DataFrame.memory_usage(deep=True)).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.memory import peak_rss_mb  # noqa: E402
from bench.scratch import create_store, drop_store  # noqa: E402
from bench.upsert import synthetic_prices  # noqa: E402

SYMBOLS, DAYS = 500, 2520  # 10 years of sessions
START, END = "2015-01-01", "2025-12-31"
RESULTS = ROOT / "bench" / "results" / "read.json"
PEER_SQL = (
    "SELECT symbol, trade_date, open, high, low, close, adj_close, volume FROM daily_prices "
    "WHERE symbol = ANY(%(symbols)s) AND trade_date BETWEEN %(start)s AND %(end)s "
    "ORDER BY symbol, trade_date"
)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def symbols() -> list[str]:
    return [f"S{i:04d}" for i in range(SYMBOLS)]


def load(url: str) -> int:
    """The rows, and a quarterly dividend per symbol, straight in by COPY."""
    from tasks.store.copy import copy_frame
    from tasks.store.engine import get_engine
    from tasks.store.schema import UPSERT_SPECS

    engine = get_engine(url)
    frame = synthetic_prices(SYMBOLS * DAYS)
    days = frame["trade_date"].iloc[:DAYS].to_numpy()[::63][1:]
    actions = pd.DataFrame(
        {
            "symbol": np.repeat(symbols(), len(days)),
            "action_date": np.tile(days, SYMBOLS),
            "action_type": "dividend",
            "value": 0.4,
            "source": "bench",
        }
    )
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()
        for table, rows in (("daily_prices", frame), ("corporate_actions", actions)):
            spec = UPSERT_SPECS[table]
            copy_frame(cursor, table, spec, list(spec.columns), rows)
        conn.exec_driver_sql("ANALYZE daily_prices; ANALYZE corporate_actions")
    return len(frame)


def floor(url: str):
    """The same COPY's records into one buffer, viewed as numpy records.

    PostgreSQL sends a COPY row per message (the first also carries the header): each
    message's records are appended as they come, its row head left out, so one view of the
    buffer is the whole result.
    """
    from tasks.store.engine import get_engine
    from tasks.store.read import _HEADER, _PG_PRICES, _RECORD, _ROW_HEAD

    buffer, skip = bytearray(), _HEADER + _ROW_HEAD.itemsize
    params = {"symbols": symbols(), "start": START, "end": END}
    # The engine's pooled connection, as ours and the peer use: a fresh one per read cost
    # the floor about 0.1 s (a new server backend) that the other sides do not pay.
    with (
        get_engine(url).connect() as conn,
        conn.connection.driver_connection.cursor().copy(_PG_PRICES, params) as copy,
    ):
        for block in copy:
            if len(block) > 2:  # not the trailer
                buffer += block[skip:]
                skip = _ROW_HEAD.itemsize
    return np.frombuffer(buffer, dtype=_RECORD)


def ours(url: str, adjusted: bool = False) -> pd.DataFrame:
    from tasks.store.engine import get_engine
    from tasks.store.read import read_prices

    return read_prices(get_engine(url), symbols(), START, END, adjusted=adjusted)


def peer(url: str) -> pd.DataFrame:
    from tasks.store.engine import get_engine

    with get_engine(url).connect() as conn:
        return pd.read_sql(
            PEER_SQL, conn.connection.driver_connection,
            params={"symbols": symbols(), "start": START, "end": END},
        )  # fmt: skip


SIDES = {"floor": floor, "ours": ours, "ours_adjusted": lambda u: ours(u, True), "peer": peer}


def child(side: str, url: str) -> None:
    """One read in a fresh process: peak RSS over the RSS before it, and the result's size."""
    import warnings

    warnings.simplefilter("ignore")  # read_sql's DBAPI2 warning
    from tasks.store.engine import get_engine

    with get_engine(url).connect():  # imports and the pool, before the baseline
        pass
    before = rss_mb()
    result = SIDES[side](url)
    size = result.nbytes if isinstance(result, np.ndarray) else result.memory_usage(deep=True).sum()
    print(json.dumps({"extra_mb": peak_rss_mb() - before, "result_mb": size / 1e6,
                      "rows": len(result)}))  # fmt: skip


def main() -> None:
    import warnings

    warnings.simplefilter("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    load_avg = [os.getloadavg()[0]]
    url = create_store()
    try:
        rows = load(url)
        runs: dict[str, list[float]] = {}
        results = {}
        for _ in range(args.repeats):
            for side, fn in SIDES.items():
                began = time.perf_counter()
                results[side] = fn(url)
                runs.setdefault(side, []).append(time.perf_counter() - began)
        assert len(results["ours"]) == len(results["peer"]) == len(results["floor"]) == rows
        assert (results["ours"]["close"].to_numpy() == results["peer"]["close"].to_numpy()).all()
        del results
        load_avg.append(os.getloadavg()[0])
        memory = {}
        for side in SIDES:
            out = subprocess.run(
                [sys.executable, __file__, "--child", side, url],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            memory[side] = json.loads(out.stdout.strip().splitlines()[-1])
        load_avg.append(os.getloadavg()[0])
    finally:
        drop_store(url)
    med = {side: statistics.median(v) for side, v in runs.items()}
    figures = {
        "rows": rows,
        "symbols": SYMBOLS,
        "repeats": args.repeats,
        "statistic": "median",
        "seconds": {side: round(v, 3) for side, v in med.items()},
        "rows_per_s": {side: round(rows / v) for side, v in med.items()},
        # Speed relative to the floor (1.0 = as fast as COPY into numpy) and to the peer.
        "ratios": {
            "ours_vs_floor": round(med["floor"] / med["ours"], 2),
            "ours_adjusted_vs_floor": round(med["floor"] / med["ours_adjusted"], 2),
            "ours_vs_peer": round(med["peer"] / med["ours"], 2),
            "ours_adjusted_vs_peer": round(med["peer"] / med["ours_adjusted"], 2),
        },
        "memory": {
            side: {k: round(v, 1) for k, v in m.items()}
            | {"extra_over_result": round(m["extra_mb"] / m["result_mb"], 2)}
            for side, m in memory.items()
        },  # fmt: skip
        # The host (2 cores) is shared with other sessions' test runs.
        "load_avg_1m": [round(x, 2) for x in load_avg],
        "runs_s": {side: [round(x, 3) for x in v] for side, v in runs.items()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key:>12}: {value}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
