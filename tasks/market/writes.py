"""Writing a chunk of prices: re-based symbols re-fetched whole, each symbol in one transaction."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.logs import run_id
from tasks.market.calendars import Fetch, Market
from tasks.market.quality import Issue, check_chunk
from tasks.market.rebase import find_rebases, first_dates, read_stored, replace_symbols
from tasks.market.yahoo import ChunkResult
from tasks.retries import connection_lost, describe_lost_connection, retry_when
from tasks.store.engine import engine_from_settings
from tasks.store.ledger import record_flags, record_rebase
from tasks.store.schema import instruments
from tasks.store.upsert import write_frame


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
    rebased: str = ""  # why the whole stored history was re-fetched, when it was


@dataclass
class Rebase:
    """A symbol whose stored history the source re-based: why, and what the rewrite changed."""

    symbol: str
    reason: str
    start: dt.date  # re-fetched from here (its oldest stored session)
    rows_changed: int = 0


class StoreConnectionLost(RuntimeError):
    """The market store went away mid-write (a restart, a crash): worth a retry, safe to rerun."""

    connection_lost = True


def instrument_symbols(engine, symbols: list[str]) -> set[str]:
    with engine.connect() as conn:
        query = sa.select(instruments.c.symbol).where(instruments.c.symbol.in_(symbols))
        return set(conn.execute(query).scalars())


def record_issues(engine, issues: list[Issue], source: str) -> list[Issue]:
    """Flag issues in a transaction of their own; returns those new to quality_flags."""
    with engine.begin() as conn:
        return record_flags(conn, issues, source, run_id())


def record_stale(engine, stale: dict[str, dt.date | None], through: dt.date) -> list[Issue]:
    """Flag each symbol still older than the market's last session after the run."""
    issues = [Issue(s, through, "stale", f"newest stored session: {d}") for s, d in stale.items()]
    return record_issues(engine, issues, "yahoo")


