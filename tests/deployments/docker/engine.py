"""A docker engine for the tests, and the project's images built on it as a user builds them.

This machine has the docker client and no engine, and reaches no image registry. As root, the
engine is Debian's docker.io (installed under CI=true when missing), started with
`--bridge=none --iptables=false`: containers use the host network only, so they reach the
session's Prefect server, PostgreSQL and the stand-ins on loopback and nothing else. The
python:3.11-slim base is made once per machine by base_image.sh (debootstrap plus this
machine's CPython) and kept by the engine; the torch wheel comes from a PEP 503 index served
here from the folder PIP_FIND_LINKS names, passed as the Dockerfiles' TORCH_INDEX_URL.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
BASE_IMAGE = "python:3.11-slim"
IMAGES = ("ingestion", "cpu", "gpu")
TAG = "test"
LOG_DIR = Path(tempfile.gettempdir()) / "investflow-docker"
HOW_TO_RUN = (
    "Run them as root with CI=true (the fixture installs Debian's docker.io and starts "
    "dockerd), or start a docker engine yourself."
)


class Unavailable(RuntimeError):
    """No docker engine can be had here; the message says why and how to get one."""


def docker(
    *args: str, timeout: float = 600, check: bool = True, **kw
) -> subprocess.CompletedProcess:
    """Run the docker client; fail with its output when check and it exits non-zero."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args[:3])} ... exited {proc.returncode}\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def _engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    return docker("info", "--format", "{{.ServerVersion}}", timeout=30, check=False).returncode == 0


def _apt_install(*packages: str) -> None:
    """apt-get install, updating the package lists first if they are stale or missing."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)


@contextlib.contextmanager
def engine(in_ci: bool) -> Iterator[None]:
    """A running docker engine for the block; one this started is stopped at its end."""
    if _engine_answers():
        yield
        return
    if os.geteuid() != 0:
        raise Unavailable(f"No docker engine answers and this is not root. {HOW_TO_RUN}")
    if not shutil.which("dockerd") or not shutil.which("debootstrap"):
        if not in_ci:
            raise Unavailable(
                f"dockerd or debootstrap is not installed (apt-get install docker.io "
                f"debootstrap). {HOW_TO_RUN}"
            )
        _apt_install("docker.io", "debootstrap")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / "dockerd.log", "ab")
    proc = subprocess.Popen(
        ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while not _engine_answers():
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(
                    "dockerd did not start:\n" + (LOG_DIR / "dockerd.log").read_text()[-3000:]
                )
            time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def ensure_base_image() -> str:
    """python:3.11-slim: the registry's when one was pulled, else our stand-in (made once)."""
    if docker("image", "inspect", BASE_IMAGE, check=False, timeout=30).returncode != 0:
        subprocess.run(
            ["bash", str(HERE / "base_image.sh"), BASE_IMAGE],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
    return BASE_IMAGE


@contextlib.contextmanager
def torch_index() -> Iterator[str]:
    """A PEP 503 index of the torch wheel(s) in PIP_FIND_LINKS, on loopback: its /simple URL.

    What a user's mirror of PyTorch's index is; builds reach it over the host network.
    """
    wheels = Path(os.environ.get("PIP_FIND_LINKS", "/opt/wheels"))
    found = sorted(wheels.glob("torch-2.13.0*.whl"))
    if not found:
        raise Unavailable(f"no torch 2.13.0 wheel in {wheels} (PIP_FIND_LINKS)")
    root = Path(tempfile.mkdtemp(prefix="investflow-torch-index-"))
    (root / "simple" / "torch").mkdir(parents=True)
    for wheel in found:
        (root / "simple" / "torch" / wheel.name).symlink_to(wheel)
    handler = functools.partial(_QuietHandler, directory=str(root))
    try:
        # A fixed address (devpi's port), because the URL is a build argument and so part of
        # the cache key of the torch layer: a new port each session would rebuild it.
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 3141), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(root, ignore_errors=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # pip's requests are not the test's output
        pass


def build(
    images: str, tag: str, context: Path = ROOT, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    """`make images` (deployments/docker/build.sh) for images, tagged tag: result, seconds."""
    env = {**os.environ, "IMAGES": images, "TAG": tag, **(env or {})}
    env.pop("REGISTRY", None)
    started = time.perf_counter()
    proc = subprocess.run(
        ["bash", str(context / "deployments/docker/build.sh")],
        cwd=context, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    return proc, time.perf_counter() - started


def image_size(tag: str) -> int:
    return int(docker("image", "inspect", tag, "--format", "{{.Size}}").stdout.strip())


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container).stdout)[0]
