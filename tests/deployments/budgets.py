"""The Oracle jobs under their nodes' memory caps: their data, capped workers, metered runs.

Shared by tests/deployments/test_node_budgets.py and bench/budgets.py. Each Oracle pool's
process worker runs in a cgroup capped at its systemd unit's MemoryMax (deployments/units.py),
started as the unit starts it (`--limit` included); each run it takes is started in a cgroup
of its own below, capped at the job's budget (deployments/pools.py), and metered
(tests/deployments/cgroup.py). Needs the Prefect server that PREFECT_API_URL names.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deployments.pools import POOLS
from deployments.units import ROUTES
from tests.deployments import stack
from tests.deployments.cgroup import (
    MB,
    Cgroup,
    Meter,
    Metered,
    capped,
    run_command,
    run_group,
    size_bytes,
)

ORACLE_POOLS = ("oracle-osaka", "oracle-chuncheon", "oracle-mumbai")
DEPLOYMENTS = (
    "backup-postgres",
    "backup-redis",
    "verify-backups",
    "launch-a1-instance",
    "health-page",
)
PRICE_ROWS = 1_000_000
# A cache's worth beside the database on a 1 GB node: quotes per symbol and session, a hash
# per instrument, a few rendered pages of 20 kB.
REDIS_KEYS = 100_000
OCI_COMPARTMENT = "ocid1.compartment.oc1..budget"


@dataclass(frozen=True)
class Job:
    deployment: str  # flow/deployment, as `prefect deployment run` names it
    pool: str
    parameters: dict

    @property
    def name(self) -> str:
        return self.deployment.split("/", 1)[1]


def job_budget_mb(pool: str) -> int:
    """A job's budget on pool as deployments/pools.py states it ("... under ~200 MB")."""
    (budget,) = [p.budget for p in POOLS if p.name == pool]
    return int(re.search(r"(\d+) MB", budget)[1])


def unit_cap(pool: str) -> int:
    """The pool's systemd MemoryMax in bytes: its worker and the worker's runs together."""
    return size_bytes(ROUTES[pool].memory_max)


def osaka_jobs() -> list[Job]:
    """The data node's jobs, in the order a night runs them (verify needs both backups)."""
    return [
        Job("backup-postgres/backup-postgres", "oracle-osaka", {"offsite": False}),
        Job("backup-redis/backup-redis", "oracle-osaka", {"offsite": False}),
        Job("verify-backups/verify-backups", "oracle-osaka", {}),
    ]


def edge_jobs(oci_block: str, display_name: str | None = None) -> list[Job]:
    """The edge nodes' jobs: one A1 launch against the OCI stand-in, the health page."""
    a1 = {
        "compartment_id": OCI_COMPARTMENT,
        "subnet_id": "ocid1.subnet.oc1..budget",
        "image_id": "ocid1.image.oc1..budget",
        "display_name": display_name or f"a1-budget-{uuid.uuid4().hex[:6]}",
        "ssh_public_key": "ssh-ed25519 AAAAC3Nz budget",
        "credentials_block": oci_block,
        "pause_schedule_when_done": False,
    }
    return [
        Job("launch-a1-instance/launch-a1-instance", "oracle-chuncheon", a1),
        Job("health-page/health-page", "oracle-mumbai", {}),
    ]


@contextlib.contextmanager
def scratch_store(admin_url: str, rows: int = PRICE_ROWS) -> Iterator[str]:
    """A migrated market store of its own holding rows prices; dropped after."""
    import psycopg

    from tasks.store.engine import get_engine, migrate

    name = f"investflow_budget_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        migrate(url)
        fill_prices(url, rows)
        yield url
    finally:
        get_engine.cache_clear()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill_prices(url: str, rows: int = PRICE_ROWS) -> None:
    """rows daily_prices rows (1,000 symbols) of plausible prices into a migrated store."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO daily_prices (symbol, trade_date, open, high, low, close, adj_close,
                                      volume, currency, source)
            SELECT 'SYM' || s, date '2020-01-01' + d,
                   p, p * 1.01, p * 0.99, p * (1 + (random() - 0.5) / 50), p,
                   (random() * 1e7)::bigint, 'USD', 'yahoo'
            FROM generate_series(1, 1000) s, generate_series(1, %s) d,
                 LATERAL (SELECT 10 + s + d * 0.01 + random() AS p) q
            """,
            (rows // 1000,),
        )
        conn.execute("VACUUM ANALYZE daily_prices")


