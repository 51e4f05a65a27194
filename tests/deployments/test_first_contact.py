"""First contact: `make up`, `make status`, `make up` again and `make down` in a fresh clone.

The clone has no .venv, no ./data, no .prefect: what a newcomer has. It is cloned from this
repository's HEAD (commit before running this locally). It takes a few minutes: the clone
installs its own .venv, as a newcomer's first `make up` does.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_port
from tests.deployments.stack import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POOLS = ["fargate", "gpu-desktop", "oracle-chuncheon", "oracle-mumbai", "oracle-osaka"]


def newcomer_env(port: int, **extra: str) -> dict[str, str]:
    """A shell with none of this test session's Prefect or investflow settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "INVESTFLOW_"))}
    env.pop("XDG_CACHE_HOME", None)  # the session's own, for yfinance; pip keeps its cache
    env.update(INVESTFLOW_PREFECT_PORT=str(port), **extra)
    return env


def make(target: str, clone: Path, env: dict[str, str], timeout: float = 900) -> str:
    done = subprocess.run(
        ["make", target], cwd=clone, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"make {target} exited {done.returncode}:\n{output[-4000:]}"
    assert "Traceback" not in output, output
    return output


def api(port: int, path: str, body: dict | None = None, method: str | None = None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api{path}",
        json.dumps(body).encode() if body is not None else None,
        {"Content-Type": "application/json"},
        method=method,
    )
    for attempt in range(10):
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return json.loads(resp.read() or "null")
        except (urllib.error.HTTPError, TimeoutError) as exc:
            # The server answers 503 while its SQLite database is locked, and may be slow on a
            # busy machine, as Prefect's own client knows: it retries those too.
            if getattr(exc, "code", 503) != 503 or attempt == 9:
                raise
            time.sleep(1)


def deployment(port: int, name: str) -> dict:
    (found,) = api(port, "/deployments/filter", {"deployments": {"name": {"any_": [name]}}})
    return found


def online_workers(port: int, pool: str) -> list[str]:
    workers = api(port, f"/work_pools/{pool}/workers/filter", {})
    return [w["name"] for w in workers if w["status"] == "ONLINE"]


def stack_processes(clone: Path) -> list[str]:
    """Live processes that run from the clone (its server, workers, flow runs)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        text = " ".join(info["cmdline"] or []) + " " + (info["cwd"] or "")
        if str(clone) in text and "pytest" not in text:
            found.append(f"{info['pid']}: {text[:200]}")
    return found


@pytest.fixture
def stalled_source():
    """Yahoo at an address that takes connections and never answers (not even TLS): a run
    that fetches from it stays Running until its timeout."""
    with socket.socket() as sock:
        for _ in range(20):
            address = "127.{}.{}.{}".format(*random.choices(range(2, 250), k=3))
            try:
                sock.bind((address, 443))  # Yahoo is reached on 443 (tasks.market.yahoo)
                break
            except OSError:
                continue
        sock.listen(64)
        yield f"https://{address}"


def test_make_up_twice_then_down_on_a_fresh_clone(tmp_path, stalled_source):
    clone = tmp_path / "investflow"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    port = free_port()
    env = newcomer_env(
        port, INVESTFLOW_YAHOO_BASE_URL=stalled_source, INVESTFLOW_HTTP_TIMEOUT_S="600"
    )
    try:
        first = make("up", clone, env)
        assert "investflow is up." in first
        assert (clone / "data" / "market.db").exists()
        # Five workers start at once on a small machine: give them time to say hello.
        deadline = time.monotonic() + 180
        while not all(online_workers(port, pool) for pool in POOLS):
            if time.monotonic() > deadline:
                logs = {
                    p: (clone / f".prefect/logs/worker-{p}.log").read_text()[-1500:]
                    for p in POOLS
                    if not online_workers(port, p)
                }
                raise AssertionError(f"pools without a live worker after 180 s: {logs}")
            time.sleep(1)

        status = make("status", clone, newcomer_env(port))
        assert f"http://127.0.0.1:{port}/api: up" in status
        for pool in POOLS:
            assert any(line.split()[:2] == [pool, "1"] for line in status.splitlines()), status
        assert "us-prices" in status and "Data freshness" in status

        # The operator sets things on the server: a parameter, and starts the A1 schedule.
        prices = deployment(port, "us-prices")
        api(port, f"/deployments/{prices['id']}", {"parameters": {"symbols": ["AAPL"]}}, "PATCH")
        a1 = deployment(port, "launch-a1-instance")
        (schedule,) = a1["schedules"]
        assert schedule["active"] is False
        path = f"/deployments/{a1['id']}/schedules/{schedule['id']}"
        api(port, path, {"active": True}, "PATCH")
        # ...while prefect.yaml changes us-prices, and a setting changes in the shell.
        yaml_path = clone / "prefect.yaml"
        text = yaml_path.read_text()
        yaml_path.write_text(text.replace("incremental, after the US close.", "after close."))
        env["INVESTFLOW_HTTP_TIMEOUT_S"] = "900"

        second = make("up", clone, env)
        assert "us-prices: prefect.yaml changed, keeping what was set on the server" in second
        assert "restarted (settings changed)" in second
        assert deployment(port, "us-prices")["parameters"] == {"symbols": ["AAPL"]}
        assert deployment(port, "us-prices")["description"].endswith("after close.")
        assert deployment(port, "launch-a1-instance")["schedules"][0]["active"] is True
        # A restarted worker's log keeps what came before.
        assert (clone / ".prefect/logs/worker-fargate.log").read_text().count(
            "make up started"
        ) == 2

        # A run in flight when the stack stops: its source never answers.
        run = api(port, f"/deployments/{prices['id']}/create_flow_run", {})
        deadline = time.monotonic() + 90
        while api(port, f"/flow_runs/{run['id']}")["state"]["type"] != "RUNNING":
            assert time.monotonic() < deadline, api(port, f"/flow_runs/{run['id']}")["state"]
            time.sleep(1)
    finally:
        started = time.monotonic()
        down = make("down", clone, newcomer_env(port), timeout=60)
        took = time.monotonic() - started
    assert took < 15 + 5, f"make down took {took:.0f} s"  # 15 s, plus make's own start
    assert "stopped server" in down and "stopped worker-fargate" in down
    assert not stack_processes(clone)
    with sqlite3.connect(clone / ".prefect" / "prefect.db") as db:
        left = db.execute(
            "SELECT name, state_type, state_name FROM flow_run WHERE state_type IN "
            "('RUNNING', 'PENDING', 'CANCELLING') OR state_name = 'AwaitingRetry'"
        ).fetchall()
        (interrupted,) = db.execute(
            "SELECT state_type FROM flow_run WHERE id = ?", (run["id"],)
        ).fetchone()
    assert not left
    assert interrupted == "CRASHED"


def test_an_exported_api_url_for_another_server_is_refused(tmp_path):
    env = newcomer_env(free_port(), PREFECT_API_URL="http://127.0.0.1:1/api")
    done = subprocess.run(
        [sys.executable, "-m", "deployments.local_stack", "up"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "PREFECT_API_URL is exported as http://127.0.0.1:1/api" in done.stdout
    assert "INVESTFLOW_PREFECT_PORT" in done.stdout and "Traceback" not in done.stdout
