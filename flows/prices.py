"""Daily US and KR prices from Yahoo into the market store: incremental, calendar-aware, chunked."""

from __future__ import annotations

import datetime as dt
import gc
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from tasks.limits import ensure_rate_limit
from tasks.market.calendars import (
    MARKETS,
    Fetch,
    Market,
    as_utc,
    chunk_plans,
    last_closed_session,
    plan_fetches,
)
from tasks.market.quality import Issue, stale_symbols
from tasks.market.report import (
    advance_progress,
    publish_run,
    publish_up_to_date,
    report_freshness,
    start_progress,
    summarize,
    up_to_date_message,
)
from tasks.market.writes import (
    Rebase,
    SymbolReport,
    follow_rebases,
    instrument_symbols,
    record_issues,
    record_stale,
    stored_for,
    write_chunk,
)
from tasks.market.yahoo import YahooThrottled, fetch_chunk
from tasks.params import (
    AtLeastOne,
    NonNegative,
    PastDate,
    RateLimitName,
    Ratio,
    Seconds,
    Symbol,
    UniverseName,
)
from tasks.settings import Settings, get_settings
from tasks.store.engine import engine_from_settings
from tasks.store.upsert import latest_dates
from tasks.universes.membership import fetch_list
from tasks.universes.sources import universes

UNIVERSES = Path(__file__).resolve().parent / "universes"
BACKFILL_YEARS = 10


class TooManyFailures(RuntimeError):
    """More symbols failed than the run tolerates."""


# No flow retries: a deterministic error (bad parameter, refused symbol) would only repeat, and
# a transient one is retried by the task where it happens (tasks/market/yahoo.py). 30 minutes bound
# a full universe at Yahoo's polite rate (README, The jobs: Prices).
@flow(name="us-prices", timeout_seconds=1800)
def ingest_us_prices(
    symbols: list[Symbol] | None = None,
    start: PastDate | None = None,
    end: dt.date | None = None,
    lookback_sessions: NonNegative = 5,
    chunk_size: AtLeastOne = 25,
    max_failed_ratio: Ratio = 0.2,
    as_of: dt.datetime | None = None,
    backoff_s: Seconds = 2.0,
    universe: UniverseName | None = None,
    rate_limit: RateLimitName = "yahoo",
) -> dict:
    """Bring a US universe's daily bars (symbols, else the stored members of universe, else of
    the configured one, else flows/universes/us.txt) up to the last NYSE session."""
    return ingest_prices(PriceRun("US", **locals()))  # locals(): the parameters, validated


@flow(name="kr-prices", timeout_seconds=1800)
def ingest_kr_prices(
    symbols: list[Symbol] | None = None,
    start: PastDate | None = None,
    end: dt.date | None = None,
    lookback_sessions: NonNegative = 5,
    chunk_size: AtLeastOne = 25,
    max_failed_ratio: Ratio = 0.2,
    as_of: dt.datetime | None = None,
    backoff_s: Seconds = 2.0,
    universe: UniverseName | None = None,
    rate_limit: RateLimitName = "yahoo",
) -> dict:
    """Bring a KOSPI/KOSDAQ universe's daily bars (as us-prices picks them; the text file is
    flows/universes/kr.txt) up to the last KRX session."""
    return ingest_prices(PriceRun("KR", **locals()))  # locals(): the parameters, validated


@dataclass(frozen=True)
class PriceRun:
    """What a run of us-prices or kr-prices was asked: the two flows' one set of parameters."""

    market_code: str
    symbols: list[str] | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    lookback_sessions: int = 5
    chunk_size: int = 25
    max_failed_ratio: float = 0.2
    as_of: dt.datetime | None = None
    backoff_s: float = 2.0
    universe: str | None = None
    rate_limit: str = "yahoo"


@dataclass
class Plan:
    """Who is fetched from when, through which session, and the flags the choice raised."""

    market: Market
    key: str  # the artifacts' prefix: us-prices, kr-prices
    now: dt.datetime
    through: dt.date
    symbols: list[str]
    stored: dict[str, dt.date]
    fetches: list[Fetch]
    flags: list[Issue]
    held: frozenset[str] = frozenset()  # symbols with any stored prices: what a re-base can hit


@dataclass
class Written:
    """What the chunks wrote, what the source re-based, and why the run stopped early."""

    reports: list[SymbolReport] = field(default_factory=list)
    rebased: dict[str, Rebase] = field(default_factory=dict)
    flags: list[Issue] = field(default_factory=list)
    throttled: str | None = None


