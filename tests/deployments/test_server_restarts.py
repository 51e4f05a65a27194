"""The Prefect server killed and started again, as systemd's unit does, on PostgreSQL and SQLite.

One server per backend (deployments/server: PostgreSQL with asyncpg, as in production; and the
default SQLite), us-prices and train-model deployed, the alert automations applied with the
webhook stand-in, a fargate worker. Each test kills the server (SIGKILL: a crash; SIGTERM:
a stop), waits the unit's RestartSec, and starts it again on the same database:
- a us-prices run in flight (Yahoo slow to answer) finishes and reports Completed, and a run
  its schedule made due while the server was down runs once, after the restart;
- a run that went Late with the late-alert window open alerts exactly once.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.states import Scheduled

from tests.conftest import create_database, drop_database
from tests.deployments import stack
from tests.fakes.webhook import FakeWebhook
from tests.fakes.yahoo import FakeYahoo

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

LATE_AFTER_S = 10
PARAMS = {"symbols": ["AAPL", "MSFT"], "start": "2024-01-02", "as_of": "2024-06-14T22:00:00Z"}
UNIT = stack.ROOT / "deployments/server/prefect-server.service"


def restart_sec() -> float:
    """RestartSec of the production unit: how long systemd waits before starting it again."""
    return float(re.search(r"^RestartSec=(\d+)", UNIT.read_text(), re.M).group(1))


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def restarts(request, tmp_path_factory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.limits import set_limit
    from tasks.store.engine import migrate

    home = tmp_path_factory.mktemp(f"restart-{request.param}")
    db_url = None
    if request.param == "postgresql":
        db_url = create_database(request.getfixturevalue("pg_admin_url"), "investflow_restarts")
        server_db = db_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    else:
        server_db = f"sqlite+aiosqlite:///{home}/prefect.db"
    # The scheduler every 5 s (Prefect: 60 s): the due run exists before the kill.
    scheduler_every_5_s = {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"}
    server = stack.ServerProcess(home, server_db, **scheduler_every_5_s)
    store = f"sqlite:///{home}/market.db"
    migrate(store)
    try:
        with FakeYahoo() as yahoo, FakeWebhook() as webhook:
            server.start()
            env = stack.stack_env(
                PREFECT_API_URL=server.api_url,
                PREFECT_HOME=str(home),
                INVESTFLOW_DATABASE_URL=store,
                INVESTFLOW_HTTP_TIMEOUT_S="90",
                INVESTFLOW_ALERT_LATE_AFTER_S=str(LATE_AFTER_S),
                **yahoo.env(),
            )
            with temporary_settings({PREFECT_API_URL: server.api_url}):
                set_limit("yahoo", 1, 200.0)
                stack.run([str(stack.BIN / "python"), "-m", "deployments.bootstrap", "--local",
                           "pools"], env)  # fmt: skip
                stack.apply_alerts(env, webhook.url + "/api/webhooks/1/alert-token")
                stack.run([str(stack.BIN / "prefect"), "--no-prompt", "deploy", "-n", "us-prices",
                           "-n", "train-model"], env, timeout=600)  # fmt: skip
                with stack.worker("fargate", env, home):
                    yield {"server": server, "env": env, "yahoo": yahoo, "webhook": webhook,
                           "backend": request.param, "home": home}  # fmt: skip
    except BaseException:
        print(server.log()[-4000:])
        for log in home.glob("worker-*.log"):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        server.stop()
        if db_url:
            drop_database(db_url)


def deployment_id(name: str):
    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(f"{name}/{name}").id


def read_run(run_id):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def restart(server: stack.ServerProcess, sig: int, down_s: float | None = None) -> dict:
    """Kill the server with sig, stay down down_s (the unit's RestartSec), start it again."""
    killed = time.monotonic()
    server.kill(sig)
    time.sleep(restart_sec() if down_s is None else down_s)
    server.start()
    return {"down_s": time.monotonic() - killed}


def test_a_run_in_flight_and_a_schedule_due_meanwhile_survive_a_crash(restarts):
    server, yahoo, webhook = restarts["server"], restarts["yahoo"], restarts["webhook"]
    us_prices = deployment_id("us-prices")
    # Yahoo takes its time (under the run's 90 s HTTP timeout): the run is mid-fetch throughout.
    yahoo.slow["AAPL"] = 80
    in_flight = stack.deployment_run(
        "us-prices/us-prices", restarts["env"],
        *(f"{k}={v}" if isinstance(v, str) else f"{k}={v!r}".replace("'", '"')
          for k, v in PARAMS.items()),
    )  # fmt: skip
    stack.wait_until(lambda: yahoo.chart_requests("AAPL"), 180, "the run to ask Yahoo for AAPL")
    asked = time.monotonic()
    assert read_run(in_flight).state.is_running()

    # A schedule whose next fire time falls while the server is down; the scheduler makes its
    # run before (this server's scheduler loop is 5 s).
    due_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    with get_client(sync_client=True) as client:
        client.create_deployment_schedules(
            us_prices,
            [(IntervalSchedule(interval=dt.timedelta(hours=1), anchor_date=due_at), True)],
            parameters=PARAMS,
        )

    def scheduled_run():
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs()
        # prefect.yaml's own cron has runs days ahead too: ours is the one at due_at.
        due = [
            r for r in runs
            if r.deployment_id == us_prices
            and abs((r.expected_start_time - due_at).total_seconds()) < 1
        ]  # fmt: skip
        return due[0] if due else None

    due = stack.wait_until(scheduled_run, 25, "the scheduler to create the due run", 1)
    # Killed 12 s before the due time: a worker takes a run up to 10 s early (Prefect's
    # prefetch), so the run is still only Scheduled when the server dies.
    time.sleep(max(0.0, (due_at - dt.datetime.now(dt.UTC)).total_seconds() - 12))
    assert time.monotonic() - asked < 60, "too slow to test this: the fetch would be over"
    # SIGKILL: no shutdown at all, as a crash or an OOM kill; down across the due time. (A
    # server down longer than the zombie window, 90 s, less a heartbeat, crashes the runs in
    # flight when it returns, and they are resubmitted: README, Faults.)
    restart(server, signal.SIGKILL, max(restart_sec(), 15))
    assert dt.datetime.now(dt.UTC) > due_at

    done = stack.wait_for_final_state(in_flight, timeout=240)
    assert done.state.is_completed(), done.state.message
    assert done.run_count == 1  # finished where it was, not run again
    ran = stack.wait_for_final_state(due.id, timeout=240)
    assert ran.state.is_completed(), ran.state.message
    assert ran.run_count == 1
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs() if r.deployment_id == us_prices]
    # The in-flight run, the due one, and the schedule's next (still in the future): no extra.
    assert sorted(r.state.name for r in runs if r.state.is_final()) == ["Completed", "Completed"]
    assert not webhook.matching(str(in_flight)) and not webhook.matching(str(due.id))


def test_a_late_alert_window_open_across_a_stop_alerts_once(restarts):
    server, webhook = restarts["server"], restarts["webhook"]
    with get_client(sync_client=True) as client:
        # gpu-desktop has no worker here: the run goes Late and stays Late.
        run = client.create_flow_run_from_deployment(
            deployment_id("train-model"),
            state=Scheduled(scheduled_time=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)),
        )
    stack.wait_until(lambda: read_run(run.id).state.name == "Late", 120, "the run to go Late", 1)
    # SIGTERM (systemctl stop/restart) while the 10 s window is open; down for RestartSec.
    restart(server, signal.SIGTERM)
    (text,) = stack.wait_until(
        lambda: webhook.matching(str(run.id)), 180, "the late-run alert after the restart", 1
    )
    assert "train-model/train-model" in text and "late" in text
    time.sleep(LATE_AFTER_S + 10)
    assert len(webhook.matching(str(run.id))) == 1  # heard once, not lost, not doubled
