"""`make status`: is the server up, which pools have a live worker, each deployment's last run,
and how fresh the market store is. Times read in the operator's clock (Asia/Seoul).

Against the local stack by default; against any server when PREFECT_API_URL is exported.
"""

from __future__ import annotations

import datetime as dt
import os
import sys

from tasks import clock
from tasks.clock import operator_tz, shown_with_age


def server_lines(client, now: dt.datetime) -> list[str]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    lines = ["Work pools"]
    for pool in sorted(client.read_work_pools(), key=lambda p: p.name):
        online = [
            w.name
            for w in client.read_workers_for_work_pool(pool.name)
            if str(w.status).upper().endswith("ONLINE")
        ]
        said = f"{len(online)} worker(s) online" if online else "NO LIVE WORKER"
        lines.append(f"  {pool.name:<18} {said}")
    lines.append(f"Last run of each deployment (times in {operator_tz().key})")
    for deployment in sorted(client.read_deployments(), key=lambda d: d.name):
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=_started(),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        if runs:
            run = runs[0]
            said = f"{run.state.name:<12} {shown_with_age(run.start_time, now)}"
        else:
            said = "never ran"
        paused = "  [paused]" if deployment.paused else ""
        lines.append(f"  {deployment.name:<22} {said}{paused}")
    return lines


def _started():
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    return FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False))


def store_lines(now: dt.datetime) -> list[str]:
    from tasks.health.freshness import market_freshness
    from tasks.store.engine import engine_from_settings

    try:
        markets = market_freshness(engine_from_settings(), now)
    except Exception as exc:  # noqa: BLE001 - reported in a line; the URL is never printed
        return [f"Data freshness: the market store cannot be read ({type(exc).__name__})"]
    lines = ["Data freshness (sessions in each market's own calendar)"]
    for f in markets:
        if f.newest is None:
            lines.append(f"  {f.dataset}: {f.verdict}")
            continue
        lag = f"; {len(f.lagging)} of {f.symbols} symbols lag" if f.lagging else ""
        lines.append(
            f"  {f.dataset}: {f.verdict} (newest {f.newest}, last closed {f.expected};"
            f" {f.symbols} symbols{lag})"
        )
    return lines


def main() -> int:
    if "PREFECT_API_URL" not in os.environ:
        from deployments.local_stack import stack_env

        os.environ.update(stack_env())
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = os.environ["PREFECT_API_URL"]
    now = clock.now()
    ok = True
    # Prefect read its settings when stack_env's imports loaded it, before the URL was set:
    # without it the client would start a server of its own on the stack's database and
    # report that one as up (with the workers the database last saw as online).
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        # It returns the error instead of raising it.
        healthy = client.api_healthcheck() is None
        print(f"Prefect server  {api}: {'up' if healthy else 'NOT ANSWERING'}")
        if healthy:
            print("\n".join(server_lines(client, now)))
        else:
            ok = False
            print("  start it with `make up` (or check PREFECT_API_URL)")
    print("\n".join(store_lines(now)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
