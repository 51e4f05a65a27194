"""Bench: a 9,000-symbol market (NASDAQ 5,000 + NYSE 4,000 from the listing stand-in) through the
universes flow and market-prices' child runs of us-prices, on a real process worker.

Run: .venv/bin/python bench/universe.py [--server sqlite|postgresql]  (needs PostgreSQL at
127.0.0.1:5432 for the market store; ~15 minutes here)
Measures: the universes flow itself (all seven universes, 9,000 US + 2,000 KR symbols: wall,
peak RSS, requests); the market's daily run (see START) with the rate limit as good as off
(our own time: parent wall, each child's wall and peak RSS, requests per symbol); projected at
Yahoo's polite 4 requests a second, with one budget per child (each Fargate task its own
address) and with one shared budget (one NAT address).

The Prefect server is a real `prefect server start`, run with what make up's runs
(deployments/local_stack.py, SERVER_SETTINGS: event ordering and SQLite writes that begin
IMMEDIATE), on its own SQLite file or (--server postgresql) on a PostgreSQL database it
creates and drops.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.memory import peak_rss_mb  # noqa: E402

NASDAQ, NYSE = 5000, 4000
DAILY_AS_OF = "2026-11-23T22:00:00+00:00"  # a Monday after the NYSE close
# The measured run asks each symbol for the last five sessions on an empty store: a daily
# run's requests (one chart request per symbol over its lookback window) and about its rows,
# without a first fill of 9,000 symbols before it (25+ minutes on this loaded machine).
START = "2026-11-17"
PER_CHILD, PARALLEL = 1500, 4
POLITE_PER_S = 4.0
RATE_SLOTS, RATE_PER_S = 1000, 1000.0


def child_universes() -> None:
    """Run the universes flow in this process (all seven universes) and print its figures."""
    from flows.listings import refresh_universes

    began = time.perf_counter()
    result = refresh_universes.with_options(retries=0)(
        as_of=dt.date.fromisoformat(DAILY_AS_OF[:10]), retry_delay_s=0.01
    )
    print(
        json.dumps(
            {
                "s": time.perf_counter() - began,
                "rss_mb": peak_rss_mb(),
                "members": result["members"],
                "changes": len(result["changes"]),
            }
        )
    )


def run_child(args: list[str], env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class TreeSampler(threading.Thread):
    """Peak RSS of every flow-run process under a worker, keyed by its flow run id."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peaks, self.stop = pid, {}, threading.Event()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self.stop.is_set():
            for proc in root.children(recursive=True):
                try:
                    run_id = proc.environ().get("PREFECT__FLOW_RUN_ID")
                    rss = proc.memory_info().rss / 2**20
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                if run_id:
                    self.peaks[run_id] = max(self.peaks.get(run_id, 0.0), rss)
            time.sleep(0.2)


def market_run(client, parent, child_name: str, as_of: str, start: str | None):
    from tests.deployments import stack

    began = time.perf_counter()
    run = client.create_flow_run_from_deployment(
        parent,
        parameters={
            "market": "US",
            "per_child": PER_CHILD,
            "parallel": PARALLEL,
            "child_deployment": f"us-prices/{child_name}",
            "start": start,
            "as_of": as_of,
        },
    )
    done = stack.wait_for_final_state(run.id, timeout=3600)
    if done.state_name != "Completed":
        raise RuntimeError(f"market run ended {done.state_name}: {done.state.message}")
    return done, time.perf_counter() - began


def load() -> str:
    return Path("/proc/loadavg").read_text().strip()


