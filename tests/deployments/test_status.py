"""`make status` against the local stack, as an operator runs it (no PREFECT_API_URL set)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from urllib.parse import urlsplit

from tasks.settings import PROJECT_ROOT


def make_status(port: int) -> subprocess.CompletedProcess:
    """`make status` for a stack on port: the operator's shell sets no PREFECT_* variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["INVESTFLOW_PREFECT_PORT"] = str(port)
    return subprocess.run(
        [sys.executable, "-m", "deployments.status"],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_make_status_with_the_stack_down_says_the_server_is_not_answering():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = make_status(port)
    # Not a server of the client's own making reported as up, with last-seen workers online.
    assert f"http://127.0.0.1:{port}/api: NOT ANSWERING" in out.stdout, out.stdout + out.stderr
    assert "worker(s) online" not in out.stdout
    assert out.returncode == 1


def test_make_status_with_the_server_up_reads_that_server(prefect_server):
    port = urlsplit(prefect_server).port
    out = make_status(port)
    assert f"http://127.0.0.1:{port}/api: up" in out.stdout, out.stdout + out.stderr
    assert "Work pools" in out.stdout and out.returncode == 0
