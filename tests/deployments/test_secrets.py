"""No secret in what Prefect stores: after failing runs, scan its database, logs and files.

The runs are given a password-bearing database URL and a FRED key, against stand-ins that
echo requests (key included) into their errors; then every byte of the session's Prefect
database (flow runs, parameters, states, logs, events, artifacts), its home folder (results,
the server's log) and the worker's log is searched for each secret.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from tests.deployments import stack
from tests.fakes.fred import FakeFred

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "pw-never-shown-5d1e7"
FRED_KEY = "fedcba9876543210fedcba9876543210"
UNREACHABLE = f"postgresql://backup:{PASSWORD}@127.0.0.1:1/market"
MALFORMED = f"postgresql://backup:{PASSWORD}@[::1/market"  # libpq repeats it whole


def scan(paths: list[Path], needles: list[str]) -> dict[str, list[str]]:
    """Which files hold which needle (bytes as stored, and URL-encoded)."""
    found: dict[str, list[str]] = {}
    for path in paths:
        for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
            data = file.read_bytes()
            for needle in needles:
                if needle.encode() in data:
                    found.setdefault(needle, []).append(str(file))
    return found


@pytest.fixture(scope="module")
def failed_runs(tmp_path_factory, pg_engine_module):
    from flows.backups import backup_postgres
    from flows.macro import ingest_macro

    logs = tmp_path_factory.mktemp("secret-logs")
    with FakeFred("0" * 32) as fred:  # the configured key is refused, and echoed back
        fred.leaky_errors = True
        env = stack.stack_env(
            INVESTFLOW_FRED_API_KEY=FRED_KEY,
            INVESTFLOW_FRED_BASE_URL=fred.url,
            INVESTFLOW_BACKUP_DATABASE_URLS=UNREACHABLE,
            INVESTFLOW_BACKUP_DIR=str(tmp_path_factory.mktemp("backups")),
        )
        stack.run(
            [str(stack.BIN / "python"), "-m", "deployments.bootstrap", "--local", "pools"], env
        )
        stack.run(
            [str(stack.BIN / "prefect"), "--no-prompt", "deploy", "-n", "macro",
             "-n", "backup-postgres"], env,
        )  # fmt: skip
        states, refused = [], None
        with stack.worker("fargate", env, logs), stack.worker("oracle-osaka", env, logs):
            for name in ("macro/macro", "backup-postgres/backup-postgres"):
                run_id = stack.deployment_run(name, env)
                states.append(stack.wait_for_final_state(run_id, timeout=120).state)
            # A URL as a parameter: the server refuses to create the run. What the submitter's
            # terminal shows is the CLI's own output (not the command line they typed).
            cli = subprocess.run(
                [str(stack.BIN / "prefect"), "deployment", "run",
                 "backup-postgres/backup-postgres", "--param", f'databases=["{UNREACHABLE}"]'],
                env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert cli.returncode != 0, cli.stdout
            refused = cli.stdout + cli.stderr
            http_refusal = create_run_over_http(
                "backup-postgres/backup-postgres", {"databases": [UNREACHABLE]}
            )
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            states.append(ingest_macro(series=["DGS10"], return_state=True))
            os.environ["INVESTFLOW_BACKUP_DATABASE_URLS"] = MALFORMED
            states.append(backup_postgres(return_state=True))
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)
    time.sleep(8)  # the server writes events in batches
    yield {"states": states, "refused": refused, "http_refusal": http_refusal, "logs": logs}
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            client.delete_deployment(deployment.id)


def create_run_over_http(name: str, parameters: dict) -> tuple[int, str]:
    """POST /deployments/{id}/create_flow_run as the UI does; the status and the body."""
    import httpx

    api = os.environ["PREFECT_API_URL"]
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(name)
    response = httpx.post(
        f"{api}/deployments/{deployment.id}/create_flow_run",
        json={"parameters": parameters},
        timeout=60,
    )
    return response.status_code, response.text


@pytest.fixture(scope="module")
def pg_engine_module(pg_url):
    from tasks.store.engine import get_engine

    saved = os.environ.get("INVESTFLOW_DATABASE_URL")
    os.environ["INVESTFLOW_DATABASE_URL"] = pg_url
    yield get_engine(pg_url)
    os.environ["INVESTFLOW_DATABASE_URL"] = saved


def test_the_runs_failed_for_the_reasons_given(failed_runs):
    macro, backup, local_macro, malformed = failed_runs["states"]
    assert macro.is_failed() and "refused the API key" in macro.message
    assert backup.is_failed() and "127.0.0.1:1/market" in backup.message
    assert local_macro.is_failed() and "refused the API key" in local_macro.message
    assert (
        malformed.is_failed() and "entry 1 of INVESTFLOW_BACKUP_DATABASE_URLS" in malformed.message
    )
    refused = failed_runs["refused"]
    assert "databases" in refused  # named, refused before any run existed
    assert "not a URL" in refused and "INVESTFLOW_BACKUP_DATABASE_URLS" in refused
    assert PASSWORD not in refused and "127.0.0.1:1/market" not in refused
    status, body = failed_runs["http_refusal"]
    # Prefect answers a parameter that fails the schema with 409 Conflict.
    assert status == 409 and "databases" in body and "not a URL" in body
    assert PASSWORD not in body and "127.0.0.1:1/market" not in body


def test_no_secret_anywhere_prefect_keeps_things(failed_runs):
    home = Path(os.environ["PREFECT_HOME"])
    places = [home, failed_runs["logs"]]
    # The scan does read what Prefect stored: the failures' safe parts are there.
    assert scan(places, ["127.0.0.1:1/market", "refused the API key"]).keys() == {
        "127.0.0.1:1/market",
        "refused the API key",
    }
    leaks = scan(places, [PASSWORD, FRED_KEY])
    assert leaks == {}
