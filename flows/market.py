"""A whole market's prices as child runs of the price deployment, each with its own rate budget.

About 9,000 US and KR symbols at Yahoo's polite 4 requests a second take ~38 minutes: past
the price flows' 30-minute timeout and one 512 MB Fargate task's patience. This parent splits
the members into parts of at most `per_child` symbols and starts each as a run of us-prices or
kr-prices (run_deployment, so each is a Fargate task of its own with its own memory and
result), at most `parallel` at once (a Prefect global concurrency limit). The children of one
wave each take a rate limit of their own (yahoo-1, yahoo-2, ...; copies of the yahoo limit), as
Yahoo throttles per address and each Fargate task with a public IP has its own. Behind one NAT
address the budgets are one: give rate_limit_per_child=False there. See tasks/universes/README.md.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import queue
from concurrent.futures import ThreadPoolExecutor

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment

from tasks.limits import ensure_rate_limit, set_limit
from tasks.logs import run_id
from tasks.market.calendars import MARKETS, as_utc, last_closed_session
from tasks.market.quality import Issue
from tasks.market.report import child_row, child_table, publish_market
from tasks.market.writes import record_issues
from tasks.params import AtLeastOne, MarketCode, NonNegative, PastDate, Ratio, Seconds
from tasks.settings import get_settings
from tasks.store.engine import engine_from_settings
from tasks.store.upsert import latest_dates
from tasks.universes.membership import fetch_list

LISTINGS = {"US": ["nasdaq", "nyse"], "KR": ["kospi", "kosdaq"]}
CHILD_POLL_S = 5.0  # between looks at a child run's state: small beside a child's minutes
# The most a child may wait for its share of a shared rate budget: two thirds of the price
# flows' 30-minute timeout, the rest left for its own work.
CHILD_WAIT_S = 20 * 60


class ChildRunsFailed(RuntimeError):
    """One or more child runs did not complete."""


def split(symbols: list[str], per_child: int) -> list[list[str]]:
    """Sorted symbols in parts of at most per_child, as even as they come."""
    ordered = sorted(set(symbols))
    count = max(1, -(-len(ordered) // per_child))
    size = -(-len(ordered) // count)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def child_limits(base: str, parallel: int) -> list[str]:
    """base-1..base-N: copies of base's rate (as now set on the server), one per wave slot."""
    ensure_rate_limit(base)
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(base)
    names = [f"{base}-{i}" for i in range(1, parallel + 1)]
    for name in names:
        set_limit(name, limit.limit, limit.slot_decay_per_second)
    return names


def part_size(base: str, per_child: int, shared: bool, parallel: int) -> int:
    """per_child, or less where the children share one rate budget (one NAT address): at a
    parallel-th of base's rate, a part must be fetched within CHILD_WAIT_S."""
    if not shared:
        return per_child
    ensure_rate_limit(base)
    with get_client(sync_client=True) as client:
        rate = client.read_global_concurrency_limit_by_name(base).slot_decay_per_second
    if not rate:  # slots freed when released, not by time: no rate to wait for
        return per_child
    return max(1, min(per_child, int(CHILD_WAIT_S * rate / parallel)))


def wave_limits(base: str, per_child: bool, parallel: int, parts: int) -> list:
    """The rate limit of each wave slot: a copy of base each, or base shared by all."""
    if per_child:
        return child_limits(base, min(parallel, parts))
    return [base] * parallel


