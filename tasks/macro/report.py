"""What a macro run tells: one row per series, the run's table artifact, and its verdict."""

from __future__ import annotations

from prefect.artifacts import create_table_artifact

from tasks.macro.fred import FredKeyError, scrub

COLUMNS = ["series", "action", "inserted", "updated", "unchanged", "last_observation",
           "last_updated", "new_flags", "status", "error"]  # fmt: skip


class MacroRunFailed(RuntimeError):
    """Too many series failed for the run to count as done."""


def outcome(series_id: str, status: str, error: str = "", **counts) -> dict:
    """One series' row: what was written, or why not."""
    row = {"series": series_id, "inserted": 0, "updated": 0, "unchanged": 0,
           "last_observation": "", "status": status, "error": error}  # fmt: skip
    row.update(counts)
    return row


def publish(outcomes: list[dict]) -> None:
    """One table per run: what each series wrote, or why it failed."""
    create_table_artifact(
        key="macro-ingest",
        table=[{c: o.get(c, "") for c in COLUMNS} for o in outcomes],
        description="FRED series this run checked: 'unchanged' (same last_updated, nothing "
        "fetched) or 'fetched' whole (observations inserted/updated/unchanged).",
    )


def raise_if_failed(
    outcomes: list[dict], max_failed_ratio: float, key_error: str | None, key: str
) -> None:
    """Fail the run on a refused key, or when more than max_failed_ratio of series failed."""
    if key_error:
        raise FredKeyError(key_error)
    failed = [o for o in outcomes if o["status"] != "ok"]
    if outcomes and len(failed) / len(outcomes) > max_failed_ratio:
        detail = "; ".join(f"{o['series']}: {o['error']}" for o in failed)
        raise MacroRunFailed(
            scrub(
                f"{len(failed)} of {len(outcomes)} series failed, more than "
                f"{max_failed_ratio:.0%} allowed: {detail}",
                key,
            )
        )
