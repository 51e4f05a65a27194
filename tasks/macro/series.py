"""FRED's answers as store rows: series ids, observations, vintages and revisions (pure)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping

import pandas as pd

from tasks.clock import as_date

MAX_VINTAGES = 2000  # FRED refuses a real-time period holding more vintage dates than this
LATEST_REALTIME = dt.date(9999, 12, 31)
SERIES_ID_RE = re.compile(r"^[A-Z0-9_]{1,40}$")


def clean_series_ids(series: Iterable[str]) -> tuple[list[str], list[str]]:
    """Upper-cased unique ids in order, and the ones that cannot be FRED ids."""
    good, bad = [], []
    for raw in series:
        sid = str(raw).strip().upper()
        target = good if SERIES_ID_RE.match(sid) else bad
        if sid not in target:
            target.append(sid if target is good else str(raw))
    return good, bad


def fetch_start(newest_stored: dt.date | None, first: dt.date, window_days: int) -> dt.date:
    """Where to ask from: the revision window before the newest stored date, else first."""
    if newest_stored is None:
        return first
    return max(first, newest_stored - dt.timedelta(days=window_days))


def parse_series_info(series_id: str, info: Mapping[str, str]) -> dict:
    """One macro_series row from FRED's series attributes."""
    updated = info.get("last_updated")
    return {
        "series_id": series_id,
        "title": info.get("title"),
        "frequency": info.get("frequency"),
        "units": info.get("units"),
        "seasonal_adjustment": info.get("seasonal_adjustment"),
        # FRED writes '2024-01-11 07:46:02-06': keep the instant, in UTC.
        "last_updated": pd.Timestamp(updated).tz_convert("UTC").to_pydatetime()
        if updated
        else None,
        "observation_start": as_date(info.get("observation_start")),
        "observation_end": as_date(info.get("observation_end")),
    }


def observations_frame(series_id: str, values: pd.Series) -> pd.DataFrame:
    """macro_observations rows from fredapi's date->value Series; '.' (NaN) stays as NULL."""
    frame = pd.DataFrame(
        {
            "series_id": series_id,
            "obs_date": pd.to_datetime(pd.Index(values.index)).date,
            "value": pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64"),
        }
    )
    return frame.sort_values("obs_date", ignore_index=True)


def vintage_windows(vintage_dates: Iterable, since: dt.date, limit: int = MAX_VINTAGES):
    """Real-time periods from since onward, each holding at most limit vintage dates."""
    dates = sorted({as_date(d) for d in vintage_dates if as_date(d) >= since})
    windows = []
    for i in range(0, len(dates), limit):
        start = since if i == 0 else dates[i]
        end = dates[i + limit] - dt.timedelta(days=1) if i + limit < len(dates) else LATEST_REALTIME
        windows.append((start, end))
    return windows


VINTAGE_COLUMNS = ["series_id", "obs_date", "realtime_start", "value"]


def vintages_frame(series_id: str, releases: pd.DataFrame, since: dt.date) -> pd.DataFrame:
    """macro_vintages rows from fredapi's all-releases frame, for observations from since."""
    if releases.empty:
        return pd.DataFrame(columns=VINTAGE_COLUMNS)
    frame = pd.DataFrame(
        {
            "series_id": series_id,
            "obs_date": pd.to_datetime(releases["date"]).dt.date,
            "realtime_start": pd.to_datetime(releases["realtime_start"]).dt.date,
            "value": pd.to_numeric(releases["value"], errors="coerce").astype("float64"),
        }
    )
    return frame[frame["obs_date"] >= since].reset_index(drop=True)


def revision_history(fetched: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """One row per value each observation has had: where it began, and what it was.

    Real-time periods clip realtime_start to their own start, so a value seen in two windows
    (or two runs) shows up twice; only the row where the value changed is a vintage.
    """
    rows = pd.concat([f for f in (stored, fetched) if not f.empty] or [fetched])
    if rows.empty:
        return pd.DataFrame(columns=VINTAGE_COLUMNS)
    rows = rows[VINTAGE_COLUMNS].drop_duplicates(["obs_date", "realtime_start"], keep="last")
    rows = rows.sort_values(["obs_date", "realtime_start"], ignore_index=True)
    value = rows["value"].astype("float64")
    previous = value.groupby(rows["obs_date"]).shift()
    first = rows["obs_date"].ne(rows["obs_date"].shift())
    same = (value == previous) | (value.isna() & previous.isna())
    return rows[first | ~same].reset_index(drop=True)


def new_vintages(history: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """The history rows not stored yet."""
    if stored.empty or history.empty:
        return history
    known = set(zip(stored["obs_date"], stored["realtime_start"], strict=True))
    keys = zip(history["obs_date"], history["realtime_start"], strict=True)
    return history[[k not in known for k in keys]].reset_index(drop=True)


def with_realtime_start(observations: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Observations with the date their current value was published (from the history)."""
    latest = history.groupby("obs_date")["realtime_start"].max() if not history.empty else {}
    out = observations.copy()
    out["realtime_start"] = out["obs_date"].map(latest)
    return out
