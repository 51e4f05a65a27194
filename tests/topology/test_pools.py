"""Every host's worker lost at once, after the server restarted: one alert per pool, each way.

The issue's case: five pools went not-ready within milliseconds on a server that had been
restarted since they last went ready, and the rule (`for_each` on the pool) alerted for one.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.deployments import stack
from tests.topology import hosts
from tests.topology.conftest import pool_statuses
from tests.topology.faults import pool_alerts

pytestmark = [pytest.mark.topology, pytest.mark.integration, pytest.mark.slow]

POOLS = [h.pool for h in hosts.HOSTS.values() if h.pool]


def test_all_five_workers_lost_after_a_server_restart_alert_once_per_pool(platform):
    topo, webhook, env = platform["topo"], platform["webhook"], platform["env"]
    before = {pool: [len(a) for a in pool_alerts(webhook, pool)] for pool in POOLS}

    # An upgrade: the server stops and starts again on its database; the workers ride it out.
    topo.restart_server(env)
    stack.wait_until(lambda: pool_statuses() == {"READY"}, 120, "every pool ready again")

    for proc in platform["workers"].values():  # the five at once
        os.killpg(proc.pid, signal.SIGKILL)

    def all_heard():
        return all(len(pool_alerts(webhook, p)[0]) > before[p][0] for p in POOLS)

    try:
        stack.wait_until(all_heard, 150, "a 'no live worker' alert for every pool", interval=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the webhook received: {webhook.texts()}") from None
    for host in hosts.HOSTS.values():  # the machines' service managers start them again
        if host.pool:
            platform["workers"][host.name] = platform["held"].enter_context(
                stack.worker(host.pool, env, platform["logs"], wrap=topo.wrap(host.name))
            )

    def all_back():
        return all(len(pool_alerts(webhook, p)[1]) > before[p][1] for p in POOLS)

    stack.wait_until(all_back, 120, "a 'back' alert for every pool", interval=1)
    time.sleep(10)
    for pool in POOLS:
        down, back = pool_alerts(webhook, pool)
        assert (len(down) - before[pool][0], len(back) - before[pool][1]) == (1, 1), (
            pool,
            webhook.texts(),
        )
