"""A host cut off from the server (its link down) mid-run, shorter and longer than the windows.

Shorter than the pool's liveness window (three missed worker heartbeats): the run finishes as
if nothing happened and the operator hears nothing. Longer than the run's heartbeat window:
the run is Crashed by the zombie rule, the prediction falls back to the CPU route, the cut
host's stale process writes nothing once the link is back, and the operator hears "no live
worker" once and "back" once. Either way the store equals a clean run's.
"""

from __future__ import annotations

import time

import pytest

from deployments.alert_rules import HEARTBEAT, ZOMBIE_AFTER
from tests.deployments import stack
from tests.topology.faults import (
    ensure_promoted_model,
    logs_of,
    pool_alerts,
    runs_of,
    table,
    truncate,
    wait_state,
    writers,
)
from tests.topology.test_sleep import TINY, prices  # noqa: F401 - the module's fixture

pytestmark = [pytest.mark.topology, pytest.mark.integration, pytest.mark.slow]

COLUMNS = ["model_version", "symbol", "as_of", "horizon", "predicted_return", "up_probability"]


@pytest.fixture(scope="module")
def clean(platform, prices):  # noqa: F811
    """A promoted model, and the predictions of a run nothing happened to."""
    env = platform["env"]
    ensure_promoted_model(platform, TINY)
    truncate(prices, "predictions", "ingest_batches")
    run_id = stack.deployment_run("predict-returns/predict-returns", env, "market=US")
    assert stack.wait_for_final_state(run_id, timeout=300).state.is_completed()
    return table(prices, "predictions", ["symbol"])[COLUMNS]


def test_a_fresh_start_sends_no_back_alert(platform):
    # Five pools went ready when the workers first polled: nothing was ever down.
    assert not [t for t in platform["startup_texts"] if "live worker again" in t]


def test_cut_off_briefly_the_run_completes_once_and_nobody_is_paged(platform, prices, clean):  # noqa: F811
    env, topo, webhook = platform["env"], platform["topo"], platform["webhook"]
    truncate(prices, "predictions", "ingest_batches")
    before = len(webhook.texts())
    run_id = stack.deployment_run("predict-returns/predict-returns", env, "market=US")
    wait_state(run_id, {"Running"}, timeout=240, interval=0.1)
    topo.cut("desktop")
    time.sleep(8)  # under three 5 s worker heartbeats
    topo.heal("desktop")
    final = stack.wait_for_final_state(run_id, timeout=300)
    assert final.state.is_completed() and final.run_count == 1, final.state
    assert table(prices, "predictions", ["symbol"])[COLUMNS].equals(clean)
    assert writers(prices, "predictions") == [str(run_id)]
    assert not [r for r in runs_of("predict-returns-cpu") if r.parameters.get("replaces")
                == str(run_id)]  # fmt: skip
    time.sleep(30)  # a late "no live worker" would be here by now
    assert webhook.texts()[before:] == []


def test_cut_off_past_the_heartbeat_window_the_cpu_fallback_writes_once(platform, prices, clean):  # noqa: F811
    env, topo, webhook = platform["env"], platform["topo"], platform["webhook"]
    truncate(prices, "predictions", "ingest_batches")
    down_before, back_before = (len(a) for a in pool_alerts(webhook, "gpu-desktop"))
    run_id = stack.deployment_run("predict-returns/predict-returns", env, "market=US")
    wait_state(run_id, {"Running"}, timeout=240, interval=0.1)
    cut = time.monotonic()
    topo.cut("desktop")
    try:
        wait_state(run_id, {"Crashed", "Resubmitted", "Cancelled"}, timeout=240, interval=1)
        known_gone_s = time.monotonic() - cut
        fallback = stack.wait_until(
            lambda: [r for r in runs_of("predict-returns-cpu") if r.parameters.get("replaces")
                     == str(run_id)],
            timeout=60,
            what="the CPU fallback run",
        )[0]  # fmt: skip
        assert stack.wait_for_final_state(fallback.id, timeout=300).state.is_completed()
        stack.wait_until(
            lambda: len(pool_alerts(webhook, "gpu-desktop")[0]) > down_before,
            timeout=60,
            what="the gpu-desktop 'no live worker' alert",
        )
    finally:
        topo.heal("desktop")
    assert known_gone_s <= (ZOMBIE_AFTER + HEARTBEAT).total_seconds() + 30 + 60
    stack.wait_until(
        lambda: len(pool_alerts(webhook, "gpu-desktop")[1]) > back_before,
        timeout=120,
        what="the gpu-desktop 'back' alert",
    )
    time.sleep(20)  # the stale process, reconnected, is refused (or died with its link)
    written = table(prices, "predictions", ["symbol"])
    assert writers(prices, "predictions") == [str(fallback.id)]  # one set, from the fallback
    # Computed on another machine from the same model and prices: the same predictions.
    assert written[COLUMNS].equals(clean)
    assert flow_state(run_id) == "Cancelled"
    down, back = pool_alerts(webhook, "gpu-desktop")
    assert (len(down) - down_before, len(back) - back_before) == (1, 1), webhook.texts()
    assert "not writing" in logs_of(run_id) or "Completed" not in logs_of(run_id)


def flow_state(run_id) -> str:
    from tests.topology.faults import flow_run

    return flow_run(run_id).state_name