def ingest_prices(run: PriceRun) -> dict:
    """The job both flows run: plan by calendar, fetch and write chunk by chunk, report."""
    settings = get_settings()
    engine = engine_from_settings(settings)
    plan = plan_run(engine, run, settings)
    if not plan.fetches:
        return up_to_date(plan)
    written = fetch_and_write(engine, plan, run, settings)
    result = record_and_report(engine, plan, written)
    enforce_failure_policy(plan, written, result["failed"], run.max_failed_ratio)
    return result


def plan_run(engine, run: PriceRun, settings: Settings) -> Plan:
    """The symbols (flagging universe leavers), the last session, and each symbol's fetch."""
    market = MARKETS[run.market_code]
    now = as_utc(run.as_of)
    flags: list[Issue] = []
    if run.symbols:
        symbols = [s.strip().upper() for s in run.symbols]
    else:
        symbols, leaving = universe_symbols(
            engine, run.market_code, run.universe, now.date(), settings
        )
        flags = record_issues(engine, leaving, "universes")
    through = last_closed_session(market, now)
    if run.end is not None:
        through = min(through, run.end)
    held = latest_dates(engine, "daily_prices", symbols)
    # A symbol with prices but no instruments row was cut off mid-write by an older version:
    # fetch it again from the start so what is missing (its actions, its row) lands.
    known = instrument_symbols(engine, symbols)
    stored = {s: d for s, d in held.items() if s in known}
    backfill_start = run.start or now.date() - dt.timedelta(days=round(365.25 * BACKFILL_YEARS))
    fetches = plan_fetches(
        market,
        symbols,
        stored,
        through,
        backfill_start,
        run.lookback_sessions,
        run.start is not None,
    )
    key = f"{run.market_code.lower()}-prices"
    return Plan(market, key, now, through, symbols, stored, fetches, flags, frozenset(held))


def up_to_date(plan: Plan) -> dict:
    """No session since the last stored one: say so, ask Yahoo nothing."""
    newest = max(plan.stored.values()) if plan.stored else None
    report_freshness(plan.market, newest, plan.now)
    message = up_to_date_message(plan.market, newest, plan.through)
    get_run_logger().info(message)
    publish_up_to_date(plan.key, message)
    return {"status": "up to date", "through": str(plan.through), "fetched": 0, "failed": {}}


def fetch_and_write(engine, plan: Plan, run: PriceRun, settings: Settings) -> Written:
    """Fetch and write chunk by chunk, the next chunk fetched while this one is written."""
    get_run_logger().info(
        "%d of %d symbols to fetch through %s (%d backfills)",
        len(plan.fetches),
        len(plan.symbols),
        plan.through,
        sum(p.backfill for p in plan.fetches),
    )
    slots = ensure_rate_limit(run.rate_limit)  # a child of market-prices has one of its own
    chunks = chunk_plans(plan.fetches, run.chunk_size)
    progress = start_progress(plan.key, len(chunks))
    how = fetch_options(plan.market, run, settings)
    fetch = lambda plans: fetch_chunk(quote(plans), **how)  # noqa: E731 - a re-based symbol's re-fetch
    written = Written()
    # The next chunk is fetched and checked while this one is written: one fetch in flight at
    # a time (the same requests, at the same concurrency), none after a throttled one. The
    # checks need nothing stored, so the fetch task runs them (a re-based symbol's rows are
    # checked again when written); the writing thread, the backfill's critical path, writes.
    # The chunks, their rows and reports go to the tasks quoted: Prefect would otherwise walk
    # every Fetch, row dict and report twice per task run, looking for futures there are none
    # of (a daily run's one chunk of 500 symbols: 50 ms of its write).
    # What exists now (modules, Prefect's and pandas' own objects) lives for the whole run:
    # frozen, it is left out of the collections that hand each backfill chunk back below.
    gc.freeze()
    try:
        # The first chunk takes the limit's size just read; the others read it again.
        pending = fetch_chunk.submit(quote(chunks[0]), **how, through=plan.through, slots=slots)
        for number, chunk in enumerate(chunks, 1):
            # What the chunk is compared with for re-bases, read while it is being fetched;
            # nothing when none of it is stored yet (a first backfill): nothing to re-base.
            held = plan.held.intersection(p.symbol for p in chunk)
            stored = stored_for(engine, chunk) if held else None
            fetched = pending.result()
            if number < len(chunks) and not fetched.throttled:
                pending = fetch_chunk.submit(quote(chunks[number]), **how, through=plan.through)
            if stored is not None:
                result, found = follow_rebases(engine, fetched, chunk, plan.through, fetch, stored)
                del stored
            else:
                result, found = fetched, {}
            del fetched
            written.rebased |= found
            reports, new_flags = write_chunk(
                quote(result), quote(chunk), plan.market, plan.through, quote(found), engine
            )
            written.reports += reports
            written.flags += new_flags
            written.throttled = result.throttled
            del result
            if any(p.backfill for p in chunk):
                gc.collect()  # hand a backfill's frames back before the next chunk is fetched
            advance_progress(progress, number)
            if written.throttled:
                break
    finally:
        gc.unfreeze()  # a process that goes on (a test session, a notebook) collects it again
    return written


