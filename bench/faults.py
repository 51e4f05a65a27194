"""Bench: the desktop asleep, and cut off from the server, mid-prediction, on namespaced hosts.

Run (as root, `ip netns` available): .venv/bin/python bench/faults.py [--reps 5]
About 2.5 minutes a repetition of each fault, mostly the 90 s heartbeat window; writes
bench/results/faults.json.

The platform of tests/topology (server on the aws host, the data node's own PostgreSQL and
Redis, a process worker per pool on its own host, the production automations and prefect.yaml
triggers, the alert webhook stand-in). A promoted tiny model is trained first. Each repetition:
a clean predict-returns on the desktop (the floor: what the job takes when nothing happens),
then the same run with the fault landing as the run starts (its Running state seen):
  sleep      every process on the desktop SIGSTOPped (a closed lid), thawed after recovery;
  partition  the desktop's link down (route lost), back up after recovery.
Per repetition: seconds from the fault to the operator's first alert ("gpu-desktop has no live
worker"), to the run known gone (Crashed by the zombie rule), to recovery (the CPU fallback run
Completed); runs lost (no predictions written), duplicated runs (more than one run wrote
predictions), duplicated rows (rows beyond one per symbol), and the alerts received: wanted
(one "no live worker", one "back") and noise (anything else).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import IN_CI  # noqa: E402,F401 - sets this process's Prefect env first
from tests.deployments import stack  # noqa: E402
from tests.topology import hosts  # noqa: E402
from tests.topology.conftest import running_platform  # noqa: E402
from tests.topology.faults import (  # noqa: E402
    ensure_promoted_model,
    flow_run,
    runs_of,
    table,
    truncate,
    writers,
)

OUT = ROOT / "bench" / "results" / "faults.json"
SYMBOLS = 6
TINY = ["market=US", "hidden=16", "batch_size=256", "val_sessions=40", "threads=1"]
GONE = {"Crashed", "Resubmitted", "Cancelled"}


def clean_run(platform) -> float:
    truncate(platform["engine"], "predictions", "ingest_batches")
    started = time.monotonic()
    run_id = stack.deployment_run("predict-returns/predict-returns", platform["env"], "market=US")
    assert stack.wait_for_final_state(run_id, timeout=300).state.is_completed()
    return time.monotonic() - started


def faulted_run(platform, fault: str) -> dict:
    topo, webhook, engine = platform["topo"], platform["webhook"], platform["engine"]
    truncate(engine, "predictions", "ingest_batches")
    seen = len(webhook.texts())
    down_before = len(webhook.matching("gpu-desktop has no live worker"))
    back_before = len(webhook.matching("gpu-desktop has a live worker again"))
    fallbacks_before = {r.id for r in runs_of("predict-returns-cpu")}
    run_id = stack.deployment_run("predict-returns/predict-returns", platform["env"], "market=US")
    stack.wait_until(lambda: flow_run(run_id).state_name == "Running", 240, "Running", 0.1)
    start = time.monotonic()
    (topo.freeze if fault == "sleep" else topo.cut)("desktop")
    alert_s = gone_s = recovered_s = None
    try:
        while time.monotonic() - start < 400 and recovered_s is None:
            now = time.monotonic() - start
            if (
                alert_s is None
                and len(webhook.matching("gpu-desktop has no live worker")) > down_before
            ):
                alert_s = now
            if gone_s is None and flow_run(run_id).state_name in GONE:
                gone_s = now
            new = [r for r in runs_of("predict-returns-cpu") if r.id not in fallbacks_before]
            if new and all(r.state_name == "Completed" for r in new):
                recovered_s = now
            time.sleep(0.5)
    finally:
        (topo.thaw if fault == "sleep" else topo.heal)("desktop")
    stack.wait_until(
        lambda: len(webhook.matching("gpu-desktop has a live worker again")) > back_before,
        120,
        "the back alert",
    )
    time.sleep(20)  # the stale process, awake again, has had its chance to write
    texts = webhook.texts()[seen:]
    wanted = [t for t in texts if "gpu-desktop has" in t]
    rows = table(engine, "predictions", ["symbol"])
    wrote = writers(engine, "predictions")
    fallbacks = [r for r in runs_of("predict-returns-cpu") if r.id not in fallbacks_before]
    return {
        "fault_to_alert_s": alert_s,
        "fault_to_known_gone_s": gone_s,
        "fault_to_recovery_s": recovered_s,
        "runs_lost": int(len(rows) == 0),
        "duplicated_runs": max(0, len(set(wrote)) - 1),
        "duplicated_rows": max(0, len(rows) - SYMBOLS),
        "fallback_runs": len(fallbacks),
        "alerts_wanted": min(len(wanted), 2),
        "alerts_noise": len(texts) - min(len(wanted), 2),
        "alert_texts": texts,
        "desktop_run_final_state": flow_run(run_id).state_name,
    }


def summary(reps: list[dict], floor: list[float]) -> dict:
    def stat(key):
        values = [r[key] for r in reps if r[key] is not None]
        return {
            "median": round(statistics.median(values), 1) if values else None,
            "max": round(max(values), 1) if values else None,
            "missing": len(reps) - len(values),
        }

    recovery = stat("fault_to_recovery_s")
    clean = statistics.median(floor)
    return {
        "repetitions": len(reps),
        "fault_to_alert_s": stat("fault_to_alert_s"),
        "fault_to_known_gone_s": stat("fault_to_known_gone_s"),
        "fault_to_recovery_s": recovery,
        "clean_run_s_median": round(clean, 1),
        "recovery_vs_clean_run": round(recovery["median"] / clean, 1)
        if recovery["median"]
        else None,
        "runs_lost": sum(r["runs_lost"] for r in reps),
        "duplicated_runs": sum(r["duplicated_runs"] for r in reps),
        "duplicated_rows": sum(r["duplicated_rows"] for r in reps),
        "alerts_wanted": sum(r["alerts_wanted"] for r in reps),
        "alerts_wanted_expected": 2 * len(reps),
        "alerts_noise": sum(r["alerts_noise"] for r in reps),
    }


def save(results: dict) -> None:
    """Merge into faults.json: a run of one fault (--faults sleep) keeps the other's figures."""
    kept = json.loads(OUT.read_text()) if OUT.exists() else {}
    for key in ("faults", "reps"):
        kept[key] = {**kept.get(key, {}), **results[key]}
    kept.update({k: v for k, v in results.items() if k not in ("faults", "reps")})
    OUT.write_text(json.dumps(kept, indent=2, default=str) + "\n")