def main(backend: str) -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-universe-"))
    # Prefect reads its settings when first imported: this process's client talks to the
    # bench's own server and keeps its state out of the developer's ~/.prefect.
    os.environ.update(PREFECT_HOME=str(home / "client"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    load_before = load()
    from bench.scratch import prefect_server

    server = prefect_server(backend, home / "server")
    os.environ.update(PREFECT_API_URL=server.api_url)

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from bench.scratch import create_store, drop_store
    from flows.market import ingest_market_prices
    from flows.prices import ingest_us_prices
    from tasks.limits import set_limit
    from tests.deployments import stack
    from tests.fakes.listings import FakeListings
    from tests.fakes.yahoo import FakeYahoo
    from tests.flows.test_market_split import deploy

    db_url = create_store()
    logs = home / "logs"
    logs.mkdir()
    try:
        server.start()
        with FakeYahoo() as yahoo, FakeListings(nasdaq=NASDAQ, nyse=NYSE) as listings:
            set_limit("yahoo", RATE_SLOTS, RATE_PER_S)
            env = dict(
                os.environ,
                INVESTFLOW_DATABASE_URL=db_url,
                **yahoo.env(),
                **listings.env(),
                PREFECT_API_URL=server.api_url,
                PREFECT_LOGGING_LEVEL="WARNING",
                PYTHONPATH=str(ROOT),
                INVESTFLOW_CODE_DIR=str(ROOT),
                PREFECT_WORKER_QUERY_SECONDS="1",
            )
            before = len(listings.requests)
            universes = run_child(["universes"], env)
            listing_requests = len(listings.requests) - before
            again = run_child(["universes"], env)  # the steady state: nothing changed

            pool = f"bench-universe-{uuid.uuid4().hex[:6]}"
            with get_client(sync_client=True) as client:
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
                child = deploy(
                    client, ingest_us_prices, pool, pool, "flows/prices.py:ingest_us_prices"
                )
                parent = deploy(
                    client,
                    ingest_market_prices,
                    f"m-{pool}",
                    pool,
                    "flows/market.py:ingest_market_prices",
                )
            with stack.worker(pool, env, logs, limit=PARALLEL + 1) as worker:
                with get_client(sync_client=True) as client:
                    yahoo.today = dt.date.fromisoformat(DAILY_AS_OF[:10])
                    sampler = TreeSampler(worker.pid)
                    sampler.start()
                    before_all, before_chart = len(yahoo.requests), len(yahoo.chart_requests())
                    done, daily_s = market_run(client, parent, pool, DAILY_AS_OF, START)
                    sampler.stop.set()
                    sampler.join()
                    requests = len(yahoo.requests) - before_all
                    chart = len(yahoo.chart_requests()) - before_chart
                    asked = collections.Counter(
                        r.path.rsplit("/", 1)[1] for r in yahoo.chart_requests()[before_chart:]
                    )
                    members = {
                        s.replace(".", "-")
                        for s, _ in listings.naver["NASDAQ"] + listings.naver["NYSE"]
                    }
                    children = [
                        c
                        for c in client.read_flow_runs(
                            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[child]))
                        )
                        if c.start_time and c.start_time >= done.start_time
                    ]
    except BaseException:
        print(server.log()[-3000:])
        print(f"the server's and the worker's logs are kept in {home}")
        raise
    finally:
        server.stop()
        # The lock SQLite's writers wait for; a count above 0 means a write gave up.
        locked = server.log().count("database is locked")
        drop_store(db_url)
        if backend == "postgresql":
            drop_store(server.env["PREFECT_SERVER_DATABASE_CONNECTION_URL"])
    load_after = load()

    symbols = NASDAQ + NYSE
    child_rows = sorted(
        (
            {
                "child": c.name,
                "state": c.state_name,
                "wall_s": round(c.total_run_time.total_seconds(), 1),
                "peak_rss_mb": round(sampler.peaks.get(str(c.id), 0.0), 1),
            }
            for c in children
        ),
        key=lambda r: r["child"],
    )
    parts = len(child_rows)
    waves = math.ceil(parts / PARALLEL)
    # At Yahoo's polite 4/s each request also waits for its slot. One budget per child: each
    # wave waits for its largest child's requests / 4 s on top of our own time. One shared
    # budget (one NAT address): every request of the run waits in one line, chart / 4 s.
    largest = math.ceil(chart / max(parts, 1))
    projected_own = daily_s + waves * largest / POLITE_PER_S
    projected_shared = daily_s + chart / POLITE_PER_S
    figures = {
        "symbols": symbols,
        "universes_s": round(universes["s"], 1),
        "universes_peak_rss_mb": round(universes["rss_mb"], 1),
        "universes_members": universes["members"],
        "universes_requests": listing_requests,
        "universes_again_s": round(again["s"], 1),
        "daily_s": round(daily_s, 1),
        "daily_children": child_rows,
        "daily_requests": requests,
        "daily_chart_requests": chart,
        "requests_per_symbol": round(requests / symbols, 3),
        "symbols_fetched_twice": sum(1 for n in asked.values() if n > 1),
        "symbols_missed": len(members - set(asked)),
        "projected_polite_own_budgets_min": round(projected_own / 60, 1),
        "projected_polite_one_budget_min": round(projected_shared / 60, 1),
        "per_child": PER_CHILD,
        "parallel": PARALLEL,
        "rate_limit_per_s": RATE_PER_S,
        "prefect_server": backend,
        "server_database_locked_lines": locked,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }
    for key, value in figures.items():
        print(f"{key:>34}: {value}")
    out = ROOT / "bench" / "results" / "universe.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {out}")
    shutil.rmtree(home)  # the server's database and the logs: ~45 MB a run


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "universes":
        child_universes()
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--server", choices=["sqlite", "postgresql"], default="sqlite")
        main(parser.parse_args().server)
