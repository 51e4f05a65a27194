"""tasks.macro.fred: the pure parsers on small tables, the client against a FRED stand-in."""

from __future__ import annotations

import datetime as dt
import math
import time

import pandas as pd
import pytest
from pydantic import SecretStr

from tasks.macro.fred import (
    FredError,
    FredKeyError,
    TimedFred,
    fetch_info,
    fetch_observations,
    fetch_vintages,
    is_transient,
    scrub,
)
from tasks.macro.series import (
    VINTAGE_COLUMNS,
    revision_history,
)
from tasks.macro.storage import StoredSeries, needs_fetch
from tests.fakes.fred import NO_SERIES, FakeFred

D = dt.date
KEY = "abcdef0123456789abcdef0123456789"


# ------------------------------------------------------------------------------- pure parts


def test_scrub_hides_the_key_in_urls_and_anywhere_else():
    text = "GET /fred/series?series_id=X&api_key=s3cr3t&file_type=xml (s3cr3t)"
    assert scrub(text, "s3cr3t") == "GET /fred/series?series_id=X&api_key=***&file_type=xml (***)"
    assert "zzz" not in scrub("failed: https://h/fred?api_key=zzz")


def test_a_series_is_fetched_only_when_freds_version_moved():
    at = dt.datetime(2024, 1, 11, 13, 46, 2, tzinfo=dt.UTC)
    info = {"last_updated": at}
    stored = StoredSeries(at.replace(tzinfo=None), D(2004, 1, 1), has_vintages=False)
    assert not needs_fetch(stored, info, vintages=False)  # SQLite's naive UTC is the same
    assert needs_fetch(stored, {"last_updated": at + dt.timedelta(seconds=1)}, vintages=False)
    assert needs_fetch(None, info, vintages=False)  # never stored
    assert needs_fetch(stored, info, vintages=True)  # its history was never taken


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