def main(argv=None) -> dict:  # noqa: C901 - one bench, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--faults", nargs="+", default=["sleep", "partition"])
    args = parser.parse_args(argv)
    if why := hosts.unavailable():
        raise SystemExit(f"bench/faults.py: {why}")
    from deployments.alert_rules import ZOMBIE_AFTER
    from tasks.store.upsert import upsert_frame
    from tests.tasks.models.test_features import synthetic_prices

    results: dict = {"faults": {}, "reps": {}}
    with running_platform() as platform:
        engine = platform["engine"]
        upsert_frame(engine, "daily_prices", synthetic_prices(symbols=SYMBOLS, sessions=260))
        ensure_promoted_model(platform, TINY)
        floor: list[float] = []
        for fault in args.faults:
            results["reps"][fault] = []
        for rep in range(args.reps):
            for fault in args.faults:
                floor.append(clean_run(platform))
                measured = faulted_run(platform, fault)
                results["reps"][fault].append(measured)
                print(fault, rep + 1, {k: v for k, v in measured.items() if k != "alert_texts"})
                for name, reps in results["reps"].items():  # kept after every repetition
                    if reps:
                        results["faults"][name] = summary(reps, floor)
                results["netem_delays"] = platform["topo"].delays
                results["zombie_window_s"] = int(ZOMBIE_AFTER.total_seconds())
                results["load_average"] = os.getloadavg()
                save(results)
    print(json.dumps(results["faults"], indent=2))
    return results


if __name__ == "__main__":
    main()