@contextlib.contextmanager
def redis_server(keys: int = REDIS_KEYS) -> Iterator[str]:
    """A redis-server of its own on a free port, holding keys keys; yields its URL."""
    import redis

    from tasks.backups.redis.restore import free_port

    folder = Path(tempfile.mkdtemp(prefix="investflow-budget-redis-"))
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
         "--save", "", "--appendonly", "no", "--logfile", str(folder / "redis.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        stack.wait_until(lambda: _pings(client), 30, "the budget redis-server")
        pipe = client.pipeline(transaction=False)
        for i in range(keys):
            if i % 10 == 0:
                pipe.hset(f"instrument:SYM{i}", mapping={"market": "US", "currency": "USD"})
            elif i % 1000 == 1:
                pipe.set(f"page:{i}", "x" * 20_000, ex=86_400)
            else:
                pipe.set(f"quote:SYM{i % 1000}:{i}", f"{100 + i % 97}.{i % 100:02d}", ex=86_400)
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stack.stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@dataclass
class CappedWorker:
    pool: str
    group: Cgroup
    proc: subprocess.Popen

    def alive(self) -> bool:
        """The worker process still runs, inside its group."""
        return self.proc.poll() is None and self.proc.pid in self.group.pids()

    def peak_mb(self) -> float:
        """The worker process's own VmHWM."""
        return round(Meter.hwm_kb(self.proc.pid) / 1024, 1)


@contextlib.contextmanager
def capped_worker(pool: str, env: dict[str, str], log_dir: Path) -> Iterator[CappedWorker]:
    """The pool's process worker inside a cgroup capped at its unit's MemoryMax."""
    with (
        capped(pool, unit_cap(pool)) as group,
        stack.worker(pool, env, log_dir, limit=ROUTES[pool].limit, wrap=group.command) as proc,
    ):
        yield CappedWorker(pool, group, proc)


@dataclass
class OracleStack:
    env: dict[str, str]
    work: Path  # backups and worker logs
    store: str  # the market store's URL: the catalog, and the million rows backed up
    oci: object  # the OCI stand-in (tests/fakes/oci.py)
    oci_block: str
    workers: dict[str, CappedWorker]

    @contextlib.contextmanager
    def worker(self, pool: str) -> Iterator[CappedWorker]:
        """pool's capped worker, started for the block (or the one already running)."""
        if pool in self.workers:
            yield self.workers[pool]
            return
        with capped_worker(pool, self.env, self.work) as started:
            self.workers[pool] = started
            try:
                yield started
            finally:
                del self.workers[pool]


@contextlib.contextmanager
def oracle_stack(
    admin_url: str, work: Path, webhook_url: str, pools=ORACLE_POOLS
) -> Iterator[OracleStack]:
    """The Oracle jobs deployed on the current server with their data and capped workers.

    A scratch store with PRICE_ROWS prices (dropped after), a redis-server with REDIS_KEYS
    keys, the OCI stand-in and a credentials block for it, the five deployments from
    prefect.yaml, and a capped worker for each of pools (logs under work; the others are
    started by OracleStack.worker when wanted). The credentials block is deleted after.
    """
    from pydantic import SecretStr

    from blocks.oci import OciCredentials
    from tests.fakes.oci import FakeOci, make_api_key

    api_key = make_api_key()
    oci_block = f"oci-budget-{uuid.uuid4().hex[:8]}"
    try:
        with (
            scratch_store(admin_url) as store,
            redis_server() as redis_url,
            FakeOci(api_key) as oci,
            contextlib.ExitStack() as after,  # undone first to last: workers, then the block
        ):
            OciCredentials(
                user=api_key.user,
                tenancy=api_key.tenancy,
                fingerprint=api_key.fingerprint,
                region="ap-chuncheon-1",
                private_key=SecretStr(api_key.pem),
            ).save(oci_block)
            after.callback(_delete_block, oci_block)
            env = stack.stack_env(
                INVESTFLOW_DATABASE_URL=store,
                INVESTFLOW_BACKUP_DATABASE_URLS=store,
                INVESTFLOW_BACKUP_DIR=str(work / "backups"),
                INVESTFLOW_REDIS_URL=redis_url,
                INVESTFLOW_OCI_ENDPOINT=oci.url,
                INVESTFLOW_ALERT_WEBHOOK_URL=webhook_url,
                INVESTFLOW_HTTP_TIMEOUT_S="10",
                # Polling as `make up` does, heartbeats at Prefect's default: a SQLite server
                # (the tests') stalls a minute at a time under three workers polling every 2 s
                # (its lock contention on worker polls, PrefectHQ/prefect#23051).
                PREFECT_WORKER_QUERY_SECONDS="5",
                PREFECT_WORKER_HEARTBEAT_SECONDS="30",
            )
            python, prefect = str(stack.BIN / "python"), str(stack.BIN / "prefect")
            stack.run([python, "-m", "deployments.bootstrap", "--local", "pools"], env)
            names = [arg for name in DEPLOYMENTS for arg in ("-n", name)]
            stack.run([prefect, "--no-prompt", "deploy", *names], env, timeout=600)
            started = {pool: after.enter_context(capped_worker(pool, env, work)) for pool in pools}
            yield OracleStack(env, work, store, oci, oci_block, started)
    except BaseException:
        for log in work.glob("worker-*.log"):
            print(f"--- {log.name}\n{log.read_text()[-3000:]}")
        raise


def _delete_block(name: str) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for block in client.read_block_documents():
            if block.name == name:
                client.delete_block_document(block.id)


@dataclass
class RunResult:
    flow_run: object  # as the API returns it, final
    group: Cgroup  # the run's own cgroup
    metered: Metered
    wall_s: float  # Running -> final, as the server recorded it
    queued_s: float  # created -> Running: the worker's poll, the flow process's start

    def line(self, job: Job) -> str:
        """What the run used, in one line."""
        m = self.metered
        each = ", ".join(f"{name} {mb:.0f}" for name, mb in m.processes.items())
        return (
            f"{job.name} on {job.pool}: {self.flow_run.state_name} in {self.wall_s:.1f} s "
            f"(started {self.queued_s:.1f} s after it was asked for), "
            f"peak {m.job_peak_mb:.0f} MB of {job_budget_mb(job.pool)} MB ({each}; cgroup "
            f"with page cache {m.cgroup_peak_mb:.0f} MB)"
        )


def metered_run(
    job: Job, worker: CappedWorker, run_cap: int | None = None, timeout: float = 300, until=None
) -> RunResult:
    """One run of job, taken by worker, in a cgroup of its own capped at run_cap bytes.

    run_cap: the job's budget unless given. until(run_id) -> flow run: what to wait for instead
    of the run's first final state (a crashed run is resubmitted by the server's automation, so
    its first Crashed need not be its last).
    """
    (result,) = metered_runs([(job, worker)], run_cap, timeout, until)
    return result


def metered_runs(
    runs: list[tuple[Job, CappedWorker]],
    run_cap: int | None = None,
    timeout: float = 300,
    until=None,
) -> list[RunResult]:
    """Runs started together (each job on its worker), each metered in its own group."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    started = []
    with get_client(sync_client=True) as client:
        for job, worker in runs:
            (deployment,) = client.read_deployments(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[job.name]))
            )
            cap = job_budget_mb(job.pool) * MB if run_cap is None else run_cap
            run = client.create_flow_run_from_deployment(
                deployment.id,
                parameters=job.parameters,
                job_variables={"command": run_command(cap)},
            )
            started.append((run.id, Meter(run_group(worker.group, run.id)).start()))
    results = []
    for run_id, meter in started:
        try:
            if until is None:
                flow_run = stack.wait_for_final_state(run_id, timeout=timeout)
            else:
                flow_run = until(run_id)
        finally:
            metered = meter.stop()
        began, ended = flow_run.start_time, flow_run.end_time
        wall = (ended - began).total_seconds() if began and ended else 0.0
        queued = (began - flow_run.created).total_seconds() if began else 0.0
        results.append(RunResult(flow_run, meter.group, metered, round(wall, 2), round(queued, 2)))
    return results
