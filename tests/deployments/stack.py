"""Drive a real local stack from tests: servers, `prefect deploy`, workers, CLI runs."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID

from deployments import processes as procs  # imports no Prefect
from tasks.backups.redis.restore import free_port  # imports no Prefect

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def stack_env(**overrides: str) -> dict[str, str]:
    """This process's environment (the session's server) plus what the stack needs."""
    env = os.environ.copy()
    env.update(
        INVESTFLOW_CODE_DIR=str(ROOT),
        # Poll every 2 s rather than 10 s, so triggered runs start promptly in tests.
        PREFECT_WORKER_QUERY_SECONDS="2",
        PREFECT_WORKER_HEARTBEAT_SECONDS="5",
    )
    env.update(overrides)
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 300, cwd: Path = ROOT) -> str:
    """Run a command (from the repository root); fail with its output if it fails."""
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-4000:]}"
        )
    return proc.stdout + proc.stderr


def bootstrap_and_deploy(env: dict[str, str]) -> str:
    """Local process pools, then `prefect deploy --all` of prefect.yaml."""
    run([str(BIN / "python"), "-m", "deployments.bootstrap", "--local", "pools"], env)
    return run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], env, timeout=600)


@contextlib.contextmanager
def worker(
    pool: str,
    env: dict[str, str],
    log_dir: Path,
    limit: int | None = None,
    wrap: Callable[[list[str]], list[str]] | None = None,
    kind: str = "process",
) -> Iterator[subprocess.Popen]:
    """A worker of kind (process, ecs, docker) serving pool until the block ends, started as
    `make up` starts its workers (deployments/local_stack.py).

    limit: at most this many runs at once (`--limit`, as the systemd units pass it); wrap: what
    starts the command (a memory cgroup, tests/deployments/cgroup.py).
    """
    from deployments.pools import worker_command

    log = open(log_dir / f"worker-{pool}.log", "wb")
    args = worker_command(str(BIN / "prefect"), pool, f"test-{pool}", kind, limit)
    # As make up starts it (deployments/processes.py), without recording it in .prefect/pids.
    proc = procs.spawn(wrap(args) if wrap else args, env, log)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


def deployment_run(name: str, env: dict[str, str], *params: str) -> UUID:
    """`prefect deployment run NAME --param k=v ...`; return the new flow run's id."""
    args = [str(BIN / "prefect"), "deployment", "run", name]
    for param in params:
        args += ["--param", param]
    out = run(args, env)
    match = UUID_RE.search(out)
    assert match, out
    return UUID(match.group(0))


def wait_for_final_state(flow_run_id: UUID, timeout: float = 180, settle: float = 0):
    """Poll the API until the run is final; return the run.

    settle: a final state must stay this many seconds. A Crashed run the resubmit rule
    schedules again is final for a moment only; a test expecting its next try passes settle.
    """
    from prefect.client.orchestration import get_client

    deadline = time.time() + timeout
    final_since, final_state = None, None
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state and flow_run.state.is_final():
                if final_state != flow_run.state.id:
                    final_since, final_state = time.time(), flow_run.state.id
                if time.time() - final_since >= settle:
                    return flow_run
            else:
                final_since, final_state = None, None
            if time.time() > deadline:
                raise AssertionError(
                    f"flow run {flow_run_id} still {flow_run.state_name} after {timeout} s"
                )
            time.sleep(1)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll predicate until it returns something truthy; return that."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate a server or worker process, killing it if it does not stop in time."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class ServerProcess:
    """`prefect server start` on a fixed loopback port that a test can kill and start again.

    As the production unit runs it (deployments/server/prefect-server.service): its own
    PREFECT_HOME, database_url (asyncpg for PostgreSQL, or SQLite) and optionally
    PREFECT_SERVER_API_AUTH_STRING. `kill(signal)` then `start()` is what systemd's Restart=
    does after a crash (SIGKILL) or a stop (SIGTERM); the log is appended across restarts.
    """

    def __init__(self, home: Path, database_url: str, auth: str = "", **env: str) -> None:
        self.home, self.port = home, free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.env = os.environ.copy()
        self.env.update(
            PREFECT_HOME=str(home),
            PREFECT_API_URL=self.api_url,
            PREFECT_UI_URL=f"http://127.0.0.1:{self.port}",
            PREFECT_SERVER_DATABASE_CONNECTION_URL=database_url,
            PREFECT_SERVER_UI_ENABLED="false",
            **env,
        )
        if auth:
            self.env["PREFECT_SERVER_API_AUTH_STRING"] = auth
        self.proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def start(self, timeout: float = 180) -> float:
        """Start it and wait until it answers; the seconds that took."""
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_healthy(self.api_url, self.proc, timeout=timeout)
        return time.monotonic() - began

    def kill(self, sig: int = 9, timeout: float = 60) -> None:
        """Send sig to the server's whole process group and wait for it to be gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # as systemd's TimeoutStopSec: then SIGKILL
            os.killpg(self.proc.pid, 9)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def auth_server(home: Path, database_url: str, auth: str) -> Iterator[str]:
    """`prefect server start` on a free loopback port, guarded by auth; yield its API URL.

    As the production unit runs it (see ServerProcess). Its log is printed if the block fails.
    """
    server = ServerProcess(home, database_url, auth)
    try:
        server.start()
        yield server.api_url
    except BaseException:
        print(server.log()[-4000:])
        raise
    finally:
        server.stop()


def wait_healthy(api_url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    def healthy():
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError as exc:
            # An auth-guarded server answers 401 to the unauthenticated probe: it is up.
            return getattr(exc, "code", None) == 401

    wait_until(healthy, timeout, f"the Prefect server at {api_url}")


def apply_alerts(env: dict[str, str], webhook_url: str) -> str:
    """Save the investflow-alerts block for webhook_url, then `bootstrap automations`.

    Only that block: the full blocks step would leave a FRED key and a database URL behind
    for later test modules on the same server.
    """
    from deployments.blocks import ALERTS, BUILDERS
    from tasks.settings import Settings

    block, _ = BUILDERS[ALERTS](Settings(alert_webhook_url=webhook_url, _env_file=None))
    block.save(ALERTS, overwrite=True)
    return run([str(BIN / "python"), "-m", "deployments.bootstrap", "automations"], env)


def remove_alerts() -> None:
    """Delete the investflow automations and the alerts block again."""
    from prefect.client.orchestration import get_client

    from deployments.blocks import ALERTS

    with get_client(sync_client=True) as client:
        for automation in client.read_automations():
            if automation.name.startswith("investflow"):
                client.delete_automation(automation.id)
        block = client.read_block_document_by_name(ALERTS, "custom-webhook")
        client.delete_block_document(block.id)
