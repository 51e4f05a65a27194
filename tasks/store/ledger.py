"""What runs found and did to the data: quality_flags and price_rebases rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from tasks.store.schema import price_rebases, quality_flags
from tasks.store.sql import insert_new


@dataclass(frozen=True)
class Issue:
    """One flagged row: which symbol and day, what kind, and the detail."""

    symbol: str
    date: dt.date | None
    # ohlc, duplicate, zero_volume, price_jump, adj_ratio_jump, missing_session,
    # non_session_bar, stale (and missing_value for FRED series)
    kind: str
    detail: str

    def __str__(self) -> str:
        return (
            f"{self.date} {self.kind}: {self.detail}"
            if self.date
            else f"{self.kind}: {self.detail}"
        )


def record_flags(
    conn: Connection, issues: list[Issue], source: str, flow_run_id: str | None
) -> list[Issue]:
    """Insert the issues not flagged before (same entity, day, kind); return those new ones."""
    rows, seen = [], set()
    for issue in issues:
        key = (issue.symbol, issue.date, issue.kind)
        if issue.date is None or key in seen:
            continue
        seen.add(key)
        rows.append(
            {
                "entity": issue.symbol,
                "flag_date": issue.date,
                "kind": issue.kind,
                "source": source,
                "detail": issue.detail,
                "flow_run_id": flow_run_id,
            }
        )
    c = quality_flags.c
    new = {tuple(r) for r in insert_new(conn, quality_flags, rows, (c.entity, c.flag_date, c.kind))}
    return [i for i in issues if (i.symbol, i.date, i.kind) in new]


def record_rebase(
    conn: Connection,
    symbol: str,
    reason: str,
    first: dt.date | None,
    last: dt.date | None,
    rows_changed: int,
    flow_run_id: str | None,
) -> None:
    """One row saying a symbol's history was rewritten, why, and how many rows changed."""
    conn.execute(
        price_rebases.insert().values(
            symbol=symbol,
            reason=reason,
            first_date=first,
            last_date=last,
            rows_changed=rows_changed,
            flow_run_id=flow_run_id,
        )
    )
