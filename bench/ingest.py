"""Bench: us-prices backfill of 500 symbols x 10 years from the Yahoo stand-in, then a quiet daily
run, then a daily run on which 1% of the universe re-bases (a new dividend re-scales its whole
adj_close history), beside a naive single yf.download into to_sql; peak RSS and wall time.

Run: .venv/bin/python bench/ingest.py [--profile]  (needs PostgreSQL at 127.0.0.1:5432; takes
several minutes). Each measured job runs in its own process, so its peak RSS is the whole
process's, as on Fargate (with the ingestion image's MALLOC_ARENA_MAX=2), against a Prefect
server as make up runs it (bench/scratch.py prefect_server). The backfill runs three times,
each into a fresh store, and the daily run three times, each on a fresh copy of the store the
first backfill left; each one's floor as often. Each figure is the median (the peak RSS the
highest), and every run's seconds are kept in the result. Beside each run's wall time, its
duration as Prefect records it (Running to Completed, as the UI shows it): Prefect 3.8.8's
teardown joins the heartbeat thread, which sleeps a second at a time, so the process's wall
time moves in steps of up to a second while the run's own does not.

The floor of each job, measured in the same run: the stand-in's bare answer time for the very
requests the job made, at the job's concurrency (curl_cffi GETs, bodies read, nothing parsed),
plus a raw binary COPY of the rows the job stored into an empty table like daily_prices. With
--profile, a second backfill into a fresh store runs under cProfile (bench/profiling.py) and
its top entries go into the result file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.memory import peak_rss_mb  # noqa: E402

SYMBOLS = [f"B{i:03d}" for i in range(500)]
BACKFILL_AS_OF = "2026-11-20T22:00:00+00:00"  # a Friday after the NYSE close
DAILY_AS_OF = "2026-11-23T22:00:00+00:00"  # the Monday after: one new session
REBASE_AS_OF = "2026-11-24T22:00:00+00:00"  # Tuesday: one new session, 1% of symbols re-based
REBASED = SYMBOLS[::100]  # 5 of 500
START = "2016-11-21"
# The rate limit as good as off (its slots taken a chunk at a time): measure our code, not the
# polite production 4/s.
RATE_SLOTS, RATE_PER_S = 1000, 1000.0
DAILY_RUNS = 3
BACKFILL_RUNS = 3  # the backfill and its floor: the median of each
FETCH_WORKERS = 2  # tasks/market/yahoo.py fetch_chunk: requests in flight at once
URL = "INVESTFLOW_DATABASE_URL"


def cpu_seconds() -> float:
    """CPU time of this process, all its threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_flow(as_of: str, start: str | None, profile: bool = False) -> None:
    """Run us-prices in this process and print its figures (with profile: its cProfile too)."""
    import contextlib

    from bench.profiling import profiled
    from flows.prices import ingest_us_prices

    top: dict = {}
    began, cpu_began = time.perf_counter(), cpu_seconds()
    with profiled(top) if profile else contextlib.nullcontext():
        state = ingest_us_prices.with_options(retries=0)(
            symbols=SYMBOLS,
            start=dt.date.fromisoformat(start) if start else None,
            as_of=dt.datetime.fromisoformat(as_of),
            chunk_size=25,
            return_state=True,
        )
    elapsed, cpu = time.perf_counter() - began, cpu_seconds() - cpu_began
    result = state.result()
    rebased = result.get("rebased", {})
    print(
        json.dumps(
            {
                "s": elapsed,
                "run_s": run_seconds(state),
                "cpu_s": cpu,
                "rss_mb": peak_rss_mb(),
                "failed": len(result["failed"]),
                "rebased": len(rebased),
                "rows_changed": result.get("updated", 0),
                "profile": top,
            }
        )
    )