def fetch_options(market: Market, run: PriceRun, settings: Settings) -> dict:
    """How every chunk is fetched: where Yahoo is, how patiently, under which rate limit."""
    return {
        "market": market,
        "base_url": settings.yahoo_base_url,
        "timeout_s": settings.http_timeout_s,
        "backoff_s": run.backoff_s,
        "rate_limit": run.rate_limit,
        "ca_bundle": str(settings.yahoo_ca_bundle) if settings.yahoo_ca_bundle else None,
    }


def record_and_report(engine, plan: Plan, written: Written) -> dict:
    """Flag what is still stale, leave the run's artifacts, and return its counts."""
    latest = latest_dates(engine, "daily_prices", plan.symbols)
    report_freshness(plan.market, max(latest.values()) if latest else None, plan.now)
    stale = stale_symbols(latest, plan.symbols, plan.through)
    flags = plan.flags + written.flags + record_stale(engine, stale, plan.through)
    reports, rebased = written.reports, written.rebased
    failed = {r.symbol: r.error for r in reports if r.status == "failed"}
    summary = summarize(
        plan.key, plan.through, plan.fetches, reports, stale, failed, rebased, flags
    )
    publish_run(plan.key, summary, reports, rebased, flags)
    get_run_logger().info(summary)
    return {
        "status": "completed",
        "through": str(plan.through),
        "fetched": len(plan.fetches),
        "failed": failed,
        "stale": sorted(stale),
        "inserted": sum(r.inserted for r in reports),
        "updated": sum(r.updated for r in reports),
        "rebased": {s: r.reason for s, r in rebased.items()},
        "new_flags": len(flags),
    }


def enforce_failure_policy(
    plan: Plan, written: Written, failed: dict[str, str], max_failed_ratio: float
) -> None:
    """Fail the run when Yahoo kept throttling, or more than max_failed_ratio symbols failed."""
    if written.throttled:
        raise YahooThrottled(
            f"stopped: {written.throttled}; {len(written.reports)} symbols were written first"
        )
    if failed and len(failed) / len(plan.fetches) > max_failed_ratio:
        raise TooManyFailures(
            f"{len(failed)} of {len(plan.fetches)} symbols failed "
            f"(more than {max_failed_ratio:.0%}): "
            + "; ".join(f"{s} ({why})" for s, why in failed.items())
        )


def universe_symbols(
    engine, market_code: str, universe: str | None, day: dt.date, settings
) -> tuple[list[str], list[Issue]]:
    """The symbols a run fetches: the universe's stored members on day and its leavers still
    in their grace period (tasks/universes/README.md), or the text file when none is stored;
    and a left_universe flag for every leaver (quality_flags keeps each once)."""
    name = universe or (settings.us_universe if market_code == "US" else settings.kr_universe)
    known = universes()
    if name not in known or known[name].market != market_code:
        choices = sorted(n for n, u in known.items() if u.market == market_code)
        raise ValueError(f"universe {name!r} is not a {market_code} universe: one of {choices}")
    found = fetch_list(engine, name, day, settings.leaver_grace_days)
    if not found["stored"]:
        get_run_logger().warning(
            "no membership stored for %s (has the universes flow run?): "
            "fetching flows/universes/%s.txt",
            name,
            market_code.lower(),
        )
        return [s.upper() for s in load_universe(market_code)], []
    grace = settings.leaver_grace_days
    flags = [
        Issue(s, d, "left_universe", f"left {name} on {d}; fetched {grace} more days")
        for s, d in found["left"].items()
    ]
    return found["fetch"], flags


def load_universe(market_code: str) -> list[str]:
    """The symbols in flows/universes/<market>.txt (one a line, # comments)."""
    text = (UNIVERSES / f"{market_code.lower()}.txt").read_text()
    return [ln.split("#")[0].strip() for ln in text.splitlines() if ln.split("#")[0].strip()]
