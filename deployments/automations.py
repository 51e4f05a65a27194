"""Alerts and self-healing as Prefect automations, applied idempotently to a server.

    python -m deployments.automations        (also the `automations` step of the bootstrap)

An automation that matches is left alone, one that differs is updated, a missing one is
created, and one tagged "investflow-automation" that deployments/alert_rules.py no longer
defines is deleted. The `investflow-alerts` notification block (saved by `python -m
deployments.blocks`) must exist first; without it only the automations that send nothing are
applied.
"""

from __future__ import annotations

import datetime as dt
import json

from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore

from blocks.names import ALERTS
from deployments.alert_rules import TAG, cadences, desired


def _comparable(automation) -> str:
    core = AutomationCore.model_validate(automation.model_dump())
    dumped = core.model_dump(mode="json", exclude={"trigger": {"id"}})
    return json.dumps(_sorted(dumped), sort_keys=True, default=str)


def _sorted(value):
    """Lists of labels sorted: the trigger's sets come back from the server in any order."""
    if isinstance(value, dict):
        return {k: _sorted(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_sorted(v) for v in value]
        return sorted(items) if all(isinstance(v, str) for v in items) else items
    return value


def apply(automations: list, client, prune: bool = True) -> list[str]:
    """Create, update or leave each automation by name; drop old investflow ones. Report lines."""
    lines = []
    wanted = {a.name for a in automations}
    for automation in automations:
        existing = client.read_automations_by_name(automation.name)
        for extra in existing[1:]:  # a name is an identity here: keep one
            client.delete_automation(extra.id)
        if not existing:
            client.create_automation(automation)
            lines.append(f"automation {automation.name!r}: created")
        elif _comparable(existing[0]) != _comparable(automation):
            client.update_automation(existing[0].id, automation)
            lines.append(f"automation {automation.name!r}: updated")
        else:
            lines.append(f"automation {automation.name!r}: unchanged")
    if prune:
        for old in client.read_automations():
            # Tagged: the deployment triggers of prefect.yaml share the name prefix, not the tag.
            if TAG in (old.tags or []) and old.name not in wanted:
                client.delete_automation(old.id)
                lines.append(f"automation {old.name!r}: deleted (no longer defined)")
    return lines


def apply_automations() -> list[str]:
    """Apply every automation against the configured server, on the investflow-alerts block."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_UI_URL

    from tasks.settings import get_settings

    settings = get_settings()
    with get_client(sync_client=True) as client:
        block = alerts_block(client)
        automations = desired(
            block.id if block else None,
            PREFECT_UI_URL.value() or settings.ui_url,
            dt.timedelta(seconds=settings.alert_late_after_s),
            cadences(grace=dt.timedelta(seconds=settings.alert_overdue_grace_s)),
        )
        lines = []
        if block is None:
            # Nothing to send with yet: keep the resubmits, and say what is missing.
            automations = [a for a in automations if not _notifies(a)]
            lines.append(
                f"alert automations: skipped (no notification block {ALERTS}: set "
                "INVESTFLOW_ALERT_WEBHOOK_URL and run the blocks step)"
            )
        return lines + apply(automations, client, prune=block is not None)


def _notifies(automation) -> bool:
    return any(isinstance(a, SendNotification) for a in automation.actions)


def alerts_block(client):
    """The investflow-alerts block document (whichever notification type), or None."""
    from prefect.exceptions import ObjectNotFound

    for slug in ("discord-webhook", "slack-webhook", "custom-webhook"):
        try:
            return client.read_block_document_by_name(ALERTS, slug)
        except ObjectNotFound:
            continue
    return None


if __name__ == "__main__":
    for line in apply_automations():
        print(line)
