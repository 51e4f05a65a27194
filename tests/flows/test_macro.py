"""The macro flow against the local FRED stand-in, real PostgreSQL and the real Prefect server."""

from __future__ import annotations

import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogHandler

from flows.macro import ingest_macro
from tasks.macro.storage import AS_OF_SQL
from tasks.store.schema import macro_observations, macro_series, macro_vintages, quality_flags
from tests.fakes.fred import NO_SERIES, FakeFred

pytestmark = pytest.mark.integration

D = dt.date
KEY = "abcdef0123456789abcdef0123456789"
MONTHS = [D(2023 + m // 12, m % 12 + 1, 1) for m in range(24)]  # 2023-01 .. 2024-12


@pytest.fixture
def fake(monkeypatch):
    with FakeFred(KEY) as server:
        server.add_series(
            "CPIAUCSL", {d: 300.0 + i for i, d in enumerate(MONTHS)}, lag_days=45,
            title="Consumer Price Index for All Urban Consumers: All Items in U.S. City Average",
        )  # fmt: skip
        server.add_series(
            "DGS10", {D(2024, 11, 1) + dt.timedelta(days=i): 4.0 + i / 100 for i in range(30)},
            frequency="Daily", frequency_short="D", units="Percent",
            seasonal_adjustment="Not Seasonally Adjusted", seasonal_adjustment_short="NSA",
        )  # fmt: skip
        monkeypatch.setenv("INVESTFLOW_FRED_BASE_URL", server.url)
        monkeypatch.setenv("INVESTFLOW_FRED_API_KEY", KEY)
        yield server


def run(**params):
    params.setdefault("series", ["CPIAUCSL", "DGS10"])
    params.setdefault("retry_backoff_s", 0.05)
    # The deployment's retries (5 minutes apart) are for real outages, not for these tests.
    return ingest_macro.with_options(retries=0)(**params, return_state=True)


def rows(engine, table, *where) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(sa.select(table).where(*where)).mappings())


def cpi(engine, obs_date) -> dict:
    found = rows(engine, macro_observations, macro_observations.c.obs_date == obs_date,
                 macro_observations.c.series_id == "CPIAUCSL")  # fmt: skip
    return found.iloc[0].to_dict()


def artifact_rows(state) -> list[dict]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    (table,) = [a for a in found if a.key == "macro-ingest"]
    data = json.loads(table.data) if isinstance(table.data, str) else table.data
    return {r["series"]: r for r in data}


def server_texts(state) -> str:
    """Every log line and every state message the server holds for this flow run."""
    run_id = state.state_details.flow_run_id
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        texts = [state.message or ""]
        texts += [s.message or "" for s in client.read_flow_run_states(run_id)]
        deadline = time.time() + 10
        while True:  # task run states reach the server as events, a moment later
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
            if all(t.state and t.state.is_final() for t in task_runs) or time.time() > deadline:
                break
            time.sleep(0.3)
        texts += [t.state.message or "" for t in task_runs if t.state]
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        texts += [log.message for log in logs]
    return "\n".join(texts)


def test_first_run_stores_everything_and_a_revision_updates_exactly_that_row(pg_engine, fake):
    state = run()
    assert state.is_completed(), state.message
    obs = rows(pg_engine, macro_observations)
    assert len(obs) == 24 + 30
    meta = rows(pg_engine, macro_series).set_index("series_id")
    assert meta.loc["CPIAUCSL", "frequency"] == "Monthly"
    assert meta.loc["DGS10", "units"] == "Percent"
    assert meta.loc["CPIAUCSL", "observation_end"] == D(2024, 12, 1)
    table = artifact_rows(state)
    assert table["CPIAUCSL"]["inserted"] == 24 and table["CPIAUCSL"]["status"] == "ok"
    assert table["CPIAUCSL"]["last_observation"] == "2024-12-01"

    fake.revise("CPIAUCSL", D(2024, 10, 1), 999.9)
    fake.requests.clear()
    state = run()
    assert state.is_completed(), state.message
    table = artifact_rows(state)
    assert (table["CPIAUCSL"]["inserted"], table["CPIAUCSL"]["updated"]) == (0, 1)
    assert (table["DGS10"]["inserted"], table["DGS10"]["updated"]) == (0, 0)
    assert cpi(pg_engine, D(2024, 10, 1))["value"] == 999.9
    assert cpi(pg_engine, D(2024, 9, 1))["value"] == 300.0 + 20
    # CPI's last_updated moved: fetched whole. DGS10's did not: one metadata request, no more.
    asked = [(r.path, r.query["series_id"]) for r in fake.requests]
    assert asked.count(("/fred/series", "DGS10")) == 1 and len(asked) == 3
    assert [s for p, s in asked if p.endswith("/observations")] == ["CPIAUCSL"]
    assert (table["DGS10"]["action"], table["CPIAUCSL"]["action"]) == ("unchanged", "fetched")


def test_a_missing_value_is_null_until_a_revision_fills_it_and_history_is_kept(pg_engine, fake):
    fake.series["CPIAUCSL"].history[D(2024, 12, 1)] = [(D(2025, 1, 15), ".")]
    state = run(series=["CPIAUCSL"], vintages=True)
    assert state.is_completed(), state.message
    assert cpi(pg_engine, D(2024, 12, 1))["value"] is None

    fake.revise("CPIAUCSL", D(2024, 12, 1), 321.5, on=D(2025, 2, 12))
    state = run(series=["CPIAUCSL"], vintages=True)
    assert state.is_completed(), state.message
    filled = cpi(pg_engine, D(2024, 12, 1))
    assert filled["value"] == 321.5 and filled["realtime_start"] == D(2025, 2, 12)
    history = rows(pg_engine, macro_vintages, macro_vintages.c.obs_date == D(2024, 12, 1))
    history = history.sort_values("realtime_start")
    assert list(history["realtime_start"]) == [D(2025, 1, 15), D(2025, 2, 12)]
    assert history["value"].iloc[0] is None or pd.isna(history["value"].iloc[0])
    assert artifact_rows(state)["CPIAUCSL"]["updated"] == 1
    flagged = rows(pg_engine, quality_flags)
    assert list(zip(flagged["entity"], flagged["flag_date"], flagged["kind"])) == [
        ("CPIAUCSL", D(2024, 12, 1), "missing_value")  # flagged once over two runs
    ]
    # A third run with nothing new writes nothing, vintages included.
    before = len(rows(pg_engine, macro_vintages))
    state = run(series=["CPIAUCSL"], vintages=True)
    assert artifact_rows(state)["CPIAUCSL"]["updated"] == 0
    assert len(rows(pg_engine, macro_vintages)) == before


def test_an_unknown_series_fails_alone_with_freds_message(pg_engine, fake):
    state = run(series=["CPIAUCSL", "NOSUCHSERIES", "DGS10"], max_failed_ratio=0.5)
    assert state.is_completed(), state.message
    table = artifact_rows(state)
    assert table["NOSUCHSERIES"]["status"] == "failed"
    assert table["NOSUCHSERIES"]["error"] == NO_SERIES
    assert set(rows(pg_engine, macro_observations)["series_id"]) == {"CPIAUCSL", "DGS10"}

    # With the default 20% allowance, one failure in three fails the run, naming the series.
    state = run(series=["CPIAUCSL", "NOSUCHSERIES", "DGS10"])
    assert state.is_failed()
    assert "1 of 3 series failed" in state.message and "NOSUCHSERIES" in state.message


def test_a_bad_key_fails_the_run_clearly_and_appears_nowhere(pg_engine, fake, monkeypatch):
    bad_key = "0123456789wrongkeywrongkey012345"
    monkeypatch.setenv("INVESTFLOW_FRED_API_KEY", bad_key)
    fake.leaky_errors = True  # even a server that echoes the request must not leak it
    state = run()
    assert state.is_failed()
    assert "FRED refused the API key" in state.message
    # The first refusal (and the key check that tells it from an unknown series) stops the
    # run: no point asking again, no retry.
    assert fake.count() == 2
    texts = server_texts(state)
    assert "refused the API key" in texts  # the logs were read, and say what happened
    assert bad_key not in texts


def test_a_missing_key_is_a_clear_error_before_any_request(pg_engine, fake, monkeypatch):
    monkeypatch.delenv("INVESTFLOW_FRED_API_KEY")
    state = run()
    assert state.is_failed()
    assert "INVESTFLOW_FRED_API_KEY" in state.message and "fred-api-key" in state.message
    assert fake.count() == 0


def test_the_key_comes_from_the_secret_block_first(pg_engine, fake, monkeypatch):
    from prefect.blocks.system import Secret

    monkeypatch.setenv("INVESTFLOW_FRED_API_KEY", "not-the-key")
    Secret(value=KEY).save("fred-api-key", overwrite=True)
    try:
        state = run(series=["DGS10"])
    finally:
        with get_client(sync_client=True) as client:
            client.delete_block_document(
                client.read_block_document_by_name("fred-api-key", "secret").id
            )
    assert state.is_completed(), state.message
    assert KEY not in server_texts(state)


def test_a_stalled_response_times_out_and_is_retried(pg_engine, fake, monkeypatch):
    monkeypatch.setenv("INVESTFLOW_HTTP_TIMEOUT_S", "0.5")
    fake.stall("/observations", delay_s=10.0)
    state = run(series=["DGS10"])
    assert state.is_completed(), state.message
    stalled, retried = fake.times("/observations")
    assert retried - stalled < 5.0  # gave up after the timeout, did not wait out the stall
    assert len(rows(pg_engine, macro_observations)) == 30
    assert "TimeoutError" in server_texts(state)  # the retry was logged, with its reason


def test_two_concurrent_runs_stay_under_freds_rate_limit(pg_engine, fake):
    for sid in ("UNRATE", "PAYEMS", "FEDFUNDS", "DFF"):
        fake.add_series(sid, {d: 3.5 for d in MONTHS})
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(run, series=["CPIAUCSL", "UNRATE", "PAYEMS"])
        second = pool.submit(run, series=["DGS10", "FEDFUNDS", "DFF"])
        states = [first.result(), second.result()]
    assert all(s.is_completed() for s in states), [s.message for s in states]
    assert fake.count() == 12
    assert fake.max_per_second() <= 2
    assert len(set(rows(pg_engine, macro_observations)["series_id"])) == 6


PAYROLLS = {D(2015 + m // 12, m % 12 + 1, 1): 140_000.0 + 100 * m for m in range(120)}


def test_a_revision_five_years_back_reaches_the_store(pg_engine, fake):
    fake.add_series("PAYEMS", PAYROLLS, lag_days=35, units="Thousands of Persons")
    assert run(series=["PAYEMS"]).is_completed()
    # A benchmark revision rewrites all of 2019-2020 and FRED bumps last_updated.
    revised = {d: v - 250.0 for d, v in PAYROLLS.items() if d.year in (2019, 2020)}
    for obs_date, value in revised.items():
        fake.revise("PAYEMS", obs_date, value)

    state = run(series=["PAYEMS"])

    assert state.is_completed(), state.message
    assert artifact_rows(state)["PAYEMS"]["updated"] == 24
    stored = rows(pg_engine, macro_observations, macro_observations.c.series_id == "PAYEMS")
    assert dict(zip(stored["obs_date"], stored["value"], strict=True)) == PAYROLLS | revised
    (meta,) = rows(pg_engine, macro_series).itertuples()
    assert meta.last_updated == pd.Timestamp(fake.series["PAYEMS"].last_updated)


def test_an_unchanged_series_costs_one_request_and_writes_nothing(pg_engine, fake):
    assert run().is_completed()
    fake.requests.clear()
    with pg_engine.connect() as conn:
        batches = conn.execute(sa.text("SELECT count(*) FROM ingest_batches")).scalar()
    state = run()
    assert state.is_completed(), state.message
    assert [(r.path, r.query["series_id"]) for r in fake.requests] == [
        ("/fred/series", "CPIAUCSL"), ("/fred/series", "DGS10")
    ]  # fmt: skip
    with pg_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ingest_batches")).scalar() == batches
    assert {r["action"] for r in artifact_rows(state).values()} == {"unchanged"}


def test_last_updated_moves_only_with_the_data(pg_engine, fake):
    assert run(series=["CPIAUCSL"]).is_completed()
    before = rows(pg_engine, macro_series)["last_updated"].iloc[0]
    fake.revise("CPIAUCSL", D(2023, 3, 1), 123.4)
    fake.fail_xml("/observations", 400, "Bad Request.  Something broke.", times=1)
    assert run(series=["CPIAUCSL"]).is_failed()
    assert rows(pg_engine, macro_series)["last_updated"].iloc[0] == before  # not that version
    assert cpi(pg_engine, D(2023, 3, 1))["value"] == 302.0
    assert run(series=["CPIAUCSL"]).is_completed()  # the next run sees the version moved
    assert cpi(pg_engine, D(2023, 3, 1))["value"] == 123.4


def test_vintages_answer_what_fred_said_on_a_day(pg_engine, fake):
    # March 2024 CPI: first published 2024-04-15, revised 2024-05-15 and again 2025-02-12.
    fake.series["CPIAUCSL"].history[D(2024, 3, 1)] = [
        (D(2024, 4, 15), "314.0"), (D(2024, 5, 15), "314.5"), (D(2025, 2, 12), "313.9")
    ]  # fmt: skip
    assert run(series=["CPIAUCSL"], vintages=True).is_completed()

    def as_of(on):
        with pg_engine.connect() as conn:
            return conn.execute(
                sa.text(AS_OF_SQL), {"series_id": "CPIAUCSL", "obs_date": D(2024, 3, 1), "on": on}
            ).scalar()

    assert as_of(D(2024, 4, 14)) is None  # not published yet
    assert as_of(D(2024, 4, 15)) == 314.0
    assert as_of(D(2024, 12, 31)) == 314.5
    assert as_of(D(2025, 2, 12)) == 313.9
    assert cpi(pg_engine, D(2024, 3, 1))["value"] == 313.9


def test_two_runs_over_the_same_series_started_together_both_complete(pg_engine, fake):
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(run), pool.submit(run, series=["DGS10", "CPIAUCSL"])]
        states = [r.result() for r in runs]
    assert all(s.is_completed() for s in states), [s.message for s in states]
    assert len(rows(pg_engine, macro_observations)) == 24 + 30  # each observation once
    assert len(rows(pg_engine, macro_series)) == 2
