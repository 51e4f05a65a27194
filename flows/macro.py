"""Macro job: FRED series into the market store, incrementally, with their revisions."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from tasks import clock
from tasks.health.freshness import emit_freshness, macro_facts, macro_group, macro_newest
from tasks.limits import ensure_rate_limit
from tasks.logs import run_id
from tasks.macro.fred import (
    DEFAULT_SERIES,
    FredKeyError,
    build_client,
    fetch_info,
    fetch_observations,
    fetch_vintages,
    is_transient,
    read_vintages,
    resolve_api_key,
    scrub,
)
from tasks.macro.report import outcome, publish, raise_if_failed
from tasks.macro.series import (
    clean_series_ids,
    new_vintages,
    revision_history,
    with_realtime_start,
)
from tasks.macro.storage import StoredSeries, needs_fetch, stored_series, write_series
from tasks.params import PastDate, Ratio, Seconds, SeriesId
from tasks.retries import retry_when
from tasks.settings import get_settings
from tasks.store.engine import engine_from_settings

HISTORY_YEARS = 20


# retry_condition_fn: only network errors, timeouts, 429 and 5xx are worth another try.
retry_transient = retry_when(is_transient)


# No cache: the client holds the key, and its inputs must never be hashed or stored. Two
# retries (README, Retries, timeouts and parameters), backing off exponentially with jitter.
@task(
    task_run_name="ingest-{series_id}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
)
def ingest_series(
    client, engine, series_id: str, first: dt.date, vintages: bool, stored: StoredSeries | None
) -> dict:
    """Ask FRED for the series' version; if it moved, fetch the whole series and write it.

    FRED revises years back (seasonal factors, benchmark revisions) and bumps last_updated:
    one cheap metadata request tells whether anything changed, and a changed series is
    fetched whole, since no window says how far back the revision went.
    """
    info = fetch_info(client, series_id)
    if not needs_fetch(stored, info, vintages):
        return outcome(series_id, "ok", action="unchanged", last_updated=str(info["last_updated"]))
    since = min(first, stored.first_obs) if stored and stored.first_obs else first
    observations = fetch_observations(client, series_id, since)
    added = pd.DataFrame()
    if vintages:
        kept = read_vintages(engine, series_id, since)
        history = revision_history(fetch_vintages(client, series_id, since), kept)
        added = new_vintages(history, kept)
        observations = with_realtime_start(observations, history)
    # Everything is fetched before anything is written: a failed series leaves no half.
    result, flags = write_series(engine, info, observations, added, run_id())
    last = observations["obs_date"].max() if not observations.empty else None
    return outcome(
        series_id, "ok", inserted=result.inserted, updated=result.updated,
        unchanged=result.unchanged, last_observation=str(last or ""), vintages=len(added),
        action="fetched", last_updated=str(info["last_updated"]), new_flags=len(flags),
    )  # fmt: skip


# No flow retries: a missing or refused key, an unknown series or a bad parameter would only
# repeat; network errors, 429 and 5xx are retried per series by ingest_series.
@flow(name="macro", timeout_seconds=1800)
def ingest_macro(
    series: list[SeriesId] = list(DEFAULT_SERIES),  # noqa: B006 - never mutated; shown in the UI
    start: PastDate | None = None,
    vintages: bool = False,
    max_failed_ratio: Ratio = 0.2,
    retry_backoff_s: Seconds = 10.0,
) -> list[dict]:
    """Bring FRED series up to date: metadata, observations, and optionally revisions.

    retry_backoff_s: the first retry's delay for a transient error; the second waits twice it.
    """
    settings = get_settings()
    api_key = resolve_api_key(settings)  # a missing key stops the run before any request
    ensure_rate_limit("fred")
    client = build_client(settings, api_key)
    engine = engine_from_settings(settings)

    ids, invalid = clean_series_ids(series)
    first = start or clock.now().date() - dt.timedelta(days=round(365.25 * HISTORY_YEARS))
    ingest = ingest_series.with_options(
        retry_delay_seconds=exponential_backoff(backoff_factor=retry_backoff_s)
    )
    outcomes = [outcome(s, "failed", "not a FRED series id") for s in invalid]
    key_error = ingest_each(ingest, client, engine, ids, first, vintages, outcomes, api_key)

    publish(outcomes)
    report_freshness(engine)
    failed = sum(o["status"] != "ok" for o in outcomes)
    get_run_logger().info("macro: %d series ok, %d failed", len(outcomes) - failed, failed)
    raise_if_failed(outcomes, max_failed_ratio, key_error, api_key.get_secret_value())
    return outcomes


def ingest_each(ingest, client, engine, ids, first, vintages, outcomes, api_key) -> str | None:
    """Each series in turn, its outcome appended; a refused key skips the rest (returned)."""
    key = api_key.get_secret_value()
    stored = stored_series(engine, ids)
    key_error = None
    for series_id in ids:
        if key_error:
            outcomes.append(outcome(series_id, "skipped", key_error))
            continue
        state = ingest(
            client, engine, series_id, first, vintages, stored.get(series_id), return_state=True
        )
        if state.is_completed():
            outcomes.append(state.result())
            continue
        error = state.result(raise_on_failure=False)
        message = scrub(error, key) if isinstance(error, Exception) else scrub(state.message, key)
        outcomes.append(outcome(series_id, "failed", message))
        if isinstance(error, FredKeyError):
            key_error = message  # the same key would fail every other series too
    return key_error


def report_freshness(engine) -> None:
    """One freshness event per macro group (FRED frequency) with a target."""
    now = clock.now()
    for frequency, newest in macro_newest(engine).items():
        facts = macro_facts(frequency, newest, now)
        if facts is not None:
            group = macro_group(frequency)
            emit_freshness(f"macro.{group}", f"macro ({group})", facts)
