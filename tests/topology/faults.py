"""What the fault tests and bench/faults.py both read: runs, events, logs, rows, alerts."""

from __future__ import annotations

import json
import time
import urllib.request
from uuid import UUID

import pandas as pd
import sqlalchemy as sa

from tests.deployments import stack


def flow_run(run_id: UUID):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def runs_of(deployment: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment]))
        )


def events(api_url: str, name: str, resource_id: str) -> list[dict]:
    """The server's stored events of one name for one resource, oldest first."""
    body = {
        "filter": {
            "event": {"name": [name]},
            "resource": {"id": [resource_id]},
            "occurred": {"since": "2000-01-01T00:00:00Z"},
        },
        "limit": 50,
    }
    request = urllib.request.Request(
        f"{api_url}/events/filter",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        found = json.load(resp)["events"]
    return sorted(found, key=lambda e: e["occurred"])


def logs_of(run_id: UUID) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return "\n".join(log.message for log in logs)


def wait_state(run_id: UUID, names: set[str], timeout: float, interval: float = 0.5):
    """Poll until the run's state name is one of names; return the run."""

    def reached():
        found = flow_run(run_id)
        return found if found.state_name in names else None

    return stack.wait_until(
        reached, timeout, f"run {run_id} to be one of {sorted(names)}", interval
    )


def table(engine, name: str, order: list[str]) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text(f"SELECT * FROM {name}"), conn)  # noqa: S608 - our names
    return frame.sort_values(order).reset_index(drop=True)


def truncate(engine, *names: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(names)}"))


def pool_alerts(webhook, pool: str) -> tuple[list[str], list[str]]:
    """The "no live worker" and "back" messages received for pool."""
    down = webhook.matching(f"{pool} has no live worker")
    back = webhook.matching(f"{pool} has a live worker again")
    return down, back


def wait_heartbeat(api_url: str, run_id: UUID, timeout: float = 120) -> float:
    """Wait for the run's first heartbeat event on the server; return when it was seen."""
    stack.wait_until(
        lambda: events(api_url, "prefect.flow-run.heartbeat", f"prefect.flow-run.{run_id}"),
        timeout,
        f"a heartbeat of run {run_id}",
        interval=0.3,
    )
    return time.monotonic()


def writers(engine, table_name: str) -> list[str]:
    """The flow runs that wrote a batch into table_name (ingest_batches), in order."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT flow_run_id FROM ingest_batches WHERE table_name = :t ORDER BY id"),
            {"t": table_name},
        )
        return [r[0] for r in rows]


def ensure_promoted_model(platform, tiny: list[str]) -> None:
    """Train a tiny model through the desktop's deployment unless one is promoted already."""
    with platform["engine"].connect() as conn:
        promoted = conn.exec_driver_sql(
            "SELECT count(*) FROM model_versions WHERE promoted"
        ).scalar()
    if not promoted:
        run_id = stack.deployment_run("train-model/train-model", platform["env"], *tiny, "epochs=4")
        assert stack.wait_for_final_state(run_id, timeout=300).state.is_completed()
