"""tasks.fred: the pure parsers on small tables, the client against the local FRED stand-in."""

from __future__ import annotations

import datetime as dt
import math
import time

import pandas as pd
import pytest
from pydantic import SecretStr

from tasks.fred import (
    VINTAGE_COLUMNS,
    FredError,
    FredKeyError,
    TimedFred,
    clean_series_ids,
    fetch_info,
    fetch_observations,
    fetch_vintages,
    is_transient,
    new_vintages,
    observations_frame,
    parse_series_info,
    revision_history,
    scrub,
    vintage_windows,
)
from tasks.macro_store import StoredSeries, needs_fetch
from tests.fakes.fred import NO_SERIES, FakeFred

D = dt.date
KEY = "abcdef0123456789abcdef0123456789"


# ------------------------------------------------------------------------------- pure parts


def test_scrub_hides_the_key_in_urls_and_anywhere_else():
    text = "GET /fred/series?series_id=X&api_key=s3cr3t&file_type=xml (s3cr3t)"
    assert scrub(text, "s3cr3t") == "GET /fred/series?series_id=X&api_key=***&file_type=xml (***)"
    assert "zzz" not in scrub("failed: https://h/fred?api_key=zzz")


def test_series_ids_are_upper_cased_deduplicated_and_bad_ones_named():
    good, bad = clean_series_ids(["dgs10", "DGS10", "CPIAUCSL", "x&api_key=1", ""])
    assert good == ["DGS10", "CPIAUCSL"]
    assert bad == ["x&api_key=1", ""]


def test_a_series_is_fetched_only_when_freds_version_moved():
    at = dt.datetime(2024, 1, 11, 13, 46, 2, tzinfo=dt.UTC)
    info = {"last_updated": at}
    stored = StoredSeries(at.replace(tzinfo=None), D(2004, 1, 1), has_vintages=False)
    assert not needs_fetch(stored, info, vintages=False)  # SQLite's naive UTC is the same
    assert needs_fetch(stored, {"last_updated": at + dt.timedelta(seconds=1)}, vintages=False)
    assert needs_fetch(None, info, vintages=False)  # never stored
    assert needs_fetch(stored, info, vintages=True)  # its history was never taken


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


# ----------------------------------------------------------------- the client on the stand-in


@pytest.fixture
def fake():
    with FakeFred(KEY) as server:
        server.add_series(
            "CPIAUCSL", {"2024-01-01": 308.4, "2024-02-01": ".", "2024-03-01": 312.1}, lag_days=40
        )
        yield server


def client(fake, key=KEY, timeout_s=2.0):
    c = TimedFred(SecretStr(key), fake.url, timeout_s)
    return c, None


@pytest.mark.integration
def test_metadata_and_observations_come_through_fredapi(fake):
    c, _ = client(fake)
    info = fetch_info(c, "CPIAUCSL")
    obs = fetch_observations(c, "CPIAUCSL", D(2024, 2, 1))
    assert info["frequency"] == "Monthly" and info["observation_end"] == D(2024, 3, 1)
    assert list(obs["obs_date"]) == [D(2024, 2, 1), D(2024, 3, 1)]
    assert math.isnan(obs["value"].iloc[0])
    assert fake.requests[-1].query["observation_start"] == "2024-02-01"
    assert repr(c) == f"TimedFred(root_url='{fake.url}/fred')"


@pytest.mark.integration
def test_unknown_series_fails_with_freds_own_message_and_is_not_transient(fake):
    c, _ = client(fake)
    with pytest.raises(FredError, match="The series does not exist") as err:
        fetch_info(c, "NOSUCHSERIES")
    assert str(err.value) == NO_SERIES and err.value.status == 400
    assert not is_transient(err.value)
    assert fake.count("/fred/series") == 1


@pytest.mark.integration
def test_an_unknown_series_whose_message_names_api_key_is_still_a_series_error(fake):
    # Classified by status (a key check FRED answers 200 or 404 for a good key), not by text.
    fake.fail_xml("/series", 400, "Bad Request. Unknown series; see the api_key docs", times=1)
    c, _ = client(fake)
    with pytest.raises(FredError) as err:
        fetch_info(c, "CPIAUCSL")
    assert not isinstance(err.value, FredKeyError) and err.value.status == 400


@pytest.mark.integration
def test_a_bad_key_is_named_as_such_and_never_echoed(fake):
    fake.leaky_errors = True  # the stand-in echoes the request URL, key and all
    c, _ = client(fake, key="wrongkey0123456789wrongkey012345")
    with pytest.raises(FredKeyError, match="refused the API key") as err:
        fetch_observations(c, "CPIAUCSL", D(2024, 1, 1))
    assert "wrongkey" not in str(err.value) and "api_key=***" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert not is_transient(err.value)


@pytest.mark.integration
@pytest.mark.parametrize("status", [429, 500, 503])
def test_429_and_5xx_are_transient_with_the_status_in_the_message(fake, status):
    fake.fail_xml("/observations", status, "Try later", times=1)
    c, _ = client(fake)
    with pytest.raises(FredError, match=f"HTTP {status}") as err:
        fetch_observations(c, "CPIAUCSL", D(2024, 1, 1))
    assert is_transient(err.value) and err.value.status == status
    assert len(fetch_observations(c, "CPIAUCSL", D(2024, 1, 1))) == 3  # the next try works


@pytest.mark.integration
def test_a_stalled_response_times_out_as_transient(fake):
    fake.stall("/observations", delay_s=3.0)
    c, _ = client(fake, timeout_s=0.3)
    began = time.monotonic()
    with pytest.raises(FredError, match="TimeoutError") as err:
        fetch_observations(c, "CPIAUCSL", D(2024, 1, 1))
    assert time.monotonic() - began < 2.0  # gave up on the stall instead of waiting 3 s
    assert is_transient(err.value)


@pytest.mark.integration
def test_vintages_beyond_freds_2000_limit_are_fetched_in_windows(fake):
    days = {D(2012, 1, 1) + dt.timedelta(days=i): float(i) for i in range(4200)}
    fake.add_series("DGS10", days)  # daily: a new vintage every day
    fake.revise("DGS10", D(2012, 1, 1), 99.0, on=D(2023, 6, 1))
    c, _ = client(fake)
    rows = fetch_vintages(c, "DGS10", D(2012, 1, 1))
    history = revision_history(rows, pd.DataFrame(columns=VINTAGE_COLUMNS))
    assert len(history) == 4201  # every first release, and the one revision
    windows = [r for r in fake.requests if "realtime_start" in r.query]
    assert len(windows) == 3  # a single request would have been refused
