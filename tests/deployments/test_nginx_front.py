"""The shipped nginx front, for real: TLS with a throwaway CA before an auth-guarded server.

`python -m deployments.install server` renders nginx's site as on the AWS node, on free
loopback ports here; nginx runs it in front of a PostgreSQL-backed Prefect server started with
PREFECT_SERVER_API_AUTH_STRING. The CLI and a process worker know only the https address, so
everything they do (the events websocket included) passes through nginx.
"""

from __future__ import annotations

import base64
import os
import pwd
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from deployments.install import main as install
from tests.conftest import create_database, drop_database, free_port
from tests.deployments import stack
from tests.fakes.tls import certificate_files

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AUTH = "admin:nginx-front-Secret_7"
HOST = "localhost"  # the certificate's name; /etc/hosts maps it to 127.0.0.1, where nginx listens
POOL, DEPLOYMENT = "nginx-front", "say-hello/through-nginx"
FLOW = """\
from prefect import flow, get_run_logger, task
from prefect.events import emit_event


@task
def greet(name: str) -> str:
    return f"hello, {name}"


@flow(name="say-hello")
def say_hello(name: str = "nginx") -> str:
    greeting = greet(name)
    get_run_logger().info("said %r through nginx", greeting)
    # Sent by this process over the events websocket, like the task's state events.
    emit_event("investflow.test.greeted", resource={"prefect.resource.id": "investflow.test"})
    return greeting
"""


@dataclass(frozen=True)
class Front:
    https: str  # https://localhost:PORT
    http: str  # http://127.0.0.1:PORT, the redirecting server
    ca_file: Path
    work: Path

    @property
    def api(self) -> str:
        return f"{self.https}/api"

    def env(self, **overrides: str) -> dict[str, str]:
        """A client's environment: nginx's address, the auth string and the throwaway CA."""
        base = {
            "PREFECT_API_URL": self.api,
            "PREFECT_UI_URL": self.https,
            "PREFECT_API_AUTH_STRING": AUTH,
            # Prefect's clients trust this file instead of certifi's bundle (SSL_CERT_FILE is
            # not read by them): the CA that signed nginx's certificate.
            "PREFECT_API_SSL_CERT_FILE": str(self.ca_file),
            "PREFECT_HOME": str(self.work / "client-home"),
        }
        env = stack.stack_env(**(base | overrides))
        return {k: v for k, v in env.items() if v != ""}  # "" removes a setting


@pytest.fixture(scope="module")
def server(pg_admin_url, tmp_path_factory) -> Iterator[str]:
    """The production server's shape: PostgreSQL, basic auth, loopback only."""
    db_url = create_database(pg_admin_url, prefix="investflow_prefect")
    home = tmp_path_factory.mktemp("nginx-prefect")
    try:
        asyncpg_url = db_url.replace("postgresql://", "postgresql+asyncpg://", 1)
        with stack.auth_server(home, asyncpg_url, AUTH) as api_url:
            yield api_url
    finally:
        drop_database(db_url)


def _main_conf(work: Path, site: Path) -> str:
    """The http block Debian's /etc/nginx/nginx.conf wraps around conf.d, in work alone."""
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {work / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}\nworker_processes 1;\npid {work}/nginx.pid;\nerror_log {work}/error.log info;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{\n    access_log {work}/access.log;\n{temp}\n    include {site};\n}}\n"
    )


