"""Each Oracle node's memory budget, enforced by the kernel rather than assumed.

As in production (deployments/services/worker-process.service.in), each real process worker
runs in a memory cgroup capped at its unit's MemoryMax with swap forbidden, and the runs it
starts are its children there. Each run also gets a cgroup of its own below the worker's,
capped at the job's budget (~200 MB on oracle-osaka, ~400 MB on the edge nodes), where its
peak is read: backup-postgres and verify-backups on 1,000,000 price rows, backup-redis on
100,000 keys, the A1 launch against the OCI stand-in, the health page on the same store. A run
given too small a cap is killed by the kernel, the worker lives on, and the run's Crashed state
reaches the alert channel through the server's automations.

Needs root and the cgroup v1 memory controller: under CI=true it fails without them,
elsewhere it is skipped with the command that runs it.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client

from tests.conftest import IN_CI
from tests.deployments import budgets, cgroup, stack
from tests.deployments.cgroup import MB
from tests.fakes.webhook import FakeWebhook

HOW = (
    "run it as root on Linux with the cgroup v1 memory controller at /sys/fs/cgroup/memory: "
    "sudo .venv/bin/pytest tests/deployments/test_node_budgets.py"
)
# Far below what a flow run needs to start: the kernel kills it within its first second.
TOO_SMALL = 64 * MB


def test_the_caps_are_the_route_tables_own(monkeypatch, tmp_path):
    # What the test holds each node to: MemoryMax from deployments/units.py, the job's budget
    # from deployments/pools.py.
    assert cgroup.size_bytes("350M") == 350 * MB and cgroup.size_bytes("1G") == 1024 * MB
    assert {p: budgets.job_budget_mb(p) for p in budgets.ORACLE_POOLS} == {
        "oracle-osaka": 200,
        "oracle-chuncheon": 400,
        "oracle-mumbai": 400,
    }
    assert [budgets.unit_cap(p) // MB for p in budgets.ORACLE_POOLS] == [350, 400, 400]
    # And where cgroups cannot be made, the reason says so (the skip message adds how).
    monkeypatch.setattr(cgroup, "MEMORY", tmp_path / "memory")
    monkeypatch.setattr(cgroup.os, "geteuid", lambda: 0)
    assert "no cgroup v1 memory controller" in cgroup.unavailable()
    monkeypatch.setattr(cgroup.os, "geteuid", lambda: 1000)
    assert "need root" in cgroup.unavailable()


def require_cgroups() -> None:
    reason = cgroup.unavailable()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{reason}; the node budget tests need them under CI ({HOW})", pytrace=False)
    pytest.skip(f"{reason}: {HOW}")


@pytest.fixture(scope="module")
def oracle(pg_admin_url, tmp_path_factory):
    """The Oracle deployments on the session's server, each pool's worker capped, alerts on."""
    require_cgroups()
    work = tmp_path_factory.mktemp("budgets")
    with FakeWebhook() as webhook:
        url = webhook.url + "/api/webhooks/1/alert-token"
        try:
            # The edge workers only while their test runs: fewer workers polling the server.
            with budgets.oracle_stack(pg_admin_url, work, url, pools=["oracle-osaka"]) as made:
                stack.apply_alerts(made.env, url)
                yield made, webhook
        finally:
            _clean_server()


def _clean_server() -> None:
    """Later modules share the server: take the automations and deployments away."""
    with get_client(sync_client=True) as client:
        if any(a.name.startswith("investflow") for a in client.read_automations()):
            stack.remove_alerts()
        for deployment in client.read_deployments():
            client.delete_deployment(deployment.id)


def assert_within_budget(job: budgets.Job, result: budgets.RunResult) -> None:
    state = result.flow_run.state
    assert state.is_completed(), f"{job.name}: {state.name}: {state.message}"
    budget = budgets.job_budget_mb(job.pool) * MB
    # The kernel held the run to its budget (no swap either) and never had to kill in it.
    assert result.group.limit_bytes == budget
    assert result.group.swap_limit_bytes in (None, budget)
    assert result.metered.oom_kills == 0
    # The flow run's own process was read (it ran in this worker's group), and the job's
    # processes together peaked under the budget.
    assert result.metered.flow_process_peak_mb > 50, result.line(job)
    assert result.metered.job_peak_mb * MB < budget, result.line(job)


def assert_unit_held(worker: budgets.CappedWorker) -> None:
    """The worker lives, in a group at its unit's MemoryMax with no swap, nothing killed."""
    cap = budgets.unit_cap(worker.pool)
    assert worker.group.limit_bytes == cap and worker.group.swap_limit_bytes in (None, cap)
    assert worker.alive()
    assert worker.group.oom_kills == 0
    print(
        f"{worker.pool} worker: own peak {worker.peak_mb():.0f} MB; the unit's group (worker "
        f"and runs) peaked at {worker.group.peak_bytes / MB:.0f} MB of {cap / MB:.0f} MB"
    )