def run_seconds(state) -> float:
    """The run's own duration as Prefect records it and the UI shows it: from Running to its
    final state. The process's wall time adds Prefect's start and teardown around it (in
    3.8.8 the teardown joins the heartbeat thread, which sleeps a second at a time)."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    return (run.end_time - run.start_time).total_seconds()


def fetched_rows_store(url: str, day: str) -> str:
    """A scratch store holding only the rows a daily run fetched: its lookback and new day."""
    import psycopg

    from bench.scratch import create_store

    lookback = 5  # flows/prices.py lookback_sessions default
    target = create_store(prefix="investflow_bench_floor")
    with psycopg.connect(url) as src, psycopg.connect(target) as dst:
        rows = src.execute(
            "SELECT symbol, trade_date, open, high, low, close, adj_close, volume, currency, "
            "source FROM (SELECT *, row_number() OVER (PARTITION BY symbol ORDER BY trade_date "
            "DESC) AS n FROM daily_prices WHERE trade_date <= %s) AS p WHERE n <= %s",
            (day, lookback + 1),
        ).fetchall()
        with dst.cursor().copy(
            "COPY daily_prices (symbol, trade_date, open, high, low, close, adj_close, volume, "
            "currency, source) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
    return target


def set_day(fake, day: str | dt.date | None) -> None:
    """Move the stand-in's clock, and have it build every symbol's history for that day now:
    it keeps a history per clock, as Yahoo serves a stored one, and building 500 ten-year
    histories during the first run after a clock change cost that run about 5 s of the
    stand-in's time (the first daily run took 7.3 s, the next ones 2.2 s)."""
    fake.today = dt.date.fromisoformat(day[:10]) if isinstance(day, str) else day
    for symbol in SYMBOLS:
        fake.series(symbol)


def quiet_days(fake) -> None:
    """No symbol goes ex-dividend after the backfill, so only the scripted ones re-base."""
    after = dt.date.fromisoformat(BACKFILL_AS_OF[:10])
    for symbol in SYMBOLS:
        paid = fake.dividend_schedule(symbol)
        fake.dividends[symbol] = {d: a for d, a in paid.items() if d <= after}


def child_naive(db_url: str) -> None:
    """One yf.download of the whole universe, straight into to_sql."""
    import sqlalchemy as sa
    import yfinance as yf

    from tasks.market.yahoo import reset_yfinance, yahoo_session
    from tasks.settings import get_settings

    settings = get_settings()
    ca_bundle = str(settings.yahoo_ca_bundle) if settings.yahoo_ca_bundle else None
    session = yahoo_session(settings.yahoo_base_url, ca_bundle)
    reset_yfinance(session)
    yf.config.debug.hide_exceptions = True
    began = time.perf_counter()
    wide = yf.download(
        SYMBOLS,
        start=START,
        end="2026-11-21",
        auto_adjust=False,
        actions=True,
        session=session,
        progress=False,
        threads=True,
    )
    long = wide.stack(level="Ticker", future_stack=True).reset_index()
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    long.to_sql("naive_prices", engine, if_exists="replace", index=False, chunksize=10_000)
    elapsed = time.perf_counter() - began
    print(json.dumps({"s": elapsed, "rss_mb": peak_rss_mb(), "rows": len(long)}))


def child_empty() -> None:
    """A flow run that does nothing, run as child_flow runs us-prices: what Prefect itself
    costs any run in a fresh process (creating the run, its states, the heartbeat thread)."""
    from prefect import flow

    import flows.prices  # noqa: F401 - the same imports as the measured run

    @flow(name="empty-run")
    def empty_run() -> None:
        return None

    began, cpu_began = time.perf_counter(), cpu_seconds()
    state = empty_run(return_state=True)
    elapsed, cpu = time.perf_counter() - began, cpu_seconds() - cpu_began
    print(json.dumps({"s": elapsed, "run_s": run_seconds(state), "cpu_s": cpu}))


def child_floor(
    requests_file: str, db_url: str, base_url: str, ca_file: str, client: str = "curl"
) -> None:
    """The least a job needs: its GETs at its concurrency, bodies read, then COPY of its rows.

    client "yfinance": the same GETs through yfinance's own request path instead (`YfData.get`
    on the session the job uses: its cookie and crumb handling, logging and 429 checks), the
    crumb fetched before the clock starts; what no job that asks Yahoo through yfinance can
    go below, however little it does with the answers."""
    from concurrent.futures import ThreadPoolExecutor

    import psycopg
    from curl_cffi import CurlOpt
    from curl_cffi import requests as curl_requests

    from tasks.market.yahoo import reset_yfinance, resolve_entries, yahoo_session

    urls = json.loads(Path(requests_file).read_text())
    if client == "yfinance":
        from yfinance.data import YfData

        session = yahoo_session(base_url, ca_file)
        reset_yfinance(session)
        YfData(session=session)._get_cookie_and_crumb()  # once per process, before the clock

        def get(url: str) -> int:
            return len(YfData(session=session).get(url, timeout=60).content)

    else:
        session = curl_requests.Session(
            impersonate="chrome",
            curl_options={CurlOpt.RESOLVE: resolve_entries(base_url)},
            verify=ca_file,
        )

        def get(url: str) -> int:
            return len(session.get(url, timeout=60).content)

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
        sizes = list(pool.map(get, urls))
    get_s = time.perf_counter() - began
    with psycopg.connect(db_url, autocommit=True) as conn:
        buffer = bytearray()
        with conn.cursor().copy("COPY daily_prices TO STDOUT (FORMAT BINARY)") as copy:
            for block in copy:
                buffer += block
        rows = conn.execute("SELECT count(*) FROM daily_prices").fetchone()[0]
        conn.execute("DROP TABLE IF EXISTS floor_copy")
        conn.execute("CREATE TABLE floor_copy (LIKE daily_prices INCLUDING ALL)")
        began = time.perf_counter()
        with (
            conn.transaction(),
            conn.cursor().copy("COPY floor_copy FROM STDIN (FORMAT BINARY)") as copy,
        ):
            view = memoryview(buffer)
            for start in range(0, len(view), 1 << 20):
                copy.write(view[start : start + (1 << 20)])
        copy_s = time.perf_counter() - began
        conn.execute("DROP TABLE floor_copy")
    print(json.dumps({"get_s": get_s, "copy_s": copy_s, "requests": len(urls),
                      "body_mb": sum(sizes) / 1e6, "rows": rows}))  # fmt: skip


