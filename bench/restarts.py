"""Benchmark: recovery from restarts of the Prefect server and of the data node's PostgreSQL.

Its own Prefect server (SQLite, temporary home, free port; restarted as systemd's unit does),
us-prices and train-model deployed, the alert automations applied against the webhook
stand-in, a fargate worker; and its own PostgreSQL cluster as the data node. Repeated REPS
times each:
- server: a us-prices run mid-fetch (Yahoo slow) and a train-model run already Late (its
  late-alert window open); the server is killed (SIGKILL and SIGTERM alternately), stays down
  the unit's RestartSec, and is started again. Measured: kill -> server healthy, kill -> the
  in-flight run Completed, kill -> the late alert; runs lost (not Completed), runs run twice
  (run_count > 1), late alerts received per late run (wanted 1), other messages (noise).
- data node: a price chunk's write held by a lock, then `pg_ctl restart -m fast|immediate`.
  Measured: the restart's own time, restart -> the run Completed, the write's tries, and the
  store against a clean run's (tables differing, rows more or fewer).
Writes bench/results/restarts.json.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "restarts.json"
REPS = int(os.environ.get("BENCH_REPS", "5"))
LATE_AFTER_S = 10
FRI = "2024-06-14T22:00:00Z"


def summary(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {}
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "n": len(values)}  # fmt: skip


def server_restarts(server, env, yahoo, webhook) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from tests.deployments import stack
    from tests.deployments.test_server_restarts import restart_sec

    with get_client(sync_client=True) as client:
        train = client.read_deployment_by_name("train-model/train-model").id
    reps = []
    for rep in range(REPS):
        sig = signal.SIGKILL if rep % 2 == 0 else signal.SIGTERM
        symbol = f"R{rep}X"
        yahoo.slow[symbol] = 45
        in_flight = stack.deployment_run(
            "us-prices/us-prices", env, f'symbols=["{symbol}"]', "start=2024-01-02",
            f"as_of={FRI}",
        )  # fmt: skip
        stack.wait_until(lambda s=symbol: yahoo.chart_requests(s), 180, "the fetch", 0.5)
        # The late run only now, so its alert window (LATE_AFTER_S) is open at the kill.
        with get_client(sync_client=True) as client:
            late = client.create_flow_run_from_deployment(
                train,
                state=Scheduled(scheduled_time=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)),
            )
        stack.wait_until(lambda lid=late.id: stack_read(lid).state.name == "Late", 120, "Late", 0.2)
        before = len(webhook.texts())
        alerted_before_kill = bool(webhook.matching(str(late.id)))
        killed = time.monotonic()
        server.kill(sig)
        time.sleep(restart_sec())
        server.start()
        healthy = time.monotonic()
        done = stack.wait_for_final_state(in_flight, timeout=300)
        completed = time.monotonic()
        alert = None
        try:
            stack.wait_until(lambda lid=late.id: webhook.matching(str(lid)), 180, "alert", 0.5)
            alert = time.monotonic()
        except AssertionError:
            pass
        time.sleep(LATE_AFTER_S + 10)
        new = webhook.texts()[before:]
        late_alerts = webhook.matching(str(late.id))
        reps.append({
            "signal": signal.Signals(sig).name,
            "kill_to_healthy_s": round(healthy - killed, 1),
            "kill_to_run_completed_s": round(completed - killed, 1),
            "kill_to_late_alert_s": round(alert - killed, 1) if alert else None,
            "in_flight_state": done.state.name,
            "in_flight_run_count": done.run_count,
            "late_alert_before_kill": alerted_before_kill,
            "late_alerts": len(late_alerts),
            "other_messages": len([t for t in new if str(late.id) not in t]),
        })  # fmt: skip
        with get_client(sync_client=True) as client:  # leave no Late run for the next rep
            client.delete_flow_run(late.id)
        print(f"server rep {rep}: {reps[-1]}", flush=True)
    return {
        "reps": reps,
        "kill_to_healthy_s": summary([r["kill_to_healthy_s"] for r in reps]),
        "kill_to_run_completed_s": summary([r["kill_to_run_completed_s"] for r in reps]),
        "kill_to_late_alert_s": summary([r["kill_to_late_alert_s"] for r in reps]),
        "runs_lost": sum(r["in_flight_state"] != "Completed" for r in reps),
        "runs_duplicated": sum(r["in_flight_run_count"] > 1 for r in reps),
        "late_alerts_wanted": len(reps),
        "late_alerts_received": sum(r["late_alerts"] for r in reps),
        "noise_messages": sum(r["other_messages"] for r in reps),
    }


def stack_read(run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def data_node_restarts() -> dict:
    from flows.prices import ingest_us_prices
    from tests import datanode
    from tests.deployments.stack import wait_until
    from tests.flows import test_data_node_restarts as t

    run = ingest_us_prices.with_options(retries=0)
    kwargs = dict(symbols=t.SYMBOLS, start=t.START, as_of=t.FRI, backoff_s=0.01, return_state=True)
    out = {}
    with datanode.pg_cluster() as cluster:
        clean = t.new_store(cluster)
        os.environ["INVESTFLOW_DATABASE_URL"] = clean
        assert run(**kwargs).is_completed()
        expected = t.store_tables(clean)
        for mode in ("fast", "immediate"):
            reps = []
            for rep in range(REPS):
                store = t.new_store(cluster)
                os.environ["INVESTFLOW_DATABASE_URL"] = store
                holder = t.hold_lock(store, "daily_prices", "EXCLUSIVE")
                thread, box = t.in_thread(run, **kwargs)
                wait_until(lambda s=store: t.waiting_on_lock(s), 120, "the write", 0.2)
                began = time.monotonic()
                restart_s = cluster.restart(mode)
                thread.join(timeout=300)
                recovered = time.monotonic() - began
                holder.close()
                state = box["state"]
                (write,) = t.task_runs_of(state.state_details.flow_run_id, "write-prices")
                got = t.store_tables(store)
                reps.append({
                    "restart_s": round(restart_s, 1),
                    "restart_to_run_completed_s": round(recovered, 1),
                    "state": state.name,
                    "write_tries": write.run_count,
                    "tables_differing": sorted(k for k in expected if got[k] != expected[k]),
                    "rows_vs_clean": sum(len(got[k]) - len(expected[k]) for k in expected),
                })  # fmt: skip
                print(f"data node {mode} rep {rep}: {reps[-1]}", flush=True)
            out[mode] = {
                "reps": reps,
                "restart_s": summary([r["restart_s"] for r in reps]),
                "restart_to_run_completed_s": summary(
                    [r["restart_to_run_completed_s"] for r in reps]
                ),
                "runs_lost": sum(r["state"] != "Completed" for r in reps),
                "stores_not_equal_to_clean": sum(bool(r["tables_differing"]) for r in reps),
                "duplicated_rows": sum(max(r["rows_vs_clean"], 0) for r in reps),
            }
    return out


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="investflow-bench-restarts-"))
    os.environ.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        INVESTFLOW_DATABASE_URL=f"sqlite:///{home}/market.db",
        XDG_CACHE_HOME=str(home / "cache"),
    )
    from deployments.local_stack import SERVER_SETTINGS
    from tests.deployments import stack

    # As make up runs it (event ordering, SQLite writes that begin IMMEDIATE).
    server = stack.ServerProcess(home, f"sqlite+aiosqlite:///{home}/prefect.db", **SERVER_SETTINGS)
    os.environ.update(PREFECT_API_URL=server.api_url, PREFECT_UI_URL=server.api_url[:-4])
    server.env.update(PREFECT_API_URL=server.api_url)
    # Imported after the environment points Prefect at this bench's own server.
    from tasks.limits import set_limit
    from tasks.store.engine import migrate
    from tests.fakes.webhook import FakeWebhook
    from tests.fakes.yahoo import FakeYahoo

    migrate(os.environ["INVESTFLOW_DATABASE_URL"])
    results: dict = {"reps": REPS, "server": "SQLite (the default), restarted after RestartSec"}
    try:
        server.start()
        set_limit("yahoo", 1, 200.0)
        with FakeYahoo() as yahoo, FakeWebhook() as webhook:
            for name, value in yahoo.env().items():
                os.environ[name] = value
            env = stack.stack_env(
                INVESTFLOW_HTTP_TIMEOUT_S="90", INVESTFLOW_ALERT_LATE_AFTER_S=str(LATE_AFTER_S)
            )
            python, prefect = str(stack.BIN / "python"), str(stack.BIN / "prefect")
            stack.run([python, "-m", "deployments.bootstrap", "--local", "pools"], env)
            stack.apply_alerts(env, webhook.url + "/api/webhooks/1/alert-token")
            stack.run([prefect, "--no-prompt", "deploy", "-n", "us-prices", "-n", "train-model"],
                      env, timeout=600)  # fmt: skip
            with stack.worker("fargate", env, home):
                results["server_restart"] = server_restarts(server, env, yahoo, webhook)
            results["data_node_restart"] = data_node_restarts()
    finally:
        server.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "reps"}, indent=2)[:4000])


if __name__ == "__main__":
    main()
