"""The deployed system end to end: `prefect deploy --all`, local process workers, triggers.

One module-wide stack: prefect.yaml deployed to the session's server, workers for the fargate,
oracle-osaka and oracle-chuncheon pools, the Yahoo and webhook stand-ins, PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.states import Crashed

from tasks.limits import ensure_rate_limits
from tests.deployments import stack
from tests.fakes.webhook import FakeWebhook
from tests.fakes.yahoo import FakeYahoo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FRED_KEY = "fred-key-never-shown-7f3a9c"


@pytest.fixture(scope="module")
def local_stack(pg_url, tmp_path_factory):
    ensure_rate_limits()
    logs = tmp_path_factory.mktemp("stack-logs")
    with FakeYahoo() as yahoo, FakeWebhook() as webhook:
        env = stack.stack_env(
            INVESTFLOW_DATABASE_URL=pg_url,
            **yahoo.env(),
            INVESTFLOW_ALERT_WEBHOOK_URL=webhook.url + "/api/webhooks/1/alert-token",
            INVESTFLOW_FRED_API_KEY=FRED_KEY,
            INVESTFLOW_BACKUP_DIR=str(tmp_path_factory.mktemp("backups")),
            INVESTFLOW_HTTP_TIMEOUT_S="10",
        )
        output = stack.bootstrap_and_deploy(env)
        stack.apply_alerts(env, env["INVESTFLOW_ALERT_WEBHOOK_URL"])
        with (
            stack.worker("fargate", env, logs),
            stack.worker("oracle-osaka", env, logs),
            stack.worker("oracle-chuncheon", env, logs),
        ):
            yield {"env": env, "yahoo": yahoo, "webhook": webhook, "deploy_output": output}
    # Later modules share this server: take the deployments, and so their triggers, away.
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


def runs_of(deployment: str) -> list:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment]))
        )


def test_every_deployment_is_on_the_server(local_stack):
    with get_client(sync_client=True) as client:
        names = {d.name for d in client.read_deployments()}
    assert {
        "us-prices",
        "kr-prices",
        "macro",
        "backup-postgres",
        "backup-redis",
        "verify-backups",
        "launch-a1-instance",
        "train-model",
        "predict-returns",
        "predict-returns-cpu",
        "health-page",
    } <= names


def test_shell_run_of_us_prices_fills_postgres_and_chains_predictions(local_stack, pg_url):
    start = (dt.date.today() - dt.timedelta(days=40)).isoformat()
    run_id = stack.deployment_run(
        "us-prices/us-prices", local_stack["env"], 'symbols=["AAPL","MSFT"]', f"start={start}"
    )
    flow_run = stack.wait_for_final_state(run_id, timeout=240)
    assert flow_run.state.is_completed(), flow_run.state.message
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        counts = dict(
            conn.execute(sa.text("SELECT symbol, count(*) FROM daily_prices GROUP BY symbol")).all()
        )
    engine.dispose()
    assert set(counts) == {"AAPL", "MSFT"}
    assert min(counts.values()) >= 20  # about 28 sessions in 40 days
    assert local_stack["yahoo"].chart_requests("AAPL")

    # Completed us-prices starts predict-returns for the US market.
    chained = stack.wait_until(
        lambda: [r for r in runs_of("predict-returns") if r.parameters.get("market") == "US"],
        timeout=60,
        what="predict-returns triggered by the completed us-prices run",
    )
    assert len(chained) == 1


def test_failed_run_alerts_once_with_its_link_and_no_secret(local_stack):
    # Sent by the server's automation: no alert flow, no worker on the path.
    webhook = local_stack["webhook"]
    run_id = stack.deployment_run(
        "backup-postgres/backup-postgres", local_stack["env"], 'databases=["no_such_database"]'
    )
    flow_run = stack.wait_for_final_state(run_id, timeout=120)
    assert flow_run.state.is_failed()
    failed_at = time.time()
    alerts = stack.wait_until(
        lambda: webhook.matching(str(run_id)), timeout=30, what="the failure alert"
    )
    assert time.time() - failed_at < 30
    time.sleep(5)  # a second alert for the same run would have arrived by now
    alerts = webhook.matching(str(run_id))
    assert len(alerts) == 1
    (text,) = alerts
    assert "backup-postgres" in text
    assert f"/runs/flow-run/{run_id}" in text
    bodies = b"".join(webhook.raw_bodies)
    assert FRED_KEY.encode() not in bodies
    assert b"alert-token" not in bodies


def test_crashed_desktop_prediction_reruns_on_fargate_cpu(local_stack):
    with get_client(sync_client=True) as client:
        gpu_run = client.create_flow_run_from_deployment(
            deployment_id("predict-returns"),
            parameters={"market": "KR", "batch_size": 128},
        )
        # What the docker worker reports when the desktop's container dies.
        client.set_flow_run_state(gpu_run.id, Crashed(message="container exited"), force=True)
    fallback = stack.wait_until(
        lambda: [r for r in runs_of("predict-returns-cpu") if r.parameters.get("market") == "KR"],
        timeout=60,
        what="the CPU fallback run",
    )
    assert fallback[0].parameters == {
        "market": "KR",
        "model_version": None,
        "batch_size": 128,
        "device": "cpu",
        "replaces": str(gpu_run.id),
    }


def test_the_fallback_cancels_a_desktop_run_still_waiting(local_stack, pg_url, monkeypatch):
    from flows.models import predict_returns

    monkeypatch.setenv("INVESTFLOW_DATABASE_URL", pg_url)

    with get_client(sync_client=True) as client:
        waiting = client.create_flow_run_from_deployment(
            deployment_id("predict-returns"), parameters={"market": "US"}
        )
    # No model is promoted here, so the prediction ends "no model yet": after the cancellation.
    state = predict_returns(market="US", device="cpu", replaces=str(waiting.id), return_state=True)
    assert state.is_completed() and "no model yet" in state.message
    with get_client(sync_client=True) as client:
        original = client.read_flow_run(waiting.id)
    assert original.state.is_cancelled()
    assert "replaced by the CPU fallback" in original.state.message


def test_bad_parameters_fail_in_seconds_naming_the_parameter(local_stack):
    env = local_stack["env"]
    began = time.time()
    # Out of range: the server refuses to create the run at all.
    with pytest.raises(AssertionError, match="chunk_size") as refused:
        stack.deployment_run("us-prices/us-prices", env, "chunk_size=0")
    assert "minimum of 1" in str(refused.value)
    # In the future: the flow refuses it when it starts, before any request, with no retry.
    asked = len(local_stack["yahoo"].requests)
    run_id = stack.deployment_run("us-prices/us-prices", env, "start=2999-01-01")
    flow_run = stack.wait_for_final_state(run_id, timeout=60)
    assert flow_run.state.is_failed() and flow_run.run_count <= 1
    assert "start" in flow_run.state.message and "in the future" in flow_run.state.message
    assert time.time() - began < 60
    assert len(local_stack["yahoo"].requests) == asked  # Yahoo was never asked
