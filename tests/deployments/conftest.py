"""Fixtures for the deployment tests: nginx and systemd-analyze, installed under CI if missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI

# /usr/sbin is not on every user's PATH, and that is where Debian puts nginx.
_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
_POLICY = Path("/usr/sbin/policy-rc.d")


@pytest.fixture(scope="session")
def nginx() -> str:
    """The nginx binary: the one installed here, or under CI (as root) Debian's, installed now."""
    if found := shutil.which("nginx", path=_SEARCH):
        return found
    nginx = debian_tool("nginx", "nginx")
    # An init that ignores policy-rc.d may have started Debian's nginx all the same: stop it,
    # so nothing is left on port 80.
    if Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "disable", "--now", "nginx"], capture_output=True, timeout=60)
    elif Path("/run/nginx.pid").exists():
        subprocess.run([nginx, "-s", "quit"], capture_output=True, timeout=60)
    return nginx


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    """systemd-analyze, which checks unit files without a running systemd."""
    return debian_tool("systemd-analyze", "systemd")


def debian_tool(binary: str, package: str) -> str:
    """binary's path; missing, under CI as root it is installed, elsewhere the test skips."""
    if found := shutil.which(binary, path=_SEARCH):
        return found
    how = f"Install it (`apt-get install {package}`) or run as root with CI=true, which does."
    if not IN_CI:
        pytest.skip(f"{binary} is not installed. {how}")
    if os.geteuid() != 0:
        pytest.fail(f"{binary} is not installed and only root can install it. {how}", pytrace=False)
    _apt_install(package)
    if found := shutil.which(binary, path=_SEARCH):
        return found
    pytest.fail(f"apt-get installed {package}, but no {binary} is on PATH or in /usr/sbin")


def _apt_install(package: str) -> None:
    """`apt-get install package`, starting none of the services it brings."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    ours = not _POLICY.exists()
    if ours:  # exit 101 tells a package's post-install script not to start its service
        _POLICY.write_text("#!/bin/sh\n# investflow tests: start no service now\nexit 101\n")
        _POLICY.chmod(0o755)
    try:
        proc = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode:  # a fresh machine has no package lists yet
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            proc = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode:
            pytest.fail(f"apt-get install {package} failed:\n{proc.stderr[-2000:]}", pytrace=False)
    finally:
        if ours:
            _POLICY.unlink()
