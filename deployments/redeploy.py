"""Deploy what changed in prefect.yaml, keeping what the operator set on the server.

`prefect deploy --all` overwrites every deployment: parameters typed in the UI, a schedule
paused or resumed, job variables. So `make up` deploys only the entries of prefect.yaml that
are new or changed since its last deploy (their digests are kept in .prefect/deployed.json,
with what that deploy left on the server), and after deploying a changed one puts back every
value the operator had changed since. To take prefect.yaml's values over the operator's,
deploy that one by hand: `prefect deploy -n NAME`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from deployments.processes import LOGS, ROOT, STATE

RECORD = STATE / "deployed.json"


@dataclass
class Plan:
    name: str
    action: str  # new, changed, unchanged
    edits: dict = field(default_factory=dict)  # what the operator set on the server since


def yaml_entries(path: Path = ROOT / "prefect.yaml") -> dict[str, dict]:
    """prefect.yaml's deployments by name, with the anchors resolved."""
    return {d["name"]: d for d in yaml.safe_load(path.read_text())["deployments"]}


def digest(entry: dict) -> str:
    return hashlib.sha256(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest()


def snapshot(deployment) -> dict:
    """The values of a deployment that an operator can change from the UI or the CLI."""
    return {
        "parameters": deployment.parameters or {},
        "job_variables": deployment.job_variables or {},
        "paused": bool(deployment.paused),
        "schedules_active": [s.active for s in deployment.schedules],
    }


def operator_edits(now: dict, deployed: dict) -> dict:
    """What differs on the server from what our last deploy left there."""
    edits: dict = {}
    for part in ("parameters", "job_variables"):
        changed = {
            key: value
            for key, value in now[part].items()
            if key not in deployed[part] or deployed[part][key] != value
        }
        if changed:
            edits[part] = changed
    if now["paused"] != deployed["paused"]:
        edits["paused"] = now["paused"]
    if now["schedules_active"] != deployed["schedules_active"]:
        edits["schedules_active"] = now["schedules_active"]
    return edits


def server_deployments(client, names) -> dict:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    found = client.read_deployments(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=list(names)))
    )
    return {d.name: d for d in found}


def plan(client, entries: dict[str, dict], record: dict) -> list[Plan]:
    on_server = server_deployments(client, entries)
    plans = []
    for name, entry in entries.items():
        current = on_server.get(name)
        last = record.get(name)
        if current is None:
            plans.append(Plan(name, "new"))
        elif last and last["digest"] == digest(entry):
            plans.append(Plan(name, "unchanged"))
        elif last:
            plans.append(Plan(name, "changed", operator_edits(snapshot(current), last["deployed"])))
        else:
            # Deployed before we kept records: everything on the server may be the operator's.
            state = snapshot(current)
            plans.append(Plan(name, "changed", {k: v for k, v in state.items() if v}))
    return plans


def reapply(client, deployment, edits: dict) -> None:
    """Put the operator's values back on a deployment prefect deploy just rewrote."""
    from prefect.client.schemas.actions import DeploymentUpdate

    update = {}
    for part in ("parameters", "job_variables"):
        if part in edits:
            update[part] = {**(getattr(deployment, part) or {}), **edits[part]}
    if "paused" in edits:
        update["paused"] = edits["paused"]
    if update:
        client.update_deployment(deployment.id, DeploymentUpdate(**update))
    for schedule, active in zip(deployment.schedules, edits.get("schedules_active", [])):
        if schedule.active != active:
            client.update_deployment_schedule(deployment.id, schedule.id, active=active)


def describe(edits: dict) -> str:
    parts = []
    for part in ("parameters", "job_variables"):
        if part in edits:
            parts.append(f"{part.replace('_', ' ')} {', '.join(sorted(edits[part]))}")
    if "paused" in edits:
        parts.append("paused" if edits["paused"] else "resumed")
    if "schedules_active" in edits:
        states = ["active" if a else "paused" for a in edits["schedules_active"]]
        parts.append(f"schedule {', '.join(states)}")
    return "; ".join(parts)


def deploy(env: dict[str, str], prefect_bin: str) -> list[str]:
    """Deploy what is new or changed; returns the lines make up prints."""
    from prefect.client.orchestration import get_client

    entries = yaml_entries()
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    with get_client(sync_client=True) as client:
        plans = plan(client, entries, record)
        todo = [p for p in plans if p.action != "unchanged"]
        lines = []
        for p in todo:
            kept = f", keeping what was set on the server: {describe(p.edits)}" if p.edits else ""
            lines.append(
                f"{p.name}: {'new' if p.action == 'new' else 'prefect.yaml changed'}{kept}"
            )
        if todo:
            argv = [prefect_bin, "--no-prompt", "deploy"]
            for p in todo:
                argv += ["-n", p.name]
            with open(LOGS / "deploy.log", "ab") as log:
                done = subprocess.run(
                    argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=900
                )
            if done.returncode != 0:
                raise RuntimeError(
                    f"prefect deploy exited {done.returncode} for {', '.join(p.name for p in todo)}"
                    " (details in .prefect/logs/deploy.log)"
                )
            deployed = server_deployments(client, [p.name for p in todo])
            for p in todo:
                record[p.name] = {
                    "digest": digest(entries[p.name]),
                    "deployed": snapshot(deployed[p.name]),
                }
                if p.edits:
                    reapply(client, deployed[p.name], p.edits)
            RECORD.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
        extra = sorted({d.name for d in client.read_deployments()} - set(entries))
    unchanged = sum(p.action == "unchanged" for p in plans)
    lines.append(f"{len(todo)} deployed, {unchanged} unchanged")
    return lines + [f"{name}: on the server, not in prefect.yaml" for name in extra]
