"""Benchmark: failure-to-alert latency of the server's automations on the local stack.

Starts its own Prefect server (temporary home, free port), saves the investflow-alerts block
(the webhook stand-in), applies the automations (`deployments.bootstrap automations`), deploys
backup-postgres and macro, runs process workers for oracle-osaka and fargate with the same
poll interval as `make up`, then, in one run:
- 10 `prefect deployment run backup-postgres` runs that fail (no PostgreSQL configured): the
  Failed state's time -> the webhook stand-in receives the alert (failure_to_alert), and the
  CLI call -> Running (run_to_start);
- 3 `prefect deployment run macro` runs without a FRED key: the run's start -> the alert
  (missing_key_start_to_alert; README, Alerts and automations, quotes it).
Writes bench/results/alerts.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "alerts.json"
RUNS = 10
WORKER_QUERY_SECONDS = "5"  # as `make up` (deployments/local_stack.py) and the systemd units set it


def main() -> None:
    from tasks.backups.redis.restore import free_port

    home = Path(tempfile.mkdtemp(prefix="investflow-bench-"))
    port = free_port()
    os.environ.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_UI_URL=f"http://127.0.0.1:{port}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        INVESTFLOW_DATABASE_URL=f"sqlite:///{home}/market.db",
        INVESTFLOW_BACKUP_DIR=str(home / "backups"),
    )
    # Imported after the environment points Prefect at this bench's own server.
    from prefect.client.orchestration import get_client

    from deployments.local_stack import SERVER_SETTINGS
    from tests.deployments import stack
    from tests.fakes.webhook import FakeWebhook

    # As make up runs it (event ordering, SQLite writes that begin IMMEDIATE): a script run
    # outside pytest has none of tests/conftest.py's environment.
    server = subprocess.Popen(
        [str(stack.BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=os.environ | SERVER_SETTINGS,
        stdout=open(home / "server.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        stack.wait_healthy(os.environ["PREFECT_API_URL"], server)
        with FakeWebhook() as webhook:
            env = stack.stack_env(
                INVESTFLOW_ALERT_WEBHOOK_URL=webhook.url + "/alerts",
                INVESTFLOW_DATABASE_URL=os.environ["INVESTFLOW_DATABASE_URL"],
                INVESTFLOW_FRED_API_KEY="",  # a missing key, whatever .env says
                PREFECT_WORKER_QUERY_SECONDS=WORKER_QUERY_SECONDS,
            )
            python = str(stack.BIN / "python")
            for step in ("migrate", "blocks", "automations"):
                stack.run([python, "-m", "deployments.bootstrap", "--local", step], env)
            stack.run([python, "-m", "deployments.bootstrap", "--local", "pools"], env)
            stack.run(
                [str(stack.BIN / "prefect"), "--no-prompt", "deploy", "-n", "backup-postgres",
                 "-n", "macro"], env, timeout=600,
            )  # fmt: skip
            to_alert, to_start, key_to_alert = [], [], []
            with (
                stack.worker("oracle-osaka", env, home),
                stack.worker("fargate", env, home),
            ):
                for i in range(RUNS):
                    asked = time.time()
                    run_id = stack.deployment_run(
                        "backup-postgres/backup-postgres", env, 'databases=["no_such_database"]'
                    )
                    flow_run = stack.wait_for_final_state(run_id, timeout=120)
                    with get_client(sync_client=True) as client:
                        states = client.read_flow_run_states(run_id)
                    running = next(s for s in states if s.type.value == "RUNNING")
                    failed = next(s for s in states if s.type.value == "FAILED")
                    alert = stack.wait_until(
                        lambda rid=str(run_id): [
                            r for r in webhook.requests if rid.encode() in r.body
                        ],
                        timeout=60,
                        what=f"alert {i + 1}",
                    )[0]
                    to_start.append(running.timestamp.timestamp() - asked)
                    to_alert.append(alert.at - failed.timestamp.timestamp())
                    print(
                        f"run {i + 1:2d}: run->start {to_start[-1]:5.2f} s, "
                        f"failed->alert {to_alert[-1]:5.2f} s ({flow_run.state_name})"
                    )
                for i in range(3):
                    run_id = stack.deployment_run("macro/macro", env, 'series=["DGS10"]')
                    flow_run = stack.wait_for_final_state(run_id, timeout=120)
                    alert = stack.wait_until(
                        lambda rid=str(run_id): [
                            r for r in webhook.requests if rid.encode() in r.body
                        ],
                        timeout=60,
                        what=f"missing-key alert {i + 1}",
                    )[0]
                    key_to_alert.append(alert.at - flow_run.start_time.timestamp())
                    print(f"missing key {i + 1}: start->alert {key_to_alert[-1]:5.2f} s")
    finally:
        server.terminate()
        server.wait(timeout=30)

    figures = {
        "failure_to_alert_p50_s": round(statistics.median(to_alert), 2),
        "run_to_start_p50_s": round(statistics.median(to_start), 2),
        "failure_to_alert_max_s": round(max(to_alert), 2),
        "missing_key_start_to_alert_max_s": round(max(key_to_alert), 2),
        "run_to_start_max_s": round(max(to_start), 2),
        "runs": RUNS,
        "worker_query_seconds": int(WORKER_QUERY_SECONDS),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key:>24}: {value}")


if __name__ == "__main__":
    main()
