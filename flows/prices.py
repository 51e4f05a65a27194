"""Daily US and KR prices from Yahoo into the market store: incremental, calendar-aware, chunked."""

from __future__ import annotations

import datetime as dt
import gc
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from tasks.calendars import MARKETS, as_utc, last_closed_session, plan_fetches
from tasks.limits import ensure_rate_limit
from tasks.quality import check_prices, stale_symbols
from tasks.settings import get_settings
from tasks.store import engine_from_settings, latest_dates, upsert_frame
from tasks.yahoo import ChunkResult, YahooThrottled, fetch_chunk

UNIVERSES = Path(__file__).resolve().parent / "universes"
BACKFILL_YEARS = 10


class TooManyFailures(RuntimeError):
    """More symbols failed than the run tolerates."""


@flow(name="us-prices", retries=2, retry_delay_seconds=300, timeout_seconds=1800)
def ingest_us_prices(
    symbols: list[str] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    lookback_sessions: int = 5,
    chunk_size: int = 25,
    max_failed_ratio: float = 0.2,
    as_of: dt.datetime | None = None,
    backoff_s: float = 2.0,
) -> dict:
    """Bring US daily bars (flows/universes/us.txt by default) up to the last NYSE session."""
    return ingest_prices(
        "US", symbols, start, end, lookback_sessions, chunk_size, max_failed_ratio, as_of, backoff_s
    )


@flow(name="kr-prices", retries=2, retry_delay_seconds=300, timeout_seconds=1800)
def ingest_kr_prices(
    symbols: list[str] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    lookback_sessions: int = 5,
    chunk_size: int = 25,
    max_failed_ratio: float = 0.2,
    as_of: dt.datetime | None = None,
    backoff_s: float = 2.0,
) -> dict:
    """Bring KOSPI/KOSDAQ daily bars (flows/universes/kr.txt) up to the last KRX session."""
    return ingest_prices(
        "KR", symbols, start, end, lookback_sessions, chunk_size, max_failed_ratio, as_of, backoff_s
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
) -> dict:
    """The job both flows run: plan by calendar, fetch and write chunk by chunk, report."""
    logger = get_run_logger()
    settings = get_settings()
    engine = engine_from_settings(settings)
    market = MARKETS[market_code]
    symbols = [s.strip().upper() for s in (symbols or load_universe(market_code))]
    now = as_utc(as_of)
    through = last_closed_session(market, now)
    if end is not None:
        through = min(through, end)

    stored = latest_dates(engine, "daily_prices", symbols)
    backfill_start = start or now.date() - dt.timedelta(days=round(365.25 * BACKFILL_YEARS))
    plans = plan_fetches(
        market, symbols, stored, through, backfill_start, lookback_sessions, start is not None
    )
    key = f"{market_code.lower()}-prices"
    if not plans:
        newest = max(stored.values()) if stored else None
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
    ensure_rate_limit("yahoo")
    chunks = [plans[i : i + chunk_size] for i in range(0, len(plans), chunk_size)]
    progress = (
        create_progress_artifact(0.0, key=f"{key}-progress", description="symbols done")
        if len(chunks) > 1
        else None
    )
    reports: list[SymbolReport] = []
    throttled = None
    for number, chunk in enumerate(chunks, 1):
        result = fetch_chunk(
            chunk,
            market,
            settings.yahoo_base_url,
            settings.http_timeout_s,
            backoff_s,
            ca_bundle=str(settings.yahoo_ca_bundle) if settings.yahoo_ca_bundle else None,
        )
        reports += write_chunk(result, [p.symbol for p in chunk])
        throttled = result.throttled
        del result
        gc.collect()  # hand the chunk's frames back before the next one is fetched
        if progress:
            update_progress_artifact(progress, 100.0 * number / len(chunks))
        if throttled:
            break

    latest = latest_dates(engine, "daily_prices", symbols)
    stale = stale_symbols(latest, symbols, through)
    failed = {r.symbol: r.error for r in reports if r.status == "failed"}
    summary = summarize(key, through, plans, reports, stale, failed)
    create_table_artifact([asdict(r) for r in reports], key=f"{key}-run")
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
    }


def load_universe(market_code: str) -> list[str]:
    """The symbols in flows/universes/<market>.txt (one a line, # comments)."""
    text = (UNIVERSES / f"{market_code.lower()}.txt").read_text()
    return [ln.split("#")[0].strip() for ln in text.splitlines() if ln.split("#")[0].strip()]


@dataclass
class SymbolReport:
    """One symbol's line in the run's table artifact."""

    symbol: str
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    first_date: str | None = None
    last_date: str | None = None
    status: str = "ok"  # ok, flagged, failed
    error: str = ""


@task(name="write-prices", cache_policy=NO_CACHE, persist_result=False)
def write_chunk(result: ChunkResult, symbols: list[str]) -> list[SymbolReport]:
    """Check and upsert a chunk: one transaction per symbol, so one bad symbol blocks no other."""
    engine = engine_from_settings()
    run_id = str(flow_run.get_id() or "") or None
    frames = result.frames
    clean, issues = check_prices(frames.prices, frames.actions)
    flagged: dict[str, list[str]] = {}
    for issue in issues:
        flagged.setdefault(issue.symbol, []).append(str(issue))
    reports = {}
    # Group lazily: one symbol's rows at a time, never a second copy of the whole chunk.
    for symbol, rows in clean.groupby("symbol", sort=False):
        written = upsert_frame(engine, "daily_prices", rows, flow_run_id=run_id)
        notes = flagged.get(symbol, []) + [str(r) for r in written.rejected]
        reports[symbol] = SymbolReport(
            symbol,
            written.inserted,
            written.updated,
            written.unchanged,
            len(written.rejected),
            str(rows["trade_date"].min()),
            str(rows["trade_date"].max()),
            "flagged" if notes else "ok",
            "; ".join(notes[:3]) + (f" (+{len(notes) - 3} more)" if len(notes) > 3 else ""),
        )
    del clean
    for symbol in symbols:
        if symbol not in reports:
            why = result.errors.get(symbol, "not fetched: the run stopped first")
            reports[symbol] = SymbolReport(symbol, status="failed", error=why)
    if not frames.actions.empty:
        upsert_frame(engine, "corporate_actions", frames.actions, flow_run_id=run_id)
    if frames.instruments:
        save_instruments(engine, frames.instruments)
    return [reports[s] for s in symbols]


def save_instruments(engine, instruments: list[dict]) -> None:
    """Insert or refresh instruments rows (market, currency, timezone) by symbol."""
    upsert_frame(engine, "instruments", pd.DataFrame(instruments))


def summarize(key, through, plans, reports, stale, failed) -> str:
    """The run's short markdown summary."""
    lines = [
        f"## {key} through {through}",
        "",
        f"- symbols fetched: {len(plans)} ({sum(p.backfill for p in plans)} backfills)",
        f"- rows inserted {sum(r.inserted for r in reports)}, "
        f"updated {sum(r.updated for r in reports)}, "
        f"unchanged {sum(r.unchanged for r in reports)}, "
        f"rejected {sum(r.rejected for r in reports)}",
        f"- flagged by quality checks: {sum(r.status == 'flagged' for r in reports)}",
        f"- failed: {len(failed)}"
        + (": " + ", ".join(f"{s} ({why})" for s, why in failed.items()) if failed else ""),
        f"- stale after the run (older than {through}): {len(stale)}"
        + (": " + ", ".join(sorted(stale)) if stale else ""),
    ]
    return "\n".join(lines) + "\n"
