"""Time, from one place: the clocks the code reads and how a time reads to the operator.

Code reads `now()` (UTC) and `monotonic()` from here, so a test sets time in one place.
Every time shown to a person reads in the operator's zone, to the minute: schedules
(prefect.yaml), `make status`, the health page and alerts all speak Asia/Seoul unless
INVESTFLOW_OPERATOR_TZ names another zone. Times are stored and computed in UTC.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from zoneinfo import ZoneInfo


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def monotonic() -> float:
    return time.monotonic()


def wall() -> float:
    """Seconds since the epoch: for what is stored and compared across runs (the A1 campaign)."""
    return time.time()


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def as_date(value) -> dt.date | None:
    """A date from what sources and stores hand back (a date, a datetime or Timestamp, ISO
    text; SQLite gives text where PostgreSQL gives a date); None or '' is None. Anything else
    is a ValueError naming it."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if hasattr(value, "to_pydatetime"):  # a pandas Timestamp
        return value.to_pydatetime().date()
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError as exc:
        raise ValueError(f"not a date: {value!r}") from exc


def operator_tz() -> ZoneInfo:
    return ZoneInfo(os.environ.get("INVESTFLOW_OPERATOR_TZ", "Asia/Seoul"))


def shown(moment: dt.datetime | None) -> str:
    """`2026-12-06 10:37 KST`; a naive moment is UTC (SQLite hands them back so); None is `-`."""
    if moment is None:
        return "-"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(operator_tz()).strftime("%Y-%m-%d %H:%M %Z")


def age(delta: dt.timedelta) -> str:
    """How long ago, in the largest unit that still says something: `40 min`, `5 h`, `3 d`."""
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // 1440} d"


def shown_with_age(moment: dt.datetime | None, now: dt.datetime) -> str:
    if moment is None:
        return "never"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return f"{shown(moment)} ({age(now - moment)} ago)"