def request_urls(requests) -> list[str]:
    """The chart requests a job made, as URLs to replay against the stand-in."""
    from urllib.parse import urlencode

    return [
        f"https://query2.finance.yahoo.com{r.path}?{urlencode(r.query)}"
        for r in requests
        if r.path.startswith("/v8/finance/chart/")
    ]


def floor(fake, requests, db_url: str, env: dict, client: str = "curl") -> dict:
    """child_floor in its own process, over the given requests and the rows stored at db_url."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(request_urls(requests), f)
        f.flush()
        return run_child(["floor", f.name, db_url, fake.url, str(fake.ca_file), client], env)


def machine_cpu() -> tuple[int, int]:
    """All cores' busy and total clock ticks since boot (/proc/stat; iowait counts as idle)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def measured(args: list[str], env: dict) -> dict:
    """run_child, with who kept the cores busy meanwhile: the machine's busy share of its
    cores, and the CPU seconds of this process (the bench, idle but for the stand-in serving
    Yahoo) beside the child's own."""
    busy, total = machine_cpu()
    stand_in = cpu_seconds()
    out = run_child(args, env)
    now_busy, now_total = machine_cpu()
    return out | {
        "machine_busy": (now_busy - busy) / max(now_total - total, 1),
        "stand_in_cpu_s": cpu_seconds() - stand_in,
    }