@pytest.fixture(scope="module")
def front(nginx, server, tmp_path_factory) -> Iterator[Front]:
    """nginx running the installed site on free loopback ports, in front of server."""
    work = tmp_path_factory.mktemp("nginx-front")
    root = work / "root"
    root.mkdir()
    ca_file, cert, key = certificate_files((HOST,))
    https_port, http_port = free_port(), free_port()
    install(
        ["server", "--root", str(root), "--user", pwd.getpwuid(os.geteuid()).pw_name,
         "--api-url", f"https://{HOST}:{https_port}/api", "--server-name", HOST,
         "--tls-cert", str(cert), "--tls-key", str(key),
         "--server-port", str(urlsplit(server).port), "--listen-address", "127.0.0.1",
         "--http-port", str(http_port), "--https-port", str(https_port)]
    )  # fmt: skip
    conf = work / "nginx.conf"
    conf.write_text(_main_conf(work, root / "etc/nginx/conf.d/investflow-prefect.conf"))
    args = [nginx, "-p", str(work), "-c", str(conf), "-e", str(work / "error.log")]
    check = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [*args, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    front = Front(f"https://{HOST}:{https_port}", f"http://127.0.0.1:{http_port}", ca_file, work)
    try:
        stack.wait_until(lambda: _health(front, proc), timeout=30, what="nginx")
        yield front
    except BaseException:
        print((work / "error.log").read_text()[-3000:])
        raise
    finally:
        stack.stop(proc)  # SIGTERM: nginx's fast shutdown, workers included


def _health(front: Front, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"nginx exited with {proc.returncode}")
    try:
        return get(front, "/api/health").status_code == 200
    except httpx.TransportError:
        return False


def get(front: Front, path: str, auth: str | None = None) -> httpx.Response:
    """GET through nginx over https, trusting only the throwaway CA."""
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    return httpx.get(
        front.https + path,
        headers=headers,
        verify=ssl.create_default_context(cafile=front.ca_file),
        timeout=10,
    )


def read(server: str, path: str, body: dict):
    """POST a filter to the server itself (not through nginx), with the auth string."""
    user, password = AUTH.split(":", 1)
    resp = httpx.post(server + path, json=body, auth=(user, password), timeout=10)
    resp.raise_for_status()
    return resp.json()


def events_of(server: str, run_id) -> set[str]:
    """The names of the events about a flow run or anything in it."""
    body = {"filter": {"any_resource": {"id": [f"prefect.flow-run.{run_id}"]}}, "limit": 50}
    return {event["event"] for event in read(server, "/events/filter", body)["events"]}


def log_messages(server: str, run_id) -> list[str]:
    body = {"logs": {"flow_run_id": {"any_": [str(run_id)]}}, "limit": 200}
    return [log["message"] for log in read(server, "/logs/filter", body)]


@pytest.fixture(scope="module")
def deployed(front) -> str:
    """A process pool and a deployment of a one-task flow, made with the CLI through nginx."""
    code = front.work / "flow"
    code.mkdir()
    (code / "hello.py").write_text(FLOW)
    env = front.env()
    prefect = str(stack.BIN / "prefect")
    stack.run([prefect, "work-pool", "create", POOL, "--type", "process"], env)
    # No prefect.yaml there: the deployment pulls its code from this folder.
    stack.run(
        [prefect, "--no-prompt", "deploy", "hello.py:say_hello", "--name",
         DEPLOYMENT.split("/")[1], "--pool", POOL],
        env, cwd=code,
    )  # fmt: skip
    return DEPLOYMENT


def test_the_cli_works_through_nginx_over_https_with_the_throwaway_ca(front, deployed):
    prefect = str(stack.BIN / "prefect")
    wide = front.env(COLUMNS="250")  # rich would cut the names to fit
    assert POOL in stack.run([prefect, "work-pool", "ls"], wide)
    assert deployed.split("/")[1] in stack.run([prefect, "deployment", "inspect", deployed], wide)
    # The TLS is real: without the CA file the same client refuses nginx's certificate.
    untrusted = subprocess.run(
        [prefect, "work-pool", "ls"], env=front.env(PREFECT_API_SSL_CERT_FILE=""),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert untrusted.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stdout + untrusted.stderr


def test_a_worker_behind_nginx_runs_a_deployment_and_its_logs_and_events_arrive(
    front, server, deployed
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    env = front.env()
    # Everything is read back from the server itself, not through nginx.
    with (
        temporary_settings({PREFECT_API_URL: server, PREFECT_API_AUTH_STRING: AUTH}),
        stack.worker(POOL, env, front.work),
    ):
        run_id = stack.deployment_run(deployed, env)
        flow_run = stack.wait_for_final_state(run_id, timeout=120)
        worker_log = (front.work / f"worker-{POOL}.log").read_text()[-3000:]
        assert flow_run.state.is_completed(), f"{flow_run.state.message}\n{worker_log}"
        assert flow_run.work_pool_name == POOL
        # The flow's process sends its last logs and events after the final state: the worker
        # (its parent) stays up until they are in.
        stack.wait_until(
            lambda: "said 'hello, nginx' through nginx" in log_messages(server, run_id),
            timeout=30,
            what="the flow's own log line",
        )
        # Client-side events, sent by the flow's process over the websocket /api/events/in:
        # the task's state changes and the flow's own event.
        client_side = {"prefect.task-run.Completed", "investflow.test.greeted"}
        stack.wait_until(
            lambda: client_side <= events_of(server, run_id), timeout=30, what=str(client_side)
        )

        # The server records task runs from those events alone.
        only_this = FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        with get_client(sync_client=True) as client:
            task_runs = stack.wait_until(
                lambda: client.read_task_runs(flow_run_filter=only_this),
                timeout=30,
                what="the task run, recorded from its events",
            )
    assert [(t.task_key.split("-")[0], t.state_name) for t in task_runs] == [("greet", "Completed")]
    # nginx saw it all itself: the worker's polling, and the websocket upgrades (101 Switching
    # Protocols) on /api/events/in.
    access = (front.work / "access.log").read_text().splitlines()
    assert any(f"POST /api/work_pools/{POOL}/get_scheduled_flow_runs " in line for line in access)
    assert any('GET /api/events/in HTTP/1.1" 101 ' in line for line in access), access[-30:]


def test_without_the_auth_string_nginx_answers_401_and_plain_http_is_redirected(front):
    # Prefect's own 401 comes through; only the probes stay open.
    assert get(front, "/api/health").status_code == 200
    assert get(front, "/api/admin/version").status_code == 401
    assert get(front, "/api/admin/version", auth="admin:wrong").status_code == 401
    assert get(front, "/api/admin/version", auth=AUTH).status_code == 200
    # HSTS on every answer, a refusal included ("always").
    assert "Strict-Transport-Security" in get(front, "/api/admin/version").headers

    redirect = httpx.get(
        f"{front.http}/api/health?x=1", headers={"Host": HOST}, timeout=10, follow_redirects=False
    )
    assert redirect.status_code == 301
    assert redirect.headers["Location"] == f"{front.https}/api/health?x=1"

    no_auth = subprocess.run(
        [str(stack.BIN / "prefect"), "work-pool", "ls"],
        env=front.env(PREFECT_API_AUTH_STRING=""), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert no_auth.returncode != 0
    assert "401" in no_auth.stdout + no_auth.stderr
