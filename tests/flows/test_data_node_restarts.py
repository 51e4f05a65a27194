"""The data node restarts under a price write and under a backup (its own PostgreSQL cluster).

The write or the dump is held at a known point (another session holds a lock it waits for),
then the cluster is restarted with `pg_ctl restart -m fast` (sessions ended: admin shutdown)
or `-m immediate` (a crash, then recovery), as a reboot or an upgrade of the data node does.
The task retries what can succeed; the store ends equal, table by table, to a clean run's; the
backup catalog records what happened; a failure that stays says what was kept and that a
rerun is safe.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import psycopg
import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.backups import backup_postgres
from flows.prices import ingest_us_prices
from tasks.limits import set_limit
from tasks.store.engine import get_engine, migrate
from tasks.store.schema import backup_catalog, metadata
from tests import datanode
from tests.deployments.stack import wait_until
from tests.fakes.yahoo import FakeYahoo

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SYMBOLS = ["AAPL", "MSFT", "NVDA", "KO"]
FRI = dt.datetime(2024, 6, 14, 22, 0, tzinfo=dt.UTC)
START = dt.date(2024, 1, 2)


@pytest.fixture(scope="module")
def cluster():
    if why := datanode.available():
        pytest.skip(why)
    with datanode.pg_cluster() as node:
        yield node


def new_store(cluster) -> str:
    url = cluster.create_database(f"market_{uuid.uuid4().hex[:8]}")
    migrate(url)
    return url


@pytest.fixture
def yahoo(monkeypatch):
    set_limit("yahoo", 1, 200.0)
    with FakeYahoo() as fake:
        for name, value in fake.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("INVESTFLOW_HTTP_TIMEOUT_S", "5")
        yield fake


def volatile(column: str) -> bool:
    """Columns that say when or by which run a row was written, not what it holds."""
    return column.endswith("_at") or "run_id" in column or column in ("id", "first_seen")


def store_tables(url: str) -> dict[str, list[tuple]]:
    """Every table's rows, without the columns that say when or by which run they were written."""
    engine = get_engine(url)
    tables = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            if table.name == "backup_catalog":
                continue
            cols = [c for c in table.columns if not volatile(c.name)]
            tables[table.name] = sorted(
                tuple(map(str, row)) for row in conn.execute(sa.select(*cols))
            )
    return tables