# Two hours: even with one shared budget (~38 min at 4/s) the market fits with room.
@flow(name="market-prices", timeout_seconds=2 * 3600)
def ingest_market_prices(
    market: MarketCode = "US",
    universes: list[str] | None = None,
    per_child: AtLeastOne = 1500,
    parallel: AtLeastOne = 4,
    child_deployment: str | None = None,
    start: PastDate | None = None,
    lookback_sessions: NonNegative = 5,
    chunk_size: AtLeastOne = 25,
    max_failed_ratio: Ratio = 0.2,
    as_of: dt.datetime | None = None,
    backoff_s: Seconds = 2.0,
    rate_limit: str = "yahoo",
    rate_limit_per_child: bool = True,
) -> dict:
    """Bring every stored member of the market's listings up to date, in child runs."""
    settings = get_settings()
    engine = engine_from_settings(settings)
    now = as_utc(as_of)
    symbols = market_members(engine, universes or LISTINGS[market], now.date(), settings)
    size = part_size(rate_limit, per_child, not rate_limit_per_child, parallel)
    parts = split(symbols, size)
    deployment = child_deployment or f"{market.lower()}-prices/{market.lower()}-prices"
    limits = wave_limits(rate_limit, rate_limit_per_child, parallel, len(parts))
    gate = f"{market.lower()}-prices-children"
    set_limit(gate, parallel)
    log = "%d symbols in %d child runs of %s (at most %d each), %d at once"
    get_run_logger().info(log, len(symbols), len(parts), deployment, size, parallel)
    # What every child is asked besides its symbols and its rate limit.
    asked = {
        "start": str(start) if start else None,
        "lookback_sessions": lookback_sessions,
        "chunk_size": chunk_size,
        "max_failed_ratio": max_failed_ratio,
        "as_of": now.isoformat(),
        "backoff_s": backoff_s,
    }
    runs = run_children(deployment, parts, asked, limits, gate, parallel)
    return summarize(market, engine, now, parts, runs)


def market_members(engine, names: list[str], day: dt.date, settings) -> list[str]:
    """Every symbol the listings hold on day, leavers in their grace period flagged once."""
    symbols: set[str] = set()
    leaving: list[Issue] = []
    for name in names:
        found = fetch_list(engine, name, day, settings.leaver_grace_days)
        if not found["stored"]:
            raise ValueError(f"no membership stored for {name}: run the universes flow first")
        symbols.update(found["fetch"])
        leaving += [
            Issue(s, d, "left_universe", f"left {name} on {d}") for s, d in found["left"].items()
        ]
    record_issues(engine, leaving, "universes")
    return sorted(symbols)


def run_children(
    deployment: str,
    parts: list[list[str]],
    asked: dict,
    limits: list[str | None],
    gate: str,
    parallel: int,
) -> list:
    """Each part as a run of the deployment, at most parallel at once, each with a free limit."""
    slots: queue.Queue = queue.Queue()
    for name in limits:
        slots.put(name)
    parent = run_id() or "local"

    def child(number: int, part: list[str]):
        with concurrency(gate, occupy=1):
            limit = slots.get()
            try:
                return run_deployment(
                    deployment,
                    parameters={"symbols": part, **asked, "rate_limit": limit},
                    flow_run_name=f"{deployment.split('/')[0]}-part-{number}-of-{len(parts)}",
                    timeout=None,
                    poll_interval=CHILD_POLL_S,
                    # A retried parent finds its children instead of starting them again.
                    idempotency_key=f"{parent}-part-{number}-of-{len(parts)}",
                )
            finally:
                slots.put(limit)

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="child") as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, child, i, part)
            for i, part in enumerate(parts, 1)
        ]
        return [f.result() for f in futures]


def summarize(market: str, engine, now, parts, runs) -> dict:
    """One summary of every child: its state and counts, and what the store holds now."""
    key = f"{market.lower()}-prices-run"
    through = last_closed_session(MARKETS[market], now)
    rows = [child_row(part, run, child_table(run, key)) for part, run in zip(parts, runs)]
    everyone = [s for part in parts for s in part]
    latest = latest_dates(engine, "daily_prices", everyone)
    behind = sorted(s for s in everyone if latest.get(s) is None or latest[s] < through)
    publish_market(market, through, rows, behind)
    bad = [r for r in rows if r["state"] != "Completed"]
    if bad:
        raise ChildRunsFailed(
            "child runs not completed: " + ", ".join(f"{r['child']} ({r['state']})" for r in bad)
        )
    return {"through": str(through), "children": rows, "behind": behind}