def run_child(args: list[str], env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(profile: bool = False) -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    # Prefect reads its settings when first imported: this process's client talks to the
    # bench's own server and keeps its state out of the developer's ~/.prefect.
    os.environ.update(PREFECT_HOME=str(home / "client"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    from bench.scratch import clone_store, create_store, drop_store, prefect_server

    server = prefect_server("sqlite", home / "server")
    os.environ.update(PREFECT_API_URL=server.api_url)
    from tasks.limits import set_limit
    from tests.fakes.yahoo import FakeYahoo

    db_url = create_store()
    try:
        server.start()
        with FakeYahoo() as fake:
            set_limit("yahoo", RATE_SLOTS, RATE_PER_S)
            env = dict(
                os.environ,
                INVESTFLOW_DATABASE_URL=db_url,
                **fake.env(),
                PREFECT_LOGGING_LEVEL="WARNING",
                MALLOC_ARENA_MAX="2",  # as the ingestion image runs its flows
                PYTHONPATH=str(ROOT),
            )
            quiet_days(fake)
            set_day(fake, BACKFILL_AS_OF)
            load = [os.getloadavg()[0]]
            before = len(fake.requests)
            backfills = [measured(["flow", BACKFILL_AS_OF, START], env)]
            load.append(os.getloadavg()[0])
            backfill_requests = fake.requests[before:]
            # Once more into fresh stores, and the floor as often: one run of each moved the
            # ratio by a quarter. The first run's store is the one the daily runs start from.
            for _ in range(BACKFILL_RUNS - 1):
                fresh = create_store()
                try:
                    backfills.append(measured(["flow", BACKFILL_AS_OF, START], env | {URL: fresh}))
                finally:
                    drop_store(fresh)
            floors = [floor(fake, backfill_requests, db_url, env) for _ in range(BACKFILL_RUNS)]
            load.append(os.getloadavg()[0])
            backfill = {
                k: statistics.median(b[k] for b in backfills)
                for k in ("s", "run_s", "cpu_s", "machine_busy", "stand_in_cpu_s")
            } | {"rss_mb": max(b["rss_mb"] for b in backfills)}  # the highest peak
            backfill_floor = {
                k: statistics.median(f[k] for f in floors) for k in ("get_s", "copy_s")
            } | {k: floors[0][k] for k in ("requests", "body_mb", "rows")}
            backfill_floor_total = statistics.median(f["get_s"] + f["copy_s"] for f in floors)
            set_day(fake, DAILY_AS_OF)
            # The daily run, DAILY_RUNS times, each on a fresh copy of the store as the backfill
            # left it; the median is the figure.
            dailies, daily_requests, daily_chart = [], [], []
            for _ in range(DAILY_RUNS):
                copy = clone_store(db_url)
                try:
                    before, charts = len(fake.requests), len(fake.chart_requests())
                    dailies.append(run_child(["flow", DAILY_AS_OF, ""], env | {URL: copy}))
                    daily_requests.append(len(fake.requests) - before)
                    daily_chart.append(len(fake.chart_requests()) - charts)
                    load.append(os.getloadavg()[0])
                    if len(dailies) == 1:
                        # The floor's COPY: the rows the daily run fetched (its lookback and
                        # the new session), alone in a table. Its GETs: the run's requests,
                        # taken before the floors add theirs. As often as the run (one floor
                        # moved by a quarter between bench runs); the median is the figure.
                        fetched = fetched_rows_store(copy, DAILY_AS_OF[:10])
                        made = fake.requests[before:]
                        try:
                            # Beside each floor, the same GETs through yfinance's own
                            # request path: the least any yfinance-based run needs.
                            daily_floors, yfinance_floors = [], []
                            for _ in range(DAILY_RUNS):
                                daily_floors.append(floor(fake, made, fetched, env))
                                yfinance_floors.append(
                                    floor(fake, made, fetched, env, client="yfinance")
                                )
                        finally:
                            drop_store(fetched)
                finally:
                    drop_store(copy)
            # What Prefect costs a run that does nothing, measured as the daily run is.
            empty_runs = [run_child(["empty"], env) for _ in range(DAILY_RUNS)]
            empties = [e["s"] for e in empty_runs]
            run_child(["flow", DAILY_AS_OF, ""], env)  # the store itself, for Tuesday's run
            daily = {
                k: statistics.median(d[k] for d in dailies)
                for k in ("s", "run_s", "cpu_s", "rss_mb")
            }
            # Tuesday: five symbols go ex-dividend, so Yahoo re-scales their whole adj_close.
            rebase_day = dt.date.fromisoformat(REBASE_AS_OF[:10])
            for symbol in REBASED:
                fake.dividends[symbol][rebase_day] = 0.5
            set_day(fake, rebase_day)
            charts_before = len(fake.chart_requests())
            rebase = run_child(["flow", REBASE_AS_OF, ""], env)
            rebase_chart = len(fake.chart_requests()) - charts_before
            set_day(fake, None)
            naive = run_child(["naive", db_url], env)
            load.append(os.getloadavg()[0])
            top = {}
            if profile:
                fresh = create_store()
                try:
                    set_day(fake, BACKFILL_AS_OF)
                    top = run_child(["profile", BACKFILL_AS_OF, START], env | {URL: fresh})
                    top = top["profile"] | {"profiled_s": round(top["s"], 1)}
                finally:
                    fake.today = None
                    drop_store(fresh)
    finally:
        server.stop()
        drop_store(db_url)
        shutil.rmtree(home, ignore_errors=True)

    backfill_floor_s = backfill_floor_total
    daily_floor_s = statistics.median(f["get_s"] + f["copy_s"] for f in daily_floors)
    daily_floor = {
        k: statistics.median(f[k] for f in daily_floors) for k in ("get_s", "copy_s")
    } | {k: daily_floors[0][k] for k in ("requests", "body_mb", "rows")}
    yfinance_get_s = statistics.median(f["get_s"] for f in yfinance_floors)
    figures = {
        "backfill_peak_rss_mb": round(backfill["rss_mb"], 1),
        "backfill_s": round(backfill["s"], 1),
        "backfill_runs_s": [round(b["s"], 1) for b in backfills],
        "backfill_floor_s": round(backfill_floor_s, 1),
        "backfill_floors_s": [round(f["get_s"] + f["copy_s"], 2) for f in floors],
        "backfill_floor": {k: round(v, 2) for k, v in backfill_floor.items()},
        "daily_s": round(daily["s"], 1),
        "daily_runs_s": [round(d["s"], 1) for d in dailies],
        # The same runs' durations as Prefect records them (Running to Completed: the UI's)
        "daily_run_s": round(daily["run_s"], 2),
        "daily_run_durations_s": [round(d["run_s"], 2) for d in dailies],
        "backfill_run_s": round(backfill["run_s"], 1),
        "backfill_run_durations_s": [round(b["run_s"], 1) for b in backfills],
        # Who kept the 2 cores busy during the backfill: its share of all cores' time, our
        # process's CPU, the stand-in's (the rest: PostgreSQL and the Prefect server).
        "backfill_machine_busy": round(backfill["machine_busy"], 2),
        "backfill_cpu_s": round(backfill["cpu_s"], 1),
        "backfill_stand_in_cpu_s": round(backfill["stand_in_cpu_s"], 1),
        "daily_floor_s": round(daily_floor_s, 2),
        "daily_floor": {k: round(v, 2) for k, v in daily_floor.items()},
        "daily_floors_s": [round(f["get_s"] + f["copy_s"], 2) for f in daily_floors],
        # The same GETs through yfinance's own request path (YfData.get), bodies read,
        # nothing parsed: what the client the job must use costs before any of our work.
        "daily_yfinance_get_s": round(yfinance_get_s, 2),
        "daily_yfinance_gets_s": [round(f["get_s"], 2) for f in yfinance_floors],
        "daily_cpu_s": round(daily["cpu_s"], 1),
        "empty_flow_run_s": round(statistics.median(empties), 2),
        "empty_flow_runs_s": [round(e, 2) for e in empties],
        "empty_flow_run_durations_s": [round(e["run_s"], 2) for e in empty_runs],
        "daily_peak_rss_mb": round(daily["rss_mb"], 1),
        "daily_requests": max(daily_requests),
        "daily_requests_per_symbol": round(max(daily_requests) / len(SYMBOLS), 2),
        "rebase_day_s": round(rebase["s"], 1),
        "rebase_day_chart_requests": rebase_chart,
        "rebase_day_rebased": rebase["rebased"],
        "rebase_day_rows_changed": rebase["rows_changed"],
        "rebase_extra_s": round(rebase["s"] - daily["s"], 1),
        "naive_peak_rss_mb": round(naive["rss_mb"], 1),
        "naive_s": round(naive["s"], 1),
        # context for the figures above
        "symbols": len(SYMBOLS),
        "daily_chart_requests": max(daily_chart),
        "backfill_failed": max(b["failed"] for b in backfills),
        "rate_limit_per_s": RATE_PER_S,
        "naive_rows": naive["rows"],
        # Ours over the floor (1.0 = all this machine can do) and over the naive peer (< 1: ahead).
        "ratios": {
            "backfill_vs_floor": round(backfill["s"] / backfill_floor_s, 2),
            "backfill_run_vs_floor": round(backfill["run_s"] / backfill_floor_s, 2),
            "backfill_vs_peer": round(backfill["s"] / naive["s"], 2),
            "daily_vs_floor": round(daily["s"] / daily_floor_s, 2),
            # The run's duration as Prefect records it, over the same floor: the process's
            # start and teardown (the heartbeat join) left out.
            "daily_run_vs_floor": round(daily["run_s"] / daily_floor_s, 2),
            # yfinance's request path over the bare GETs, and the run over that path plus
            # the floor's COPY: how much of the run's distance from its floor is the client's.
            "daily_yfinance_get_vs_floor_get": round(yfinance_get_s / daily_floor["get_s"], 2),
            "daily_run_vs_yfinance_floor": round(
                daily["run_s"] / (yfinance_get_s + daily_floor["copy_s"]), 2
            ),
            # The floor plus what Prefect costs any run (empty_flow_run_s): the least a daily
            # run needs as a Prefect flow run.
            "daily_vs_floor_and_empty_run": round(
                daily["s"] / (daily_floor_s + statistics.median(empties)), 2
            ),
        },
        # The host (2 cores) is shared with other sessions' test runs: the 1-minute load
        # average before the backfill and after each job says how busy it was.
        "load_avg_1m": [round(x, 2) for x in load],
        "backfill_profile": top,
    }
    for key, value in figures.items():
        print(f"{key:>24}: {value}")
    out = ROOT / "bench" / "results" / "ingest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("flow", "profile"):
        child_flow(sys.argv[2], sys.argv[3] or None, profile=sys.argv[1] == "profile")
    elif len(sys.argv) > 1 and sys.argv[1] == "floor":
        child_floor(*sys.argv[2:7])
    elif len(sys.argv) > 1 and sys.argv[1] == "empty":
        child_empty()
    elif len(sys.argv) > 1 and sys.argv[1] == "naive":
        child_naive(sys.argv[2])
    else:
        main(profile="--profile" in sys.argv)
