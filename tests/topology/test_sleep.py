"""The desktop sleeps mid-run (every process on it SIGSTOPped, as a closed lid) and wakes later.

What holds: the server knows the run is gone within the zombie rule's bound (three missed
30 s heartbeats, deployments/alert_rules.py); the crashed run is resubmitted, and a prediction
falls back to the CPU route; the woken stale process writes nothing (flows/models.py
ensure_run_is_ours); the operator hears "no live worker" once and "back" once.
"""

from __future__ import annotations

import time

import pytest

from deployments.alert_rules import HEARTBEAT, ZOMBIE_AFTER
from tasks.store.upsert import upsert_frame
from tests.deployments import stack
from tests.tasks.models.test_features import synthetic_prices
from tests.topology.faults import (
    ensure_promoted_model,
    logs_of,
    pool_alerts,
    runs_of,
    table,
    truncate,
    wait_heartbeat,
    wait_state,
    writers,
)

pytestmark = [pytest.mark.topology, pytest.mark.integration, pytest.mark.slow]

TINY = ["market=US", "hidden=16", "batch_size=256", "val_sessions=40", "threads=1"]
# Known gone: the last heartbeat (sent at most one interval before the lid closed) plus the
# rule's window, plus the server's periodic evaluation and this poll.
KNOWN_GONE_BOUND_S = (ZOMBIE_AFTER + HEARTBEAT).total_seconds() + 30


@pytest.fixture(scope="module")
def prices(platform):
    engine = platform["engine"]
    truncate(engine, "daily_prices", "model_versions", "predictions")
    upsert_frame(engine, "daily_prices", synthetic_prices(symbols=6, sessions=260, phi=-0.5))
    return engine


def sleep_until_known_gone(platform, run_id, heard: bool = True):
    """Close the desktop's lid mid-run; return seconds until the server had the run Crashed.

    heard: only once the server has had a heartbeat of the run; without, the lid closes as
    soon as the run is Running, before its first heartbeat can go out.
    """
    topo = platform["topo"]
    if heard:
        wait_heartbeat(topo.api_url, run_id)
    frozen = time.monotonic()
    assert topo.freeze("desktop")
    wait_state(run_id, {"Crashed", "Resubmitted"}, timeout=KNOWN_GONE_BOUND_S + 60, interval=1)
    return time.monotonic() - frozen


def test_asleep_mid_training_the_run_is_resubmitted_and_the_stale_copy_writes_nothing(
    platform, prices
):
    env, topo, webhook = platform["env"], platform["topo"], platform["webhook"]
    down_before, back_before = (len(a) for a in pool_alerts(webhook, "gpu-desktop"))
    run_id = stack.deployment_run("train-model/train-model", env, *TINY, "epochs=200")
    wait_state(run_id, {"Running"}, timeout=240)
    try:
        known_gone_s = sleep_until_known_gone(platform, run_id)
        # Crashed on its first try: scheduled again for the desktop, which is still asleep.
        assert wait_state(run_id, {"Resubmitted"}, timeout=30).state_name == "Resubmitted"
        stack.wait_until(
            lambda: len(pool_alerts(webhook, "gpu-desktop")[0]) > down_before,
            timeout=120,
            what="the gpu-desktop 'no live worker' alert",
        )
    finally:
        topo.thaw("desktop")
    assert known_gone_s <= KNOWN_GONE_BOUND_S

    # Woken: the stale process finishes its epochs and is refused; the worker runs the
    # resubmitted attempt, which writes the one version.
    stack.wait_until(
        lambda: "not writing" in logs_of(run_id), timeout=180, what="the stale copy's refusal"
    )
    final = stack.wait_for_final_state(run_id, timeout=300)
    assert final.state.is_completed(), final.state.message
    versions = table(prices, "model_versions", ["version"])
    assert len(versions) == 1, versions[["version", "promoted"]]
    assert final.run_count == 2

    stack.wait_until(
        lambda: len(pool_alerts(webhook, "gpu-desktop")[1]) > back_before,
        timeout=120,
        what="the gpu-desktop 'back' alert",
    )
    time.sleep(5)
    down, back = pool_alerts(webhook, "gpu-desktop")
    assert (len(down) - down_before, len(back) - back_before) == (1, 1), webhook.texts()
    assert not webhook.matching(str(run_id))  # resubmitted, not alerted as a failure


def test_asleep_mid_prediction_the_cpu_fallback_writes_the_one_set(platform, prices):
    env, topo, webhook = platform["env"], platform["topo"], platform["webhook"]
    ensure_promoted_model(platform, TINY)
    truncate(prices, "predictions", "ingest_batches")
    down_before, back_before = (len(a) for a in pool_alerts(webhook, "gpu-desktop"))

    run_id = stack.deployment_run("predict-returns/predict-returns", env, "market=US")
    wait_state(run_id, {"Running"}, timeout=240, interval=0.1)
    try:
        known_gone_s = sleep_until_known_gone(platform, run_id, heard=False)
        assert table(prices, "predictions", ["symbol"]).empty, "asleep after it wrote"
        fallback = stack.wait_until(
            lambda: [r for r in runs_of("predict-returns-cpu") if r.parameters.get("replaces")
                     == str(run_id)],
            timeout=60,
            what="the CPU fallback run",
        )[0]  # fmt: skip
        done = stack.wait_for_final_state(fallback.id, timeout=300)
        assert done.state.is_completed(), done.state.message
    finally:
        topo.thaw("desktop")
    assert known_gone_s <= KNOWN_GONE_BOUND_S

    # The desktop's resubmitted attempt was cancelled by the fallback; its stale process,
    # woken, is refused before it writes.
    stack.wait_until(
        lambda: "not writing" in logs_of(run_id), timeout=120, what="the stale copy's refusal"
    )
    time.sleep(5)
    written = table(prices, "predictions", ["symbol"])
    assert len(written) == 6 and set(written.device) == {"cpu"}, written
    assert writers(prices, "predictions") == [str(fallback.id)]  # one set, from the fallback
    assert wait_state(run_id, {"Cancelled"}, timeout=10).state_name == "Cancelled"
    fallbacks = [
        r for r in runs_of("predict-returns-cpu") if r.parameters.get("replaces") == str(run_id)
    ]
    assert len(fallbacks) == 1

    stack.wait_until(
        lambda: len(pool_alerts(webhook, "gpu-desktop")[1]) > back_before,
        timeout=120,
        what="the gpu-desktop 'back' alert",
    )
    down, back = pool_alerts(webhook, "gpu-desktop")
    assert (len(down) - down_before, len(back) - back_before) == (1, 1), webhook.texts()
