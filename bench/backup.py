"""Benchmark: our PostgreSQL backup (dump, row counts, checksum, manifest) vs bare pg_dump -Fc.

Builds a scratch database with 1,000,000 daily_prices rows, then alternates a bare
`pg_dump -Fc -f` and our backup task body (tasks.backups.postgres.dump.backup_database)
five times each and takes the medians. peak_rss_mb is sampled over this process and its children
(pg_dump) together while they run: what the job needs on the data node. Writes
bench/results/backup.json (ours_s, pg_dump_s, ratio, peak_rss_mb).

    .venv/bin/python bench/backup.py [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.memory import peak_rss_mb  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "backup.json"
ROWS = 1_000_000
REPEATS = 5


class PeakRss:
    """Samples this process and its children every 20 ms: the job's real peak memory.

    Summed as PSS (shared pages split between sharers): plain RSS would count a child twice
    for the moment between fork and exec, when it still maps all of this process.
    """

    def __init__(self):
        import threading

        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    total += p.memory_full_info().pss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def build_database(admin_url: str) -> str:
    import psycopg

    from bench.scratch import create_store

    url = create_store(admin_url, prefix="investflow_bench_backup")
    with psycopg.connect(url, autocommit=True) as conn:
        # 1,000 symbols x 1,000 sessions of plausible prices.
        conn.execute(
            """
            INSERT INTO daily_prices (symbol, trade_date, open, high, low, close, adj_close,
                                      volume, currency, source)
            SELECT 'SYM' || s, date '2020-01-01' + d,
                   p, p * 1.01, p * 0.99, p * (1 + (random() - 0.5) / 50), p,
                   (random() * 1e7)::bigint, 'USD', 'yahoo'
            FROM generate_series(1, 1000) s, generate_series(1, %s) d,
                 LATERAL (SELECT 10 + s + d * 0.01 + random() AS p) q
            """,
            (ROWS // 1000,),
        )
        conn.execute("VACUUM ANALYZE daily_prices")
    return url


def bare_pg_dump(url: str, out: Path) -> float:
    from pydantic import SecretStr

    from tasks.backups.postgres.target import PgTarget, child_env

    env = child_env(PgTarget(SecretStr(url)))
    start = time.perf_counter()
    subprocess.run(["pg_dump", "-Fc", "-f", str(out)], env=env, check=True)
    elapsed = time.perf_counter() - start
    out.unlink()
    return elapsed


def ours(url: str, root: Path) -> tuple[float, int]:
    import shutil

    from pydantic import SecretStr

    from tasks.backups.postgres.dump import backup_database
    from tasks.backups.postgres.target import PgTarget

    start = time.perf_counter()
    stored = backup_database.fn(
        PgTarget(SecretStr(url)), root, {"daily": 7, "weekly": 4, "monthly": 0}
    )
    elapsed = time.perf_counter() - start
    assert stored.manifest["row_counts"]["public.daily_prices"] == ROWS
    size = stored.size_bytes
    shutil.rmtree(root / "postgres")
    return elapsed, size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    import psutil

    t0 = time.perf_counter()
    url = build_database(args.admin_url)
    before = psutil.Process().memory_info().rss
    print(f"built {ROWS:,} rows in {time.perf_counter() - t0:.1f} s")
    work = Path(tempfile.mkdtemp(prefix="investflow-bench-backup-"))
    try:
        ours_times, bare_times = [], []
        with PeakRss() as rss:
            for i in range(REPEATS):
                # Alternate the order so neither side always runs on a warmer cache.
                if i % 2:
                    seconds, size = ours(url, work)
                    bare_times.append(bare_pg_dump(url, work / "bare.dump"))
                else:
                    bare_times.append(bare_pg_dump(url, work / "bare.dump"))
                    seconds, size = ours(url, work)
                ours_times.append(seconds)
                print(
                    f"run {i + 1}: pg_dump {bare_times[-1]:.2f} s, ours {seconds:.2f} s "
                    f"({size / 2**20:.1f} MiB)"
                )
    finally:
        from bench.scratch import drop_store

        drop_store(url, args.admin_url)
        import shutil

        shutil.rmtree(work, ignore_errors=True)

    result = {
        "ours_s": round(statistics.median(ours_times), 3),
        "pg_dump_s": round(statistics.median(bare_times), 3),
        "ratio": round(statistics.median(ours_times) / statistics.median(bare_times), 3),
        # This process (Prefect, SQLAlchemy, psycopg imported) plus pg_dump, sampled together.
        "peak_rss_mb": round(rss.peak / 2**20, 1),
        "python_peak_rss_mb": round(peak_rss_mb(), 1),
        "python_rss_before_mb": round(before / 2**20, 1),
        "ours_runs_s": [round(t, 3) for t in ours_times],
        "pg_dump_runs_s": [round(t, 3) for t in bare_times],
        "rows": ROWS,
        "repeats": REPEATS,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    targets_met = result["ratio"] <= 1.15 and result["peak_rss_mb"] < 200
    print("targets (ratio <= 1.15, peak RSS < 200 MB):", "met" if targets_met else "NOT met")


if __name__ == "__main__":
    main()