def waiting_on_lock(url: str) -> bool:
    """A session of that database is waiting for a lock (the write or dump we hold up)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return bool(
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).fetchone()[0]
        )


def task_runs_of(flow_run_id, name: str):
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return [r for r in runs if r.name.startswith(name)]


def in_thread(fn, **kwargs) -> tuple[threading.Thread, dict]:
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(state=fn(**kwargs)), daemon=True)
    thread.start()
    return thread, box


def hold_lock(url: str, table: str, mode: str) -> psycopg.Connection:
    conn = psycopg.connect(url, application_name="test-lock-holder")
    conn.execute(f"LOCK TABLE {table} IN {mode} MODE")
    return conn


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_restart_mid_write_is_retried_and_the_store_equals_a_clean_run(
    cluster, yahoo, monkeypatch, mode
):
    clean, faulted = new_store(cluster), new_store(cluster)
    run = ingest_us_prices.with_options(retries=0)
    kwargs = dict(symbols=SYMBOLS, start=START, as_of=FRI, backoff_s=0.01, return_state=True)
    monkeypatch.setenv("INVESTFLOW_DATABASE_URL", clean)
    assert run(**kwargs).is_completed()

    monkeypatch.setenv("INVESTFLOW_DATABASE_URL", faulted)
    # Reads go on, the chunk's INSERT waits: the restart lands inside its transaction.
    holder = hold_lock(faulted, "daily_prices", "EXCLUSIVE")
    thread, box = in_thread(run, **kwargs)
    wait_until(lambda: waiting_on_lock(faulted), 120, "the chunk's write to wait on the lock")
    cluster.restart(mode)
    thread.join(timeout=180)
    holder.close()
    state = box["state"]
    assert state.is_completed(), state.message
    (write,) = task_runs_of(state.state_details.flow_run_id, "write-prices")
    assert write.run_count == 2 and write.state.is_completed()  # lost once, retried once
    assert store_tables(faulted) == store_tables(clean)
    assert store_tables(clean)["daily_prices"]  # the comparison compared something


def test_a_data_node_that_stays_down_fails_the_write_saying_a_rerun_is_safe(
    cluster, yahoo, monkeypatch
):
    store = new_store(cluster)
    monkeypatch.setenv("INVESTFLOW_DATABASE_URL", store)
    holder = hold_lock(store, "daily_prices", "EXCLUSIVE")
    run = ingest_us_prices.with_options(retries=0)
    thread, box = in_thread(
        run, symbols=SYMBOLS, start=START, as_of=FRI, backoff_s=0.01, return_state=True
    )
    wait_until(lambda: waiting_on_lock(store), 120, "the chunk's write to wait on the lock")
    cluster._pg_ctl("stop", "-m", "fast")
    try:
        thread.join(timeout=180)
    finally:
        holder.close()
        cluster._pg_ctl("start")
    state = box["state"]
    assert state.is_failed()
    message = state.message
    assert "Writing the prices of 4 symbols (AAPL .. KO)" in message
    assert "connection was lost" in message and "none of its rows are stored" in message
    assert "A rerun is safe" in message
    (write,) = task_runs_of(state.state_details.flow_run_id, "write-prices")
    assert write.run_count == 4  # the first try and its three retries
    # The rerun the message promises: the store ends as a clean run's.
    clean = new_store(cluster)
    assert run(
        symbols=SYMBOLS, start=START, as_of=FRI, backoff_s=0.01, return_state=True
    ).is_completed()
    monkeypatch.setenv("INVESTFLOW_DATABASE_URL", clean)
    assert run(
        symbols=SYMBOLS, start=START, as_of=FRI, backoff_s=0.01, return_state=True
    ).is_completed()
    assert store_tables(store) == store_tables(clean)


@pytest.fixture
def backup_env(cluster, tmp_path, monkeypatch):
    """A source database on the data node; the catalog in the data node's market store."""
    source = cluster.create_database(f"source_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("CREATE TABLE prices (symbol text, d date, close float8)")
        conn.execute(
            "INSERT INTO prices SELECT 'S' || (g % 20), date '2021-01-01' + g, g "
            "FROM generate_series(1, 5000) g"
        )
    store = new_store(cluster)
    monkeypatch.setenv("INVESTFLOW_DATABASE_URL", store)
    monkeypatch.setenv("INVESTFLOW_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("INVESTFLOW_BACKUP_DATABASE_URLS", source)
    return {"source": source, "store": store, "root": tmp_path / "backups"}


def catalog(store: str) -> list[dict]:
    with get_engine(store).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(backup_catalog))]


def test_a_restart_mid_backup_is_retried_and_the_catalog_holds_one_good_backup(cluster, backup_env):
    # The dump waits behind a lock (its lock timeout is long); the restart ends both sessions.
    holder = hold_lock(backup_env["source"], "prices", "ACCESS EXCLUSIVE")
    thread, box = in_thread(backup_postgres, offsite=False, lock_timeout_s=300, return_state=True)
    wait_until(lambda: waiting_on_lock(backup_env["source"]), 120, "pg_dump to wait on the lock")
    cluster.restart("fast")
    thread.join(timeout=240)
    holder.close()
    state = box["state"]
    assert state.is_completed(), state.message
    (dump,) = task_runs_of(state.state_details.flow_run_id, "backup-database")
    assert dump.run_count == 2
    rows = catalog(backup_env["store"])
    # One backup (a row per tier it landed in), no failure row for the retried try.
    assert {r["status"] for r in rows} == {"ok"} and len({r["sha256"] for r in rows}) == 1
    assert {r["tier"] for r in rows} >= {"daily"}
    dumps = {p.name for p in backup_env["root"].rglob("*.dump")}
    assert len(dumps) == 1 and not list(backup_env["root"].rglob("*.partial*"))


def test_a_backup_whose_data_node_stays_down_says_what_was_kept(cluster, backup_env):
    holder = hold_lock(backup_env["source"], "prices", "ACCESS EXCLUSIVE")
    thread, box = in_thread(backup_postgres, offsite=False, lock_timeout_s=300, return_state=True)
    wait_until(lambda: waiting_on_lock(backup_env["source"]), 120, "pg_dump to wait on the lock")
    cluster._pg_ctl("stop", "-m", "fast")
    try:
        thread.join(timeout=240)
    finally:
        holder.close()
        cluster._pg_ctl("start")
    state = box["state"]
    assert state.is_failed()
    message = state.message
    assert "older backups untouched" in message
    assert "connection to the database was lost" in message or "cannot reach PostgreSQL" in message
    assert "A rerun is safe" in message
    (dump,) = task_runs_of(state.state_details.flow_run_id, "backup-database")
    assert dump.run_count == 3
    assert not list(backup_env["root"].rglob("*.dump"))  # nothing half-written kept
