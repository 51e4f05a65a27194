"""Right after `make up` returns, a deployment run starts promptly on the embedded SQLite server.

`make up` (deployments.local_stack up) in a clone of HEAD sharing this checkout's .venv, then
at once `prefect deployment run`, as the README tells a newcomer to do: the run is created and
started within a bound, and the server logs no `database is locked` after make up returned.
The newcomer's Prefect profile names another server: make up sets up its own all the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deployments import stack

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

CREATE_BOUND_S = 60  # the CLI's own start is ~10 s on a loaded machine here
START_BOUND_S = 120  # the oracle-mumbai worker polls every 5 s


def local_env(port: int) -> dict[str, str]:
    """A shell without the test session's Prefect or investflow settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "INVESTFLOW_"))}
    env.update(INVESTFLOW_PREFECT_PORT=str(port))
    return env


@pytest.fixture
def clone(tmp_path):
    clone = tmp_path / "investflow"
    subprocess.run(["git", "clone", "-q", str(stack.ROOT), str(clone)], check=True, timeout=120)
    (clone / ".venv").symlink_to(Path(sys.prefix))
    port = stack.free_port()
    env = local_env(port)
    # The user's own Prefect profile names another server (here a closed loopback port): make
    # up's own client (blocks, limits, pools, automations) must still talk to the stack's.
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        'active = "elsewhere"\n\n[profiles.elsewhere]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n'
    )
    env["PREFECT_PROFILES_PATH"] = str(profiles)
    python = str(clone / ".venv/bin/python")
    try:
        yield {"dir": clone, "env": env, "python": python, "port": port}
    finally:
        subprocess.run([python, "-m", "deployments.local_stack", "down"], cwd=clone, env=env,
                       capture_output=True, timeout=180)  # fmt: skip


def test_a_run_issued_right_after_make_up_starts_promptly(clone):
    up = subprocess.run(
        [clone["python"], "-m", "deployments.local_stack", "up"],
        cwd=clone["dir"], env=clone["env"], capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    assert "every pool and deployment ready" in up.stdout, up.stdout
    server_log = clone["dir"] / ".prefect/logs/server.log"
    logged_before = server_log.stat().st_size
    api = f"http://127.0.0.1:{clone['port']}/api"
    env = {**clone["env"], "PREFECT_API_URL": api, "PREFECT_HOME": str(clone["dir"] / ".prefect")}
    began = time.monotonic()
    created = subprocess.run(
        [str(clone["dir"] / ".venv/bin/prefect"), "deployment", "run", "health-page/health-page"],
        cwd=clone["dir"], env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    took = time.monotonic() - began
    assert created.returncode == 0, created.stdout + created.stderr
    assert took < CREATE_BOUND_S, f"prefect deployment run took {took:.0f} s"
    run_id = stack.UUID_RE.search(created.stdout).group(0)

    def started():
        import json
        import urllib.request

        with urllib.request.urlopen(f"{api}/flow_runs/{run_id}", timeout=10) as resp:
            return json.loads(resp.read()).get("start_time")

    stack.wait_until(started, START_BOUND_S, "the run to start", interval=1)
    # Under load the workers' first contact can still hold SQLite's write lock for a minute,
    # but inside `make up` (which waits it out), never after it returned.
    with open(server_log, "rb") as log:
        log.seek(logged_before)
        assert b"database is locked" not in log.read()
