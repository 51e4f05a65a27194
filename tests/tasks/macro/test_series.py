"""tasks.macro.series: FRED's answers as store rows, on small tables."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd

from tasks.macro.series import (
    VINTAGE_COLUMNS,
    clean_series_ids,
    new_vintages,
    observations_frame,
    parse_series_info,
    revision_history,
    vintage_windows,
)

D = dt.date


def test_series_ids_are_upper_cased_deduplicated_and_bad_ones_named():
    good, bad = clean_series_ids(["dgs10", "DGS10", "CPIAUCSL", "x&api_key=1", ""])
    assert good == ["DGS10", "CPIAUCSL"]
    assert bad == ["x&api_key=1", ""]


def test_series_info_keeps_the_metadata_and_the_update_instant_in_utc():
    row = parse_series_info("CPIAUCSL", {
        "title": "CPI", "frequency": "Monthly", "units": "Index", "seasonal_adjustment": "SA",
        "last_updated": "2024-01-11 07:46:02-06", "observation_start": "1947-01-01",
        "observation_end": "2023-12-01",
    })  # fmt: skip
    assert row["last_updated"] == dt.datetime(2024, 1, 11, 13, 46, 2, tzinfo=dt.UTC)
    assert row["observation_start"] == D(1947, 1, 1) and row["title"] == "CPI"


def test_missing_values_stay_as_rows_with_no_value():
    values = pd.Series({pd.Timestamp("2024-02-01"): float("nan"), pd.Timestamp("2024-01-01"): 1.5})
    frame = observations_frame("X", values)
    assert list(frame["obs_date"]) == [D(2024, 1, 1), D(2024, 2, 1)]
    assert frame["value"].iloc[0] == 1.5 and math.isnan(frame["value"].iloc[1])


def test_vintage_windows_each_hold_at_most_2000_vintages_and_cover_everything():
    dates = [D(2010, 1, 1) + dt.timedelta(days=i) for i in range(4500)]
    windows = vintage_windows(dates, D(2010, 1, 1))
    assert len(windows) == 3
    counts = [sum(1 for d in dates if s <= d <= e) for s, e in windows]
    assert counts == [2000, 2000, 500]
    assert windows[-1][1] == D(9999, 12, 31)
    assert vintage_windows(dates, D(2030, 1, 1)) == []


def vint(rows):
    return pd.DataFrame([("X", D(*o), D(*r), v) for o, r, v in rows], columns=VINTAGE_COLUMNS)


def test_revision_history_keeps_only_the_rows_where_a_value_changed():
    fetched = vint([
        ((2024, 1, 1), (2024, 2, 1), None),  # first published missing
        ((2024, 1, 1), (2024, 3, 1), 2.0),  # then filled in
        ((2024, 1, 1), (2024, 4, 1), 2.0),  # a window boundary repeating the same value
        ((2024, 2, 1), (2024, 3, 1), 5.0),
    ])  # fmt: skip
    history = revision_history(fetched, vint([]))
    assert list(zip(history["realtime_start"], history["value"].fillna(-1), strict=True)) == [
        (D(2024, 2, 1), -1), (D(2024, 3, 1), 2.0), (D(2024, 3, 1), 5.0)
    ]  # fmt: skip
    # The next run sees the value clipped to its window start: nothing new to store.
    again = vint([((2024, 1, 1), (2024, 3, 20), 2.0), ((2024, 2, 1), (2024, 3, 20), 5.0)])
    stored = history
    assert new_vintages(revision_history(again, stored), stored).empty
