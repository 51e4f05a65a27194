"""Alerts sent by the Prefect server itself: failures, late runs, pools, overdue, stale data.

The session's real server holds the automations applied by `python -m deployments.bootstrap
automations` and the investflow-alerts block pointing at the webhook stand-in; no worker is
running unless a test starts one.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.states import Crashed, Running, Scheduled

from tests.deployments import stack
from tests.fakes.fred import FakeFred
from tests.fakes.webhook import FakeWebhook
from tests.fakes.yahoo import FakeYahoo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FRED_KEY = "abcdef0123456789abcdef0123456789"
LATE_AFTER_S = 10  # the shortest window a proactive trigger accepts


@pytest.fixture(scope="module")
def alerting(tmp_path_factory):
    logs = tmp_path_factory.mktemp("alert-logs")
    with FakeWebhook() as webhook:
        url = webhook.url + "/api/webhooks/1/alert-token"
        env = stack.stack_env(
            INVESTFLOW_ALERT_WEBHOOK_URL=url,
            INVESTFLOW_ALERT_LATE_AFTER_S=str(LATE_AFTER_S),
        )
        python, prefect = str(stack.BIN / "python"), str(stack.BIN / "prefect")
        stack.run([python, "-m", "deployments.bootstrap", "--local", "pools"], env)
        applied = stack.apply_alerts(env, url)
        stack.run([prefect, "--no-prompt", "deploy", "-n", "macro", "-n", "train-model"], env)
        yield {"env": env, "webhook": webhook, "applied": applied, "logs": logs}
        stack.remove_alerts()
        with get_client(sync_client=True) as client:
            for deployment in client.read_deployments():
                client.delete_deployment(deployment.id)


def deployment_id(name: str):
    with get_client(sync_client=True) as client:
        (found,) = client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name]))
        )
    return found.id


def alerts_for(webhook, needle: str) -> list[str]:
    return webhook.matching(needle)


def test_automations_are_named_and_applying_twice_changes_nothing(alerting):
    assert "created" in alerting["applied"]
    again = stack.run(
        [str(stack.BIN / "python"), "-m", "deployments.bootstrap", "automations"], alerting["env"]
    )
    assert "created" not in again and "updated" not in again and "unchanged" in again
    with get_client(sync_client=True) as client:
        ours = [a for a in client.read_automations() if a.name.startswith("investflow: ")]
    names = {a.name for a in ours}
    assert "investflow: alert on a failed or timed-out run" in names
    assert "investflow: alert when macro has no completed run for 49.0 h" in names
    assert all(a.description for a in ours)
    assert len(names) == len(ours)


def test_a_failed_run_reaches_the_webhook_with_no_worker_running(alerting, monkeypatch):
    from flows.macro import ingest_macro

    # No FRED key anywhere: a deterministic failure, no retry, run in this test process.
    monkeypatch.delenv("INVESTFLOW_FRED_API_KEY", raising=False)
    state = ingest_macro(series=["DGS10"], return_state=True)
    assert state.is_failed()
    run_id = str(state.state_details.flow_run_id)
    with get_client(sync_client=True) as client:
        started = client.read_flow_run(run_id).start_time
    (text,) = stack.wait_until(
        lambda: alerts_for(alerting["webhook"], run_id), timeout=30, what="the failure alert"
    )
    received = next(r.at for r in alerting["webhook"].requests if run_id.encode() in r.body)
    assert received - started.timestamp() < 30  # README's target (Benchmarks) for a missing key
    assert "macro" in text and "Failed" in text and "FRED API key" in text
    assert f"/runs/flow-run/{run_id}" in text
    time.sleep(3)
    assert len(alerts_for(alerting["webhook"], run_id)) == 1
    assert b"alert-token" not in b"".join(alerting["webhook"].raw_bodies)


def test_a_deployed_missing_key_run_alerts_within_30_s_of_its_start(alerting):
    env = {**alerting["env"]}
    env.pop("INVESTFLOW_FRED_API_KEY", None)
    with stack.worker("fargate", env, alerting["logs"]):
        run_id = stack.deployment_run("macro/macro", env, 'series=["DGS10"]')
        flow_run = stack.wait_for_final_state(run_id, timeout=120)
        assert flow_run.state.is_failed() and flow_run.run_count == 1  # no flow retry
        texts = stack.wait_until(
            lambda: alerts_for(alerting["webhook"], str(run_id)), timeout=30, what="the alert"
        )
        time.sleep(3)  # a second message for the run would be here by now
        texts = alerts_for(alerting["webhook"], str(run_id))
        assert len(texts) == 1, texts
        (text,) = texts
    received = next(r.at for r in alerting["webhook"].requests if str(run_id).encode() in r.body)
    assert received - flow_run.start_time.timestamp() < 30
    assert "macro/macro" in text and "Pool: fargate" in text


def test_a_transient_503_then_success_completes_without_an_alert(alerting, pg_engine, monkeypatch):
    from flows.macro import ingest_macro

    with FakeFred(FRED_KEY) as fred:
        fred.add_series("DGS10", {"2024-01-02": 4.0, "2024-01-03": 4.1})
        fred.fail_xml("/observations", 503, "Service Unavailable", times=1)
        monkeypatch.setenv("INVESTFLOW_FRED_API_KEY", FRED_KEY)
        monkeypatch.setenv("INVESTFLOW_FRED_BASE_URL", fred.url)
        state = ingest_macro(
            series=["DGS10"], start=dt.date(2024, 1, 1), retry_backoff_s=0.1, return_state=True
        )
        assert state.is_completed(), state.message
        assert fred.count("/observations") == 2  # retried once by the task
    time.sleep(5)
    assert not alerts_for(alerting["webhook"], str(state.state_details.flow_run_id))


def test_a_late_run_alerts_once_naming_its_deployment_and_pool(alerting):
    # train-model's pool (gpu-desktop) has no worker here: the run goes Late and stays Late.
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(
            deployment_id("train-model"),
            state=Scheduled(scheduled_time=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)),
        )
    (text,) = stack.wait_until(
        lambda: alerts_for(alerting["webhook"], str(run.id)),
        timeout=90,
        what="the late-run alert",
        interval=1,
    )
    assert "train-model/train-model" in text and "gpu-desktop" in text and "late" in text
    time.sleep(LATE_AFTER_S + 5)
    assert len(alerts_for(alerting["webhook"], str(run.id))) == 1


def pool_status(name: str) -> str:
    with get_client(sync_client=True) as client:
        status = client.read_work_pool(name).status
    return str(getattr(status, "value", status))


def test_a_pool_without_a_live_worker_alerts_once_and_again_when_back(alerting):
    webhook = alerting["webhook"]
    with stack.worker("oracle-mumbai", alerting["env"], alerting["logs"]):
        stack.wait_until(lambda: pool_status("oracle-mumbai") == "READY", 60, "the pool ready")
        time.sleep(5)
    # Ready for the first time is not "back": nothing was down.
    assert not alerts_for(webhook, "oracle-mumbai has a live worker")
    stack.wait_until(
        lambda: alerts_for(webhook, "oracle-mumbai has no live worker"),
        timeout=120,  # three 5 s heartbeats missed plus the server's sweep
        what="the pool-not-ready alert",
        interval=1,
    )
    with stack.worker("oracle-mumbai", alerting["env"], alerting["logs"]):
        stack.wait_until(
            lambda: alerts_for(webhook, "oracle-mumbai has a live worker again"),
            timeout=60,
            what="the pool-back alert",
        )
        time.sleep(5)
    assert len(alerts_for(webhook, "oracle-mumbai has no live worker")) == 1
    assert len(alerts_for(webhook, "oracle-mumbai has a live worker again")) == 1


def test_a_crashed_run_is_resubmitted_by_the_server(alerting):
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id("train-model"))
        client.set_flow_run_state(run.id, Running(), force=True)  # its first try began
        # What a worker reports when the node under the run dies.
        client.set_flow_run_state(run.id, Crashed(message="spot interruption"), force=True)

        def rescheduled():
            current = client.read_flow_run(run.id)
            return current.state.is_scheduled() and current

        current = stack.wait_until(rescheduled, timeout=30, what="the resubmitted run")
    assert current.state.name == "Resubmitted"
    time.sleep(3)
    assert not alerts_for(alerting["webhook"], str(run.id))  # resubmitted, not alerted


def test_a_deployment_without_a_completed_run_in_its_window_alerts_once(alerting):
    from deployments.alert_rules import Cadence, desired
    from deployments.automations import apply

    wait_until = stack.wait_until
    with get_client(sync_client=True) as client:
        block = client.read_block_document_by_name("investflow-alerts", "custom-webhook")
        (overdue,) = desired(
            block.id, "http://ui", cadence_list=[Cadence("macro", dt.timedelta(seconds=15))]
        )[-1:]
        overdue.name = f"investflow-test: overdue {uuid.uuid4().hex[:6]}"
        apply([overdue], client, prune=False)
        try:
            wait_until(
                lambda: alerts_for(alerting["webhook"], "macro is overdue"),
                timeout=60,
                what="the overdue alert",
                interval=1,
            )
        finally:
            (made,) = client.read_automations_by_name(overdue.name)
            client.delete_automation(made.id)
    time.sleep(3)
    assert len(alerts_for(alerting["webhook"], "macro is overdue")) == 1


def test_a_stale_market_alerts_once(alerting, pg_engine, monkeypatch):
    from flows.prices import ingest_us_prices

    fri = dt.datetime(2024, 6, 14, 22, 0, tzinfo=dt.UTC)
    with FakeYahoo() as yahoo:
        for name, value in yahoo.env().items():
            monkeypatch.setenv(name, value)
        # Stored through the 7th; the market's last closed session is the 14th.
        ingest_us_prices(
            symbols=["AAPL"], start=dt.date(2024, 5, 1), end=dt.date(2024, 6, 7),
            as_of=fri, backoff_s=0.01,
        )  # fmt: skip
    (text,) = stack.wait_until(
        lambda: alerts_for(alerting["webhook"], "US prices is stale"),
        timeout=30,
        what="the stale-data alert",
    )
    time.sleep(3)
    assert len(alerts_for(alerting["webhook"], "US prices is stale")) == 1
    assert "2024-06-07" in text and "2024-06-14" in text and "5 sessions behind" in text
