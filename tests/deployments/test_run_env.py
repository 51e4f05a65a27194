"""Every run, on every route, sends heartbeats and rides out a server restart, whatever its
`env` job variable says: a run given its own env (the UI's job variables, `-jv env=...`)
replaces the pool's env, so the settings also live in each image and in each worker's env."""

from __future__ import annotations

import re

import pytest

from deployments.pools import RUN_ENV
from tests.deployments.stack import ROOT

DOCKERFILES = sorted((ROOT / "deployments/docker").glob("Dockerfile.*"))


def image_env(dockerfile) -> dict[str, str]:
    text = dockerfile.read_text().replace("\\\n", " ")
    found = {}
    for line in re.findall(r"^ENV (.+)$", text, re.M):
        found.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return found


def test_the_run_settings_are_the_heartbeat_and_the_api_retries():
    assert RUN_ENV == {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30", "PREFECT_CLIENT_MAX_RETRIES": "7"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_image_carries_them(dockerfile):
    env = image_env(dockerfile)
    assert {k: env.get(k) for k in RUN_ENV} == RUN_ENV


def test_every_installed_worker_and_the_local_stack_pass_them_on(monkeypatch):
    from deployments.local_stack import stack_env

    for key in RUN_ENV:
        monkeypatch.delenv(key, raising=False)
    template = (ROOT / "deployments/services/common.env.in").read_text()
    assert all(f"\n{k}={v}\n" in template for k, v in RUN_ENV.items())
    assert {k: stack_env()[k] for k in RUN_ENV} == RUN_ENV