def catalog(store: str, kind: str) -> list[tuple[str, dict]]:
    engine = sa.create_engine(store.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT status, detail FROM backup_catalog WHERE kind = :k ORDER BY id"),
            {"k": kind},
        ).all()
    engine.dispose()
    return [
        (r.status, r.detail if isinstance(r.detail, dict) else json.loads(r.detail)) for r in rows
    ]


@pytest.mark.integration
@pytest.mark.slow
def test_the_data_node_jobs_stay_under_200_mb_inside_the_workers_350m(oracle):
    made, _ = oracle
    worker = made.workers["oracle-osaka"]
    assert budgets.job_budget_mb("oracle-osaka") == 200
    assert budgets.unit_cap("oracle-osaka") == 350 * MB

    for job in budgets.osaka_jobs():  # one at a time, as the unit's --limit 1 runs them
        result = budgets.metered_run(job, worker)
        print(result.line(job))
        assert_within_budget(job, result)

    # Those were the real sizes: a dump of the million rows (a row per tier it landed in), the
    # keys, and restores of both.
    dumps = catalog(made.store, "postgres")
    assert dumps and {status for status, _ in dumps} == {"ok"}
    assert {d["row_counts"]["public.daily_prices"] for _, d in dumps} == {budgets.PRICE_ROWS}
    assert {d["keys"] for _, d in catalog(made.store, "redis")} == {budgets.REDIS_KEYS}
    assert {status for status, _ in catalog(made.store, "verify")} == {"verified"}
    assert_unit_held(worker)


@pytest.mark.integration
@pytest.mark.slow
def test_the_edge_jobs_stay_under_400_mb_inside_the_workers_400m(oracle):
    made, _ = oracle
    assert budgets.job_budget_mb("oracle-chuncheon") == budgets.job_budget_mb("oracle-mumbai")
    assert budgets.job_budget_mb("oracle-mumbai") == 400
    jobs = budgets.edge_jobs(made.oci_block)
    with made.worker("oracle-chuncheon") as chuncheon, made.worker("oracle-mumbai") as mumbai:
        workers = {w.pool: w for w in (chuncheon, mumbai)}
        # Two nodes: side by side.
        results = budgets.metered_runs([(job, workers[job.pool]) for job in jobs])
        for job, result in zip(jobs, results, strict=True):
            print(result.line(job))
            assert_within_budget(job, result)
            assert_unit_held(workers[job.pool])
    # One real launch, signed by the oci SDK in the capped run.
    assert made.oci.launches == 1 and made.oci.bad_signatures == 0


@pytest.mark.integration
@pytest.mark.slow
def test_a_run_over_its_cap_is_killed_the_worker_lives_and_the_operator_hears(oracle):
    made, webhook = oracle
    worker = made.workers["oracle-osaka"]
    job = budgets.osaka_jobs()[1]  # backup-redis; any job dies under this cap

    def alerted(run_id):
        # Crashed on its first try is resubmitted by the server, twice; the alert comes once
        # the run will not be (here at once: it was killed before it ever ran).
        stack.wait_until(lambda: webhook.matching(str(run_id)), 180, "the alert", interval=1)
        with get_client(sync_client=True) as client:
            return client.read_flow_run(run_id)

    result = budgets.metered_run(job, worker, TOO_SMALL, until=alerted)
    print(result.line(job), "-", result.flow_run.state.message)
    # The kernel killed the run in its own group; the worker beside it lives on.
    assert result.flow_run.state.is_crashed()
    assert "status code: -9" in result.flow_run.state.message
    assert "exceeding memory limits" in result.flow_run.state.message
    assert result.metered.oom_kills >= 1
    assert_unit_held(worker)
    # One message from the server's crash automation: the job, the state and why, the pool.
    (text,) = webhook.matching(str(result.flow_run.id))
    print(f"the alert:\n{text}")
    assert "backup-redis/backup-redis Crashed" in text
    assert "exceeding memory limits" in text and "Pool: oracle-osaka" in text
    # The worker still takes work: the same job under its budget completes.
    assert_within_budget(job, budgets.metered_run(job, worker))
