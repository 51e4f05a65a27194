"""Benchmark: each Oracle job under its node's memory cap: wall time and peak against its budget.

Starts its own Prefect server (temporary home, free port), a scratch store with 1,000,000
daily_prices rows, a redis-server with 100,000 keys and the OCI stand-in, deploys the five
Oracle deployments from prefect.yaml, and runs each Oracle pool's real process worker in a
memory cgroup capped at its unit's MemoryMax (deployments/units.py; swap forbidden), each run
in a cgroup of its own below it capped at the job's budget (deployments/pools.py): the same
machinery as tests/deployments/test_node_budgets.py (tests/deployments/budgets.py, cgroup.py).

Each job runs REPEATS times under its caps. backup-postgres, the key figure, also runs REPEATS
times with no cap anywhere (worker and run groups unlimited), alternating with the capped runs,
so the cap's cost in wall time is measured against the same run without it. Per job: wall time
(Running -> Completed as the server records it; medians), the job's peak (its processes'
VmHWM summed: the flow run's python, pg_dump, a scratch redis-server...), the flow process's own
VmHWM, the run group's peak charge with page cache, OOM kills; per worker its own VmHWM and its
unit group's peak; and two health pages at once on oracle-mumbai, whose unit allows two runs
(`--limit 2`) in its 400M. Writes bench/results/budgets.json. Needs root and the cgroup v1
memory controller.

    sudo .venv/bin/python bench/budgets.py [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "budgets.json"
REPEATS = 5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    from tests.deployments.cgroup import unavailable

    if reason := unavailable():
        # Said, not failed: `make bench` goes on to the other benchmarks.
        print(f"skipped: {reason}; run as root on Linux with the cgroup v1 memory controller")
        return

    from tasks.backups.redis.restore import free_port

    home = Path(tempfile.mkdtemp(prefix="investflow-bench-budgets-"))
    port = free_port()
    os.environ.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_UI_URL=f"http://127.0.0.1:{port}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
    )
    # Imported after the environment points Prefect at this bench's own server.
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
            result = measure(args.admin_url, home, webhook.url + "/alerts")
    finally:
        stack.stop(server)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    met = all(job["within_budget"] for job in result["jobs"].values())
    print("targets (every job's peak under its budget, no OOM kill):", "met" if met else "NOT met")


def measure(admin_url: str, home: Path, webhook_url: str) -> dict:
    from tests.deployments import budgets
    from tests.deployments.cgroup import MB

    jobs: dict[str, list] = {}
    uncapped: list = []
    osaka_peaks: list[int] = []  # the osaka unit group's peak before each uncapped run
    with budgets.oracle_stack(admin_url, home, webhook_url) as made:
        osaka = made.workers["oracle-osaka"]
        for i in range(REPEATS):
            for job in budgets.osaka_jobs():
                # backup-postgres alternates with the same run under no cap at all.
                if job.name == "backup-postgres" and i % 2:
                    uncapped.append(_uncapped(job, osaka, osaka_peaks))
                jobs.setdefault(job.name, []).append((job, budgets.metered_run(job, osaka)))
                _print(job, jobs[job.name][-1][1], "capped")
                if job.name == "backup-postgres" and not i % 2:
                    uncapped.append(_uncapped(job, osaka, osaka_peaks))
            edge = budgets.edge_jobs(made.oci_block)
            runs = budgets.metered_runs([(job, made.workers[job.pool]) for job in edge])
            for job, run in zip(edge, runs, strict=True):
                jobs.setdefault(job.name, []).append((job, run))
                _print(job, run, "capped")
        workers = {}
        for pool, worker in made.workers.items():
            largest = max(
                r.metered.job_peak_mb for runs in jobs.values() for j, r in runs if j.pool == pool
            )
            workers[pool] = {
                "memory_max_mb": budgets.unit_cap(pool) / MB,
                "worker_peak_mb": worker.peak_mb(),
                # What MemoryMax must hold: the worker and its largest job, each at its peak.
                "worker_plus_largest_job_mb": round(worker.peak_mb() + largest, 1),
                # The kernel's charge, page cache included (the cache is reclaimed at the cap,
                # so this may read the cap itself); the uncapped runs' peaks are left out.
                "unit_group_peak_mb": round(
                    max([worker.group.peak_bytes, *(osaka_peaks if worker is osaka else [])]) / MB,
                    1,
                ),
                "oom_kills": worker.group.oom_kills,
            }
        pair = _two_at_once(made)

    figures = {name: _summary(runs) for name, runs in jobs.items()}
    pg = figures["backup-postgres"]
    walls = [r.wall_s for r in uncapped]
    pg["uncapped"] = {
        "wall_s": round(statistics.median(walls), 2),
        "wall_runs_s": walls,
        "job_peak_mb": max(r.metered.job_peak_mb for r in uncapped),
        "cgroup_peak_mb": max(r.metered.cgroup_peak_mb for r in uncapped),
    }
    pg["capped_vs_uncapped_wall"] = round(pg["wall_s"] / pg["uncapped"]["wall_s"], 3)
    return {
        "jobs": figures,
        "workers": workers,
        "two_health_pages_at_once_on_oracle_mumbai": pair,
        "rows": budgets.PRICE_ROWS,
        "redis_keys": budgets.REDIS_KEYS,
        "repeats": REPEATS,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _two_at_once(made) -> dict:
    """Two health pages at once on oracle-mumbai: its unit's `--limit 2` in 400M, measured."""
    from tests.deployments import budgets
    from tests.deployments.cgroup import MB

    mumbai = made.workers["oracle-mumbai"]
    health = budgets.edge_jobs(made.oci_block)[1]
    mumbai.group.reset_peak()
    runs = budgets.metered_runs([(health, mumbai), (health, mumbai)])
    for run in runs:
        print(f"  paired: {run.line(health)}", flush=True)
    return {
        "states": [run.flow_run.state_name for run in runs],
        "job_peaks_mb": [run.metered.job_peak_mb for run in runs],
        "worker_peak_mb": mumbai.peak_mb(),
        # Page cache included: the kernel charges pages the runs share with the worker once.
        "unit_group_peak_mb": round(mumbai.group.peak_bytes / MB, 1),
        "memory_max_mb": budgets.unit_cap("oracle-mumbai") / MB,
        "oom_kills": mumbai.group.oom_kills + sum(run.metered.oom_kills for run in runs),
    }


