"""The automations' definitions: windows from prefect.yaml, which crashes resubmit or alert."""

from __future__ import annotations

import datetime as dt
import fnmatch
import uuid

from deployments.alert_rules import TAG, cadences, desired

H = dt.timedelta(hours=1)


def by_name(automations):
    return {a.name.removeprefix("investflow: "): a for a in automations}


def test_every_scheduled_deployment_is_expected_within_its_longest_gap_plus_grace():
    windows = {c.deployment: c.window for c in cadences(grace=H)}
    assert windows["us-prices"] == 73 * H  # Saturday's run, then Tuesday's
    assert windows["kr-prices"] == 73 * H
    assert windows["universes-us"] == windows["universes-kr"] == 73 * H
    assert "us-market-prices" not in windows  # started by the operator
    assert windows["macro"] == 49 * H  # Friday 23:00 to Sunday 23:00
    assert windows["backup-postgres"] == 25 * H
    assert windows["verify-backups"] == windows["train-model"] == 169 * H
    assert windows["health-page"] == 2 * H
    assert "launch-a1-instance" not in windows  # paused until configured
    assert "predict-returns" not in windows  # triggered, no clock


def run_count_matches(automation, count: int) -> bool:
    patterns = automation.trigger.match.root["prefect.run-count"]
    patterns = [patterns] if isinstance(patterns, str) else patterns
    return any(fnmatch.fnmatchcase(str(count), p) for p in patterns)


def test_a_crash_is_resubmitted_twice_then_alerted_never_both():
    rules = by_name(desired(uuid.uuid4(), "https://ui.example"))
    resubmit = rules["resubmit a crashed run"]
    alert = rules["alert on a crashed run that will not be resubmitted"]
    for count in range(0, 13):
        resubmitted, alerted = run_count_matches(resubmit, count), run_count_matches(alert, count)
        assert resubmitted != alerted, count
        assert resubmitted == (count in (1, 2)), count


def test_every_automation_is_named_described_and_notifies_the_given_block():
    block = uuid.uuid4()
    made = desired(block, "https://ui.example")
    assert len({a.name for a in made}) == len(made)
    for automation in made:
        assert automation.name.startswith("investflow: ") and automation.description
        # Applying deletes only tagged ones: prefect.yaml's deployment triggers are not.
        assert automation.tags == [TAG]
        for action in automation.actions:
            if action.type == "send-notification":
                assert action.block_document_id == block
    failed = by_name(made)["alert on a failed or timed-out run"].actions[0]
    assert "https://ui.example/runs/flow-run/{{ flow_run.id }}" in failed.body
    assert "prefect.state-message" in failed.body and "deployment.name" in failed.subject


def test_runs_stopped_by_make_down_are_neither_resubmitted_nor_alerted():
    rules = by_name(desired(uuid.uuid4(), "https://ui.example"))
    message = "Stopped by `make down` while it ran or waited for a retry."
    for name in ("resubmit a crashed run", "alert on a crashed run that will not be resubmitted"):
        (pattern,) = rules[name].trigger.match.root["prefect.state-message"]
        assert pattern.startswith("!")
        assert fnmatch.fnmatchcase(message, pattern[1:])  # so the negation excludes it
        assert not fnmatch.fnmatchcase("container exited with 137", pattern[1:])
