"""Daily US and KR prices from Yahoo into the market store: incremental, calendar-aware, chunked."""

from __future__ import annotations

import datetime as dt
import gc
from dataclasses import asdict
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from tasks.health.freshness import emit_freshness, freshness
from tasks.limits import ensure_rate_limit
from tasks.logs import run_id
from tasks.market.calendars import MARKETS, as_utc, chunk_plans, last_closed_session, plan_fetches
from tasks.market.quality import Issue, stale_symbols
from tasks.market.writes import (
    Rebase,
    SymbolReport,
    follow_rebases,
    instrument_symbols,
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
from tasks.settings import get_settings
from tasks.store.engine import engine_from_settings
from tasks.store.ledger import record_flags
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
    return ingest_prices(
        "US",
        symbols,
        start,
        end,
        lookback_sessions,
        chunk_size,
        max_failed_ratio,
        as_of,
        backoff_s,
        universe,
        rate_limit,
    )


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
    return ingest_prices(
        "KR",
        symbols,
        start,
        end,
        lookback_sessions,
        chunk_size,
        max_failed_ratio,
        as_of,
        backoff_s,
        universe,
        rate_limit,
    )


def ingest_prices(
    market_code: str,
    symbols: list[str] | None,
    start: dt.date | None,
    end: dt.date | None,
    lookback_sessions: int,
    chunk_size: int,
    max_failed_ratio: float,
    as_of: dt.datetime | None,
    backoff_s: float,
    universe: str | None = None,
    rate_limit: str = "yahoo",
) -> dict:
    """The job both flows run: plan by calendar, fetch and write chunk by chunk, report."""
    logger = get_run_logger()
    settings = get_settings()
    engine = engine_from_settings(settings)
    market = MARKETS[market_code]
    now = as_utc(as_of)
    flags: list[Issue] = []
    if symbols:
        symbols = [s.strip().upper() for s in symbols]
    else:
        symbols, leaving = universe_symbols(engine, market_code, universe, now.date(), settings)
        with engine.begin() as conn:
            flags = record_flags(conn, leaving, "universes", run_id())
    through = last_closed_session(market, now)
    if end is not None:
        through = min(through, end)

    stored = latest_dates(engine, "daily_prices", symbols)
    # A symbol with prices but no instruments row was cut off mid-write by an older version:
    # fetch it again from the start so what is missing (its actions, its row) lands.
    known = instrument_symbols(engine, symbols)
    stored = {s: d for s, d in stored.items() if s in known}
    backfill_start = start or now.date() - dt.timedelta(days=round(365.25 * BACKFILL_YEARS))
    plans = plan_fetches(
        market, symbols, stored, through, backfill_start, lookback_sessions, start is not None
    )
    key = f"{market_code.lower()}-prices"
    if not plans:
        newest = max(stored.values()) if stored else None
        report_freshness(market, newest, now)
        message = (
            f"No {market.calendar} session since the last stored one ({newest}); "
            f"the market's last session is {through}. Nothing asked of Yahoo."
        )
        logger.info(message)
        create_markdown_artifact(f"## {key}: up to date\n\n{message}\n", key=f"{key}-summary")
        return {"status": "up to date", "through": str(through), "fetched": 0, "failed": {}}

    logger.info(
        "%d of %d symbols to fetch through %s (%d backfills)",
        len(plans),
        len(symbols),
        through,
        sum(p.backfill for p in plans),
    )
    ensure_rate_limit(rate_limit)  # a child of market-prices has a limit of its own
    chunks = chunk_plans(plans, chunk_size)
    progress = (
        create_progress_artifact(0.0, key=f"{key}-progress", description="symbols done")
        if len(chunks) > 1
        else None
    )
    reports: list[SymbolReport] = []
    rebased: dict[str, Rebase] = {}
    throttled = None
    ca_bundle = str(settings.yahoo_ca_bundle) if settings.yahoo_ca_bundle else None
    how = {
        "market": market,
        "base_url": settings.yahoo_base_url,
        "timeout_s": settings.http_timeout_s,
        "backoff_s": backoff_s,
        "rate_limit": rate_limit,
        "ca_bundle": ca_bundle,
    }
    fetch = lambda plans: fetch_chunk(plans, **how)  # noqa: E731 - a re-based symbol's re-fetch
    # The next chunk is fetched while this one is checked and written: one fetch in flight at
    # a time (the same requests, at the same concurrency), none after a throttled one.
    pending = fetch_chunk.submit(chunks[0], **how)
    for number, chunk in enumerate(chunks, 1):
        fetched = pending.result()
        if number < len(chunks) and not fetched.throttled:
            pending = fetch_chunk.submit(chunks[number], **how)
        result, found = follow_rebases(engine, fetched, chunk, through, fetch)
        del fetched
        rebased |= found
        written, new_flags = write_chunk(result, chunk, market, through, found)
        reports += written
        flags += new_flags
        throttled = result.throttled
        del result
        if any(p.backfill for p in chunk):
            gc.collect()  # hand a backfill's frames back before the next chunk is fetched
        if progress:
            update_progress_artifact(progress, 100.0 * number / len(chunks))
        if throttled:
            break

    latest = latest_dates(engine, "daily_prices", symbols)
    report_freshness(market, max(latest.values()) if latest else None, now)
    stale = stale_symbols(latest, symbols, through)
    with engine.begin() as conn:
        flags += record_flags(
            conn,
            [Issue(s, through, "stale", f"newest stored session: {d}") for s, d in stale.items()],
            "yahoo",
            run_id(),
        )
    failed = {r.symbol: r.error for r in reports if r.status == "failed"}
    summary = summarize(key, through, plans, reports, stale, failed, rebased, flags)
    create_table_artifact([asdict(r) for r in reports], key=f"{key}-run")
    if rebased:
        create_table_artifact(
            [asdict(r) | {"start": str(r.start)} for r in rebased.values()], key=f"{key}-rebased"
        )
    if flags:
        create_table_artifact(
            [
                {"symbol": i.symbol, "date": str(i.date), "kind": i.kind, "detail": i.detail}
                for i in flags[:1000]
            ],
            key=f"{key}-flags",
            description=f"{len(flags)} new quality flags (all in the quality_flags table)",
        )
    create_markdown_artifact(summary, key=f"{key}-summary")
    logger.info(summary)

    if throttled:
        raise YahooThrottled(f"stopped: {throttled}; {len(reports)} symbols were written first")
    if failed and len(failed) / len(plans) > max_failed_ratio:
        raise TooManyFailures(
            f"{len(failed)} of {len(plans)} symbols failed (more than {max_failed_ratio:.0%}): "
            + "; ".join(f"{s} ({why})" for s, why in failed.items())
        )
    return {
        "status": "completed",
        "through": str(through),
        "fetched": len(plans),
        "failed": failed,
        "stale": sorted(stale),
        "inserted": sum(r.inserted for r in reports),
        "updated": sum(r.updated for r in reports),
        "rebased": {s: r.reason for s, r in rebased.items()},
        "new_flags": len(flags),
    }


def report_freshness(market, newest: dt.date | None, now: dt.datetime) -> None:
    """Say how far behind the market's last closed session the store is (an event)."""
    facts = freshness(market, newest, last_closed_session(market, now))
    emit_freshness(f"prices.{market.code}", f"{market.code} prices", facts)
    if not facts["fresh"]:
        get_run_logger().warning("%s prices are stale: %s", market.code, facts)


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


def summarize(key, through, plans, reports, stale, failed, rebased, flags) -> str:
    """The run's short markdown summary."""
    lines = [
        f"## {key} through {through}",
        "",
        f"- symbols fetched: {len(plans)} ({sum(p.backfill for p in plans)} backfills)",
        f"- rows inserted {sum(r.inserted for r in reports)}, "
        f"updated {sum(r.updated for r in reports)}, "
        f"unchanged {sum(r.unchanged for r in reports)}, "
        f"rejected {sum(r.rejected for r in reports)}",
        f"- flagged by quality checks: {sum(r.status == 'flagged' for r in reports)} symbols; "
        f"{len(flags)} new rows in quality_flags",
        f"- re-based by the source and rewritten whole: {len(rebased)}"
        + (
            ": " + ", ".join(f"{s} ({r.rows_changed} rows; {r.reason})" for s, r in rebased.items())
            if rebased
            else ""
        ),
        f"- failed: {len(failed)}"
        + (": " + ", ".join(f"{s} ({why})" for s, why in failed.items()) if failed else ""),
        f"- stale after the run (older than {through}): {len(stale)}"
        + (": " + ", ".join(sorted(stale)) if stale else ""),
    ]
    return "\n".join(lines) + "\n"