def _uncapped(job, worker, peaks: list[int]):
    """job on worker with no cap on the worker's group nor the run's: the baseline."""
    from tests.deployments import budgets
    from tests.deployments.cgroup import UNLIMITED

    cap = worker.group.limit_bytes
    peaks.append(worker.group.peak_bytes)
    worker.group.set_limit(UNLIMITED)
    try:
        run = budgets.metered_run(job, worker, run_cap=UNLIMITED)
    finally:
        worker.group.set_limit(cap)
        worker.group.reset_peak()
    _print(job, run, "uncapped")
    return run


def _print(job, run, how: str) -> None:
    print(f"{how:>8}: {run.line(job)}", flush=True)
    if not run.flow_run.state.is_completed():
        raise SystemExit(
            f"{job.name} ended {run.flow_run.state_name}: {run.flow_run.state.message}"
        )


def _summary(runs: list) -> dict:
    from tests.deployments import budgets

    job = runs[0][0]
    budget = budgets.job_budget_mb(job.pool)
    metered = [r.metered for _, r in runs]
    walls = [r.wall_s for _, r in runs]
    peak = max(m.job_peak_mb for m in metered)
    processes: dict[str, float] = {}
    for m in metered:
        for name, mb in m.processes.items():
            processes[name] = max(processes.get(name, 0.0), mb)
    return {
        "pool": job.pool,
        "budget_mb": budget,
        "wall_s": round(statistics.median(walls), 2),
        "wall_runs_s": walls,
        "job_peak_mb": peak,
        "job_peak_runs_mb": [m.job_peak_mb for m in metered],
        "flow_process_peak_mb": max(m.flow_process_peak_mb for m in metered),
        "processes_peak_mb": processes,
        "cgroup_peak_mb": max(m.cgroup_peak_mb for m in metered),
        "oom_kills": sum(m.oom_kills for m in metered),
        "headroom_mb": round(budget - peak, 1),
        "within_budget": peak < budget and not any(m.oom_kills for m in metered),
    }


if __name__ == "__main__":
    main()
