"""The platform on namespaced hosts (tests/topology/hosts.py), made once for these tests.

Server on the aws host, PostgreSQL and Redis on the data node, a process worker per pool on
its own host, the alert webhook stand-in on the operator's side of the links. Needs root and
`ip netns`; skipped otherwise, failed under CI (CI=true) instead.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.deployments import stack
from tests.topology import hosts

DEPLOYMENTS = ["train-model", "predict-returns", "predict-returns-cpu", "health-page"]


def pytest_sessionfinish(session, exitstatus):
    # A session interrupted mid-setup leaves nothing behind either.
    hosts.sweep()


@pytest.fixture(scope="session")
def prefect_server():
    """These tests bring their own server, on the aws host: the session's loopback one unused."""
    yield None


@pytest.fixture(scope="package")
def platform():
    why = hosts.unavailable()
    if why:
        if IN_CI:
            pytest.fail(f"topology tests cannot run: {why}", pytrace=False)
        pytest.skip(why)
    with running_platform() as made:
        yield made


@contextlib.contextmanager
def running_platform():
    """The hosts, the server, the data node, the deployments, the rules and a worker per pool."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from tasks.store.engine import get_engine, migrate
    from tests.fakes.webhook import FakeWebhook

    workdir = Path(tempfile.mkdtemp(prefix="investflow-topology-"))
    with contextlib.ExitStack() as held:
        topo = held.enter_context(hosts.Topology(workdir))
        pg_url, redis_url = topo.start_data_node()
        migrate(pg_url)
        webhook = held.enter_context(FakeWebhook(host=topo.addr("operator")))
        hook_url = webhook.url + "/api/webhooks/1/alert-token"
        env = stack.stack_env(
            PREFECT_HOME=str(workdir / "home"),
            PREFECT_API_URL=topo.api_url,
            PREFECT_UI_URL=topo.api_url.removesuffix("/api"),
            INVESTFLOW_UI_URL=topo.api_url.removesuffix("/api"),
            INVESTFLOW_DATABASE_URL=pg_url,
            INVESTFLOW_MODEL_DIR=str(workdir / "models"),  # the model bucket, seen by every host
            INVESTFLOW_ALERT_WEBHOOK_URL=hook_url,
        )
        server = topo.start_server(env)
        try:
            stack.wait_healthy(topo.api_url, server, timeout=180)
        except AssertionError:
            print((workdir / "server.log").read_text()[-3000:])
            raise
        held.enter_context(
            temporary_settings(
                {PREFECT_API_URL: topo.api_url, PREFECT_UI_URL: env["PREFECT_UI_URL"]}
            )
        )
        stack.run(
            [str(stack.BIN / "python"), "-m", "deployments.bootstrap", "--local", "pools"], env
        )
        deploy = [str(stack.BIN / "prefect"), "--no-prompt", "deploy"]
        stack.run(deploy + [a for name in DEPLOYMENTS for a in ("-n", name)], env, timeout=600)
        stack.apply_alerts(env, hook_url)
        logs = workdir / "logs"
        logs.mkdir()
        workers = {}
        for host in hosts.HOSTS.values():
            if host.pool:
                workers[host.name] = held.enter_context(
                    stack.worker(host.pool, env, logs, wrap=topo.wrap(host.name))
                )
        stack.wait_until(lambda: pool_statuses() == {"READY"}, 180, "every pool ready")
        time.sleep(10)  # the automations have had the ready events
        yield {
            "startup_texts": webhook.texts(),
            "held": held,
            "topo": topo,
            "env": env,
            "pg_url": pg_url,
            "redis_url": redis_url,
            "engine": get_engine(pg_url),
            "webhook": webhook,
            "workdir": workdir,
            "logs": logs,
            "workers": workers,
        }
        get_engine(pg_url).dispose()


def pool_statuses() -> set[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {str(getattr(p.status, "value", p.status)) for p in client.read_work_pools()}


def server_healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def log_tail(platform, name: str, chars: int = 3000) -> str:
    path = (
        platform["logs"] / name
        if (platform["logs"] / name).exists()
        else platform["workdir"] / name
    )
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"(no {name})"
