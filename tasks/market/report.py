"""What a price run tells: its freshness event, progress bar, tables and markdown summary;
and what a market-prices parent tells of its child runs."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
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


# The bar moves at most this often, and at the end: each move is a call to the Prefect API
# (15 ms here) that the writing thread waits for, and a backfill writes a chunk every quarter
# of a second (20 moves were 0.3 s of a 5 s backfill).
PROGRESS_EVERY_S = 1.0


@dataclass
class Progress:
    """A run's progress bar: its artifact, its chunks, and when it last moved."""

    artifact_id: UUID
    chunks: int
    moved_at: float  # time.monotonic()


def start_progress(key: str, chunks: int) -> Progress | None:
    """A progress bar for a run of more than one chunk, else None."""
    if chunks <= 1:
        return None
    artifact_id = create_progress_artifact(0.0, key=f"{key}-progress", description="symbols done")
    return Progress(artifact_id, chunks, time.monotonic())


def advance_progress(progress: Progress | None, done: int) -> None:
    """Show done of the chunks written: at the last one, else at most every PROGRESS_EVERY_S."""
    if progress is None:
        return
    now = time.monotonic()
    if done < progress.chunks and now - progress.moved_at < PROGRESS_EVERY_S:
        return
    update_progress_artifact(progress.artifact_id, 100.0 * done / progress.chunks)
    progress.moved_at = now


def publish_run(
    key: str,
    summary: str,
    reports: list[SymbolReport],
    rebased: dict[str, Rebase],
    flags: list[Issue],
) -> None:
    """The run's artifacts: rows per symbol, re-based symbols, new flags, the summary."""
    # A report holds plain values: a shallow copy is asdict's result, without its deep walk
    # (12 ms for a daily run's 500 reports).
    create_table_artifact([dict(vars(r)) for r in reports], key=f"{key}-run")
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


# ---------------------------------------------------------------------------- market-prices


def child_table(run, key: str) -> list[dict]:
    """A child run's per-symbol table artifact, if it made one."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
            ),
            limit=1,
        )
    if not found:
        return []
    data = found[0].data
    return json.loads(data) if isinstance(data, str) else data


def child_row(part: list[str], run, table: list[dict]) -> dict:
    """One child's line: its run, its symbols, and what its table says it did."""
    return {
        "child": run.name,
        "flow_run_id": str(run.id),
        "state": run.state_name,
        "symbols": len(part),
        "first": part[0],
        "last": part[-1],
        "fetched": len(table),
        "failed": sum(r.get("status") == "failed" for r in table),
        "inserted": sum(r.get("inserted", 0) for r in table),
    }


def publish_market(market: str, through: dt.date, rows: list[dict], behind: list[str]) -> None:
    """The parent's artifacts: a table of its children and a summary of the market."""
    create_table_artifact(rows, key=f"{market.lower()}-market-children")
    bad = [r for r in rows if r["state"] != "Completed"]
    lines = [
        f"## {market} market through {through}: {len(rows)} child runs",
        "",
        f"- symbols: {sum(r['symbols'] for r in rows)}; completed children "
        f"{len(rows) - len(bad)} of {len(rows)}",
        f"- rows inserted {sum(r['inserted'] for r in rows)}; symbols failed "
        f"{sum(r['failed'] for r in rows)}",
        f"- behind {through} after the run: {len(behind)}"
        + (": " + ", ".join(behind[:50]) if behind else ""),
    ] + [f"- {r['child']}: {r['state']}" for r in bad]
    create_markdown_artifact("\n".join(lines) + "\n", key=f"{market.lower()}-market-summary")