def stored_for(engine, chunk: list[Fetch]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What a chunk's fetched rows are compared with: its symbols' stored closes and actions
    over the fetched range (read while the chunk is still being fetched)."""
    return read_stored(engine, [p.symbol for p in chunk], min(p.start for p in chunk))


def follow_rebases(
    engine,
    result: ChunkResult,
    chunk: list[Fetch],
    through: dt.date,
    fetch,
    stored: tuple[pd.DataFrame, pd.DataFrame],
) -> tuple[ChunkResult, dict[str, Rebase]]:
    """Compare a fetched chunk with the store (stored: stored_for's); re-fetch whole every
    symbol the source re-based.

    A lookback of a few sessions cannot rewrite years of history in a new basis: the whole
    stored range is asked for again, in this run, and replaces the lookback rows.
    """
    stored_prices, stored_actions = stored
    reasons = find_rebases(
        result.frames.prices, result.frames.actions, stored_prices, stored_actions
    )
    if not reasons:
        return result, {}
    firsts = first_dates(engine, list(reasons))
    starts = {p.symbol: min(p.start, firsts.get(p.symbol, p.start)) for p in chunk}
    again = fetch([Fetch(s, starts[s], through + dt.timedelta(days=1), False) for s in reasons])
    errors = dict(result.errors)
    for symbol, error in again.errors.items():
        # Never write the lookback alone: it would mix two bases in one history.
        errors[symbol] = f"re-based ({reasons[symbol]}) but the re-fetch failed: {error}"
    frames = replace_symbols(result.frames, again.frames, set(reasons))
    found = {s: Rebase(s, why, starts[s]) for s, why in reasons.items() if s not in again.errors}
    return ChunkResult(frames, errors, result.throttled or again.throttled), found


# A data-node restart kills the chunk's transaction: retried after the server is back (a fast
# restart takes seconds; PostgreSQL's crash recovery after -m immediate a little more).
@task(
    name="write-prices",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=retry_when(connection_lost),
)
def write_chunk(
    result: ChunkResult,
    plans: list[Fetch],
    market: Market,
    through: dt.date,
    rebased: dict[str, Rebase],
    engine=None,
) -> tuple[list[SymbolReport], list[Issue]]:
    """Check and write a chunk: its symbols' prices, actions, instruments and flags together.

    One transaction per chunk: a crash leaves every symbol of it either whole or absent, and
    a daily run costs a few statements per chunk, not per symbol. Bad rows are set aside
    (rejected_rows), so one bad symbol blocks no other. Returns the symbols' reports and the
    flags new to the store. engine: the run's market store (where the settings say when not
    given: read once per run, not per chunk, since it may be a block loaded from the API).
    """
    engine = engine or engine_from_settings()
    frames = result.frames
    starts = {p.symbol: p.start for p in plans} | {s: r.start for s, r in rebased.items()}
    checked = result.checked  # checked by the fetch task, unless a re-base replaced rows since
    if checked is None or checked.starts != starts or checked.through != through:
        checked = check_chunk(frames.prices, frames.actions, market, starts, through)
    clean, issues, spans = checked.prices, checked.issues, checked.spans
    del checked
    try:
        written, new_flags = _write(engine, frames, clean, issues, spans, rebased)
    except Exception as exc:
        if not connection_lost(exc):
            raise
        symbols = [p.symbol for p in plans]
        raise StoreConnectionLost(
            f"Writing the prices of {len(symbols)} symbols ({symbols[0]} .. {symbols[-1]}) to "
            f"the market store failed: the database connection was lost "
            f"({describe_lost_connection(exc)}). The chunk's transaction was rolled back, so "
            "none of its rows are stored. A rerun is safe: writes are upserts, and the run "
            "fetches what is missing."
        ) from None
    reports = {}
    refused: dict[str, list] = {}
    for row in written.rejected:
        refused.setdefault(str(row.payload.get("symbol")), []).append(row)
    span_of = spans.to_dict("index") if spans is not None else {}  # .loc per symbol: 30 µs
    for symbol in set(written.by_entity) | set(refused):
        span = span_of.get(symbol)
        reports[symbol] = report(
            symbol, span, written.by_entity.get(symbol, (0, 0, 0)), refused.get(symbol, []),
            issues, rebased.get(symbol),
        )  # fmt: skip
    del clean
    for plan in plans:
        if plan.symbol not in reports:
            why = result.errors.get(plan.symbol, "not fetched: the run stopped first")
            reports[plan.symbol] = SymbolReport(plan.symbol, status="failed", error=why)
    return [reports[p.symbol] for p in plans], new_flags


def _write(engine, frames, clean, issues, spans, rebased: dict[str, Rebase]):
    """The chunk's one transaction: prices, actions, instruments, flags, rebase records."""
    new_flags = []
    with engine.begin() as conn:
        written = write_frame(conn, "daily_prices", clean, flow_run_id=run_id())
        landed = {s for s, counts in written.by_entity.items() if sum(counts)}
        if not frames.actions.empty:
            actions = frames.actions[frames.actions["symbol"].isin(landed)]
            if not actions.empty:
                write_frame(conn, "corporate_actions", actions, flow_run_id=run_id())
        rows_of = [i for i in frames.instruments if i["symbol"] in landed]
        if rows_of:
            write_frame(conn, "instruments", pd.DataFrame(rows_of))
        new_flags += record_flags(conn, issues, "yahoo", run_id())
        for symbol in sorted(set(rebased) & landed):
            rebased[symbol].rows_changed = written.by_entity[symbol][1]
            first, last = spans.loc[symbol, "min"], spans.loc[symbol, "max"]
            record_rebase(
                conn, symbol, rebased[symbol].reason, first, last,
                rebased[symbol].rows_changed, run_id(),
            )  # fmt: skip
    return written, new_flags


def report(symbol, span, counts, refused, issues, rebase: Rebase | None) -> SymbolReport:
    """One symbol's line: a symbol whose every row was refused has failed, not passed."""
    inserted, updated, unchanged = counts
    notes = [str(i) for i in issues if i.symbol == symbol] + [str(r) for r in refused]
    refused_all = refused and not (inserted + updated + unchanged)
    status = "failed" if refused_all else "flagged" if notes else "ok"
    if refused_all:
        notes.insert(0, f"every row refused ({len(refused)})")
    return SymbolReport(
        symbol,
        inserted,
        updated,
        unchanged,
        len(refused),
        str(span["min"]) if span is not None else None,
        str(span["max"]) if span is not None else None,
        status,
        "; ".join(notes[:3]) + (f" (+{len(notes) - 3} more)" if len(notes) > 3 else ""),
        rebase.reason if rebase else "",
    )
