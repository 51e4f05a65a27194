"""The production shape: a Prefect server on PostgreSQL with basic auth, process workers using it.

One server per module (started here, beside the session's SQLite one), deployed from
prefect.yaml with the alert automations applied; workers for oracle-osaka and
oracle-chuncheon run the real flows against it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import sqlalchemy as sa

from tests.conftest import create_database, drop_database
from tests.deployments import stack
from tests.fakes.webhook import FakeWebhook

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AUTH = "admin:prod-test-Secret_42"


@pytest.fixture(scope="module")
def server(pg_admin_url, tmp_path_factory):
    """`prefect server start` on a fresh PostgreSQL database, guarded by an auth string."""
    db_url = create_database(pg_admin_url, prefix="investflow_prefect")
    asyncpg_url = db_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    home = tmp_path_factory.mktemp("prod-prefect")
    try:
        with stack.auth_server(home, asyncpg_url, AUTH) as api_url:
            yield {"api_url": api_url, "db_url": db_url, "asyncpg_url": asyncpg_url, "home": home}
    finally:
        drop_database(db_url)


def wait_for_server(api_url: str, pool: str, auth: str) -> str:
    """What deployments/services/wait_for_server.py logs for one probe (--timeout 1)."""
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_API_AUTH_STRING": auth}
    proc = subprocess.run(
        [sys.executable, str(stack.ROOT / "deployments/services/wait_for_server.py"),
         "--pool", pool, "--timeout", "0.1", "--interval", "0.1"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return proc.stderr


def api_get(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_client_without_the_auth_string_is_refused(server):
    api = server["api_url"]
    # Probes stay open (systemd and load balancers call them), nothing else does.
    assert api_get(f"{api}/health") == 200
    assert api_get(f"{api}/work_pools/oracle-osaka") == 401
    assert api_get(f"{api}/admin/version", {"Authorization": "Basic d3Jvbmc6d3Jvbmc="}) == 401
    # The worker units' start check says which of the two it is, in words.
    assert "refused our credentials (401)" in wait_for_server(api, "oracle-osaka", "")
    assert "has no work pool 'oracle-osaka'" in wait_for_server(api, "oracle-osaka", AUTH)
    env = stack.stack_env(PREFECT_API_URL=api, PREFECT_HOME=str(server["home"]))
    env.pop("PREFECT_API_AUTH_STRING", None)
    proc = subprocess.run(
        [str(stack.BIN / "prefect"), "work-pool", "ls"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "401" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def deployed(server, pg_admin_url, tmp_path_factory):
    """prefect.yaml deployed with the auth string; osaka and chuncheon workers serving it."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from tasks.store.engine import migrate

    store_url = create_database(pg_admin_url)
    migrate(store_url)
    work = tmp_path_factory.mktemp("prod-stack")
    webhook = FakeWebhook().__enter__()
    env = stack.stack_env(
        PREFECT_API_URL=server["api_url"],
        PREFECT_API_AUTH_STRING=AUTH,
        PREFECT_HOME=str(server["home"]),
        INVESTFLOW_DATABASE_URL=store_url,
        INVESTFLOW_BACKUP_DIR=str(work / "backups"),
        # As in the osaka env file: the market store and the Prefect server's own database.
        INVESTFLOW_BACKUP_DATABASE_URLS=f"{store_url},{server['asyncpg_url']}",
        INVESTFLOW_ALERT_WEBHOOK_URL=f"{webhook.url}/hook",
    )
    try:
        stack.bootstrap_and_deploy(env)
        with (
            temporary_settings({PREFECT_API_URL: server["api_url"], PREFECT_API_AUTH_STRING: AUTH}),
            stack.worker("oracle-osaka", env, work),
            stack.worker("oracle-chuncheon", env, work),
        ):
            stack.apply_alerts(env, env["INVESTFLOW_ALERT_WEBHOOK_URL"])
            yield {"env": env, "store_url": store_url, "work": work, "webhook": webhook}
    except BaseException:
        for log in work.glob("worker-*.log"):
            print(f"--- {log.name}\n{log.read_text()[-3000:]}")
        raise
    finally:
        webhook.__exit__(None, None, None)
        drop_database(store_url)


def test_a_deployment_runs_end_to_end_and_backs_up_the_prefect_database(server, deployed):
    from prefect.client.orchestration import get_client

    wide = {**deployed["env"], "COLUMNS": "250"}  # rich would cut the names to fit
    pools = stack.run([str(stack.BIN / "prefect"), "work-pool", "ls"], wide)
    assert "oracle-osaka" in pools and "oracle-chuncheon" in pools
    assert "is reachable" in wait_for_server(server["api_url"], "oracle-osaka", AUTH)

    run_id = stack.deployment_run("backup-postgres/backup-postgres", deployed["env"])
    flow_run = stack.wait_for_final_state(run_id, timeout=180)
    assert flow_run.state.is_completed(), flow_run.state.message

    # It ran on the osaka worker, authenticated, against this PostgreSQL-backed server; the
    # README's health check shows the pool READY (a worker online).
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run_id).work_pool_name == "oracle-osaka"
        workers = client.read_workers_for_work_pool("oracle-osaka")
    assert any(w.status.value == "ONLINE" for w in workers)
    inspect = stack.run(
        [str(stack.BIN / "prefect"), "work-pool", "inspect", "oracle-osaka", "--output", "json"],
        wide,
    )
    assert json.loads(inspect)["status"] == "READY"

    engine = sa.create_engine(
        deployed["store_url"].replace("postgresql://", "postgresql+psycopg://")
    )
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT target, status, path, detail FROM backup_catalog WHERE flow_run_id = :r"
            ),
            {"r": str(run_id)},
        ).all()
    engine.dispose()
    prefect_db = server["db_url"].rsplit("/", 1)[1]
    dumped = {r.target.rsplit("/", 1)[1]: r for r in rows if r.status == "ok"}
    assert set(dumped) == {deployed["store_url"].rsplit("/", 1)[1], prefect_db}
    # The Prefect database's dump holds the server's own state: the deployments just made.
    detail = dumped[prefect_db].detail
    detail = json.loads(detail) if isinstance(detail, str) else detail
    assert detail["row_counts"]["public.deployment"] >= 10
    assert os.path.getsize(dumped[prefect_db].path) > 0


def test_a_failed_run_alerts_once_on_the_postgresql_server(deployed):
    webhook = deployed["webhook"]
    run_id = stack.deployment_run(
        "backup-postgres/backup-postgres", deployed["env"], 'databases=["no_such_database"]'
    )
    flow_run = stack.wait_for_final_state(run_id, timeout=180)
    assert flow_run.state.is_failed()

    alerts = stack.wait_until(
        lambda: webhook.matching(flow_run.name), timeout=60, what="the failure alert"
    )
    assert "backup-postgres" in alerts[0] and "Failed" in alerts[0]
    # Sent once, by this server's automation (no alert flow, no worker on its path).
    time.sleep(5)
    assert len(webhook.matching(flow_run.name)) == 1
