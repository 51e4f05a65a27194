"""What a price run tells: its freshness event, progress bar, tables and markdown summary."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from tasks.health.freshness import emit_freshness, freshness
from tasks.market.calendars import Fetch, Market, last_closed_session
from tasks.market.writes import Rebase, SymbolReport
from tasks.store.ledger import Issue

# The flags table shows this many; all of them are in quality_flags.
FLAGS_SHOWN = 1000


def report_freshness(market: Market, newest: dt.date | None, now: dt.datetime) -> None:
    """Say how far behind the market's last closed session the store is (an event)."""
    facts = freshness(market, newest, last_closed_session(market, now))
    emit_freshness(f"prices.{market.code}", f"{market.code} prices", facts)
    if not facts["fresh"]:
        get_run_logger().warning("%s prices are stale: %s", market.code, facts)


def up_to_date_message(market: Market, newest: dt.date | None, through: dt.date) -> str:
    """Why a run asked Yahoo nothing."""
    return (
        f"No {market.calendar} session since the last stored one ({newest}); "
        f"the market's last session is {through}. Nothing asked of Yahoo."
    )


def publish_up_to_date(key: str, message: str) -> None:
    """The summary of a run with nothing to fetch."""
    create_markdown_artifact(f"## {key}: up to date\n\n{message}\n", key=f"{key}-summary")


def start_progress(key: str, chunks: int):
    """A progress bar for a run of more than one chunk (its id), else None."""
    if chunks <= 1:
        return None
    return create_progress_artifact(0.0, key=f"{key}-progress", description="symbols done")


def advance_progress(progress, done: int, chunks: int) -> None:
    if progress:
        update_progress_artifact(progress, 100.0 * done / chunks)


def publish_run(
    key: str,
    summary: str,
    reports: list[SymbolReport],
    rebased: dict[str, Rebase],
    flags: list[Issue],
) -> None:
    """The run's artifacts: rows per symbol, re-based symbols, new flags, the summary."""
    create_table_artifact([asdict(r) for r in reports], key=f"{key}-run")
    if rebased:
        create_table_artifact(
            [asdict(r) | {"start": str(r.start)} for r in rebased.values()], key=f"{key}-rebased"
        )
    if flags:
        create_table_artifact(
            [
                {"symbol": i.symbol, "date": str(i.date), "kind": i.kind, "detail": i.detail}
                for i in flags[:FLAGS_SHOWN]
            ],
            key=f"{key}-flags",
            description=f"{len(flags)} new quality flags (all in the quality_flags table)",
        )
    create_markdown_artifact(summary, key=f"{key}-summary")


def summarize(
    key: str,
    through: dt.date,
    plans: list[Fetch],
    reports: list[SymbolReport],
    stale: dict[str, dt.date | None],
    failed: dict[str, str],
    rebased: dict[str, Rebase],
    flags: list[Issue],
) -> str:
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
