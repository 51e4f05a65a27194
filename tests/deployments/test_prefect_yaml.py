"""prefect.yaml against the routes, schedules and triggers the platform relies on."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint
from prefect.server.schemas.schedules import CronSchedule

from deployments.pools import POOL_NAMES

ROOT = Path(__file__).resolve().parents[2]

# deployment: (entrypoint, flow name, pool, cron or None). The crons are the fire times in UTC
# (README, "What runs where"); prefect.yaml writes them in the operator's Asia/Seoul and must
# fire at the same instants.
EXPECTED = {
    "universes-us": ("flows/listings.py:refresh_universes", "universes", "fargate", "30 8 * * 2-6"),
    "universes-kr": (
        "flows/listings.py:refresh_universes",
        "universes",
        "fargate",
        "30 20 * * 1-5",
    ),
    "us-prices": ("flows/prices.py:ingest_us_prices", "us-prices", "fargate", "0 9 * * 2-6"),
    "kr-prices": ("flows/prices.py:ingest_kr_prices", "kr-prices", "fargate", "0 21 * * 1-5"),
    "us-market-prices": ("flows/market.py:ingest_market_prices", "market-prices", "fargate", None),
    "kr-market-prices": ("flows/market.py:ingest_market_prices", "market-prices", "fargate", None),
    "macro": ("flows/macro.py:ingest_macro", "macro", "fargate", "0 23 * * 0-5"),
    "backup-postgres": (
        "flows/backups.py:backup_postgres",
        "backup-postgres",
        "oracle-osaka",
        "30 18 * * *",
    ),
    "backup-redis": (
        "flows/backups.py:backup_redis",
        "backup-redis",
        "oracle-osaka",
        "45 18 * * *",
    ),
    "verify-backups": (
        "flows/backups.py:verify_backups",
        "verify-backups",
        "oracle-osaka",
        "0 20 * * 6",
    ),
    "launch-a1-instance": (
        "flows/a1_launch.py:launch_a1_instance",
        "launch-a1-instance",
        "oracle-chuncheon",
        "*/10 * * * *",
    ),
    "train-model": ("flows/models.py:train_model", "train-model", "gpu-desktop", "0 3 * * 6"),
    "predict-returns": ("flows/models.py:predict_returns", "predict-returns", "gpu-desktop", None),
    "predict-returns-cpu": ("flows/models.py:predict_returns", "predict-returns", "fargate", None),
    "health-page": ("flows/health.py:health_page", "health-page", "oracle-mumbai", "5 * * * *"),
}


def fire_times(cron: str, timezone: str, count: int = 400) -> list[dt.datetime]:
    """The next count instants (in UTC) the server's own schedule class gives for cron."""
    schedule = CronSchedule(cron=cron, timezone=timezone)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    dates = asyncio.run(schedule.get_dates(n=count, start=start))
    return [d.astimezone(dt.UTC) for d in dates]


def test_fire_times_compare_instants_not_wall_clocks():
    # The same wall clock in two zones is not the same instant: the comparison can fail.
    assert fire_times("0 18 * * 2-6", "Asia/Seoul") != fire_times("0 18 * * 2-6", "UTC")


@pytest.fixture(scope="module")
def deployments() -> dict[str, dict]:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d for d in config["deployments"]}


def test_every_flow_of_the_contract_is_deployed_once(deployments):
    assert set(deployments) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_deployment_entrypoint_pool_and_schedule(deployments, name):
    entrypoint, flow_name, pool, cron = EXPECTED[name]
    deployment = deployments[name]
    assert deployment["entrypoint"] == entrypoint
    flow = load_flow_from_entrypoint(str(ROOT / entrypoint))
    assert flow.name == flow_name
    assert deployment["work_pool"]["name"] == pool
    assert pool in POOL_NAMES
    schedules = deployment.get("schedules") or []
    if cron is None:
        assert not schedules, f"{name} runs on events, not a clock"
    else:
        ((schedule,),) = [schedules]
        assert schedule["timezone"] == "Asia/Seoul"
        assert fire_times(schedule["cron"], "Asia/Seoul") == fire_times(cron, "UTC")
    # Parameters fixed by the deployment are parameters the flow has.
    accepted = set(inspect.signature(flow.fn).parameters)
    assert set(deployment.get("parameters") or {}) <= accepted
    for trigger in deployment.get("triggers") or []:
        assert set(trigger.get("parameters") or {}) <= accepted


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_flow_retries_and_every_flow_has_a_timeout(name):
    # A flow-level retry repeats deterministic errors and delays their alert by minutes; the
    # retry budget lives on the tasks that do network work (retry_condition_fn).
    flow = load_flow_from_entrypoint(str(ROOT / EXPECTED[name][0]))
    assert not flow.retries
    assert flow.timeout_seconds and flow.timeout_seconds <= 7200
    if name in ("us-prices", "kr-prices", "macro"):
        assert flow.timeout_seconds == 1800


def test_ingestion_fits_the_small_fargate_task(deployments):
    for name in ("us-prices", "kr-prices", "macro"):
        assert deployments[name]["work_pool"]["job_variables"] == {"cpu": 256, "memory": 512}


def test_a1_launch_is_paused_until_configured_and_never_runs_twice(deployments):
    deployment = deployments["launch-a1-instance"]
    assert deployment["schedules"][0]["active"] is False
    assert deployment["concurrency_limit"] == 1


def test_price_runs_chain_into_predictions_for_their_market(deployments):
    triggers = deployments["predict-returns"]["triggers"]
    chained = {
        t["match_related"]["prefect.resource.name"]: (t["expect"], t["parameters"])
        for t in triggers
    }
    assert chained == {
        "us-prices": (["prefect.flow-run.Completed"], {"market": "US"}),
        "kr-prices": (["prefect.flow-run.Completed"], {"market": "KR"}),
    }


def test_desktop_prediction_falls_back_to_cpu_on_fargate(deployments):
    fallback = deployments["predict-returns-cpu"]
    assert fallback["parameters"] == {"device": "cpu"}
    assert fallback["work_pool"]["job_variables"]["cpu"] == 1024
    assert fallback["work_pool"]["job_variables"]["memory"] == 2048
    reactive, proactive = fallback["triggers"]
    for trigger in (reactive, proactive):
        assert trigger["match_related"] == {
            "prefect.resource.role": "deployment",
            "prefect.resource.name": "predict-returns",
        }
        assert set(trigger["parameters"]) == {
            "market",
            "model_version",
            "batch_size",
            "device",
            "replaces",
        }
        assert trigger["parameters"]["device"] == "cpu"
    # Only when the desktop could not run it: a Failed run is a code error the CPU would repeat.
    assert reactive["expect"] == ["prefect.flow-run.Crashed"]
    assert proactive["posture"] == "Proactive"
    assert proactive["after"] == ["prefect.flow-run.Late"]
    assert proactive["within"] == 900  # still Late after 15 minutes
    assert "prefect.flow-run.Running" in proactive["expect"]


def test_every_trigger_has_a_name_and_a_description(deployments):
    for deployment in deployments.values():
        for trigger in deployment.get("triggers") or []:
            assert trigger["name"].startswith("investflow: ") and trigger["description"]
