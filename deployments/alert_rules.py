"""What investflow's automations are: triggers and actions, pure (deployments/automations.py
applies them).

Every automation is named "investflow: ..." with a description, so the UI says what each
does; the notifications go through the `investflow-alerts` notification block, sent by the
Prefect server itself, so no worker is on the path of a failure being heard.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import yaml
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

PREFIX = "investflow: "
# Marks the automations defined here (prefect.yaml's deployment triggers have none), so
# applying can delete the ones no longer defined and only those.
TAG = "investflow-automation"
ROOT = Path(__file__).resolve().parent.parent
# How often a crashed run (Spot interruption, OOM kill, reboot) is submitted again.
RESUBMITS = 2
# A late run alerts after this long; a schedule's run may come this long after its slot.
LATE_AFTER = dt.timedelta(minutes=10)
OVERDUE_GRACE = dt.timedelta(hours=1)
# Every flow run sends a heartbeat this often (the pools' job templates set
# PREFECT_FLOWS_HEARTBEAT_FREQUENCY; 30 s is Prefect's shortest). A run that misses three is
# gone: its machine slept, lost its route, or died with it. The zombie rule marks it Crashed
# then, so it is known gone at most ZOMBIE_AFTER plus one heartbeat after its last sign of life.
HEARTBEAT = dt.timedelta(seconds=30)
ZOMBIE_AFTER = 3 * HEARTBEAT
# A pool back after this long down is not announced (it was alerted as down, and the UI shows it).
BACK_WITHIN = dt.timedelta(days=30)
# Run counts (as the state-change event's label) that exhausted the resubmits, or never ran.
_NOT_RESUBMITTED = ["0", "[3-9]", "[1-9][0-9]*"]

_RUN = "prefect.flow-run.*"
# `make down` marks the runs it interrupts Crashed with this message (deployments/local_stack.py,
# mark_interrupted): the operator stopped them, so they are neither resubmitted nor alerted.
_NOT_STOPPED_BY_HAND = ["!Stopped by `make down`*"]
# The event's own labels say the state the run entered; flow_run is read when the action
# runs, and by then a resubmitted run is Scheduled again.
_STATE = "{{ event.resource['prefect.state-name'] }}"
_MESSAGE = "{{ event.resource['prefect.state-message'] or '(none)' }}"
_WHERE = "{{ flow.name }}/{{ deployment.name if deployment else '(no deployment)' }}"


def _run_link(ui_url: str) -> str:
    return ui_url.rstrip("/") + "/runs/flow-run/{{ flow_run.id }}"


def _notify(block_id, subject: str, body: str) -> SendNotification:
    # The block is set by desired(); a placeholder keeps the definitions free of server ids.
    return SendNotification(block_document_id=block_id or UUID(int=0), subject=subject, body=body)


def run_alerts(block_id, ui_url: str, late_after: dt.timedelta = LATE_AFTER) -> list:
    """Failed, timed out, crashed past its resubmits, late: one message each, sent by the server."""
    link = _run_link(ui_url)
    return [
        failed_alert(link),
        crashed_alert(link),
        resubmit_rule(),
        late_alert(link, late_after),
        zombie_rule(),
    ]


def _run_ended(link: str) -> SendNotification:
    """The message of a run that ended badly: where, which state, its message, its pool."""
    body = "\n".join(
        [
            f"Flow run {{{{ flow_run.name }}}} of {_WHERE} ended {_STATE}"
            " (attempt {{ event.resource['prefect.run-count'] }}).",
            f"Message: {_MESSAGE}",
            "Pool: {{ flow_run.work_pool_name or '(none)' }}",
            f"Run: {link}",
        ]
    )
    return _notify(None, f"investflow: {_WHERE} {_STATE}", body)


def failed_alert(link: str) -> AutomationCore:
    """Any run that ends Failed or TimedOut: one message."""
    return AutomationCore(
        name=PREFIX + "alert on a failed or timed-out run",
        description="Any flow run that ends Failed or TimedOut posts one message (flow, "
        "deployment, state, state message, link) to the investflow-alerts block.",
        trigger=EventTrigger(
            match={"prefect.resource.id": _RUN},
            expect={"prefect.flow-run.Failed", "prefect.flow-run.TimedOut"},
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[_run_ended(link)],
    )


def crashed_alert(link: str) -> AutomationCore:
    """A run that Crashed and will not be resubmitted (never started, or out of resubmits)."""
    return AutomationCore(
        name=PREFIX + "alert on a crashed run that will not be resubmitted",
        description=f"A run that Crashed before it started, or again after {RESUBMITS} "
        "resubmits, posts one message to the investflow-alerts block.",
        trigger=EventTrigger(
            match={
                "prefect.resource.id": _RUN,
                "prefect.run-count": _NOT_RESUBMITTED,
                "prefect.state-message": _NOT_STOPPED_BY_HAND,
            },
            expect={"prefect.flow-run.Crashed"},
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[_run_ended(link)],
    )


def resubmit_rule() -> AutomationCore:
    """A run whose infrastructure died is scheduled again, at most RESUBMITS times."""
    return AutomationCore(
        name=PREFIX + "resubmit a crashed run",
        description=f"The infrastructure died under a run (Spot interruption, OOM kill, "
        f"reboot): schedule the same run again, at most {RESUBMITS} times; after that the "
        "crash alert fires.",
        trigger=EventTrigger(
            match={
                "prefect.resource.id": _RUN,
                "prefect.run-count": [str(n) for n in range(1, RESUBMITS + 1)],
                "prefect.state-message": _NOT_STOPPED_BY_HAND,
            },
            expect={"prefect.flow-run.Crashed"},
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.SCHEDULED,
                name="Resubmitted",
                message="resubmitted after a crash of its infrastructure",
                force=True,  # Crashed is final: only a forced transition schedules it again
            )
        ],
    )


def late_alert(link: str, late_after: dt.timedelta = LATE_AFTER) -> AutomationCore:
    """A scheduled run still not started late_after after it went Late: one message."""
    seconds = int(late_after.total_seconds())
    minutes = f"{seconds // 60} minutes" if seconds % 60 == 0 else f"{seconds} seconds"
    return AutomationCore(
        name=PREFIX + f"alert on a run late for {minutes}",
        description=f"A scheduled run that has not started {minutes} after it went "
        "Late (no worker polls its pool, or the pool is full) posts its deployment and pool.",
        trigger=EventTrigger(
            match={"prefect.resource.id": _RUN},
            # A desktop prediction Late is the desktop asleep: its CPU fallback (prefect.yaml)
            # takes it at 15 minutes, and a late fallback alerts under its own name.
            match_related={
                "prefect.resource.role": "deployment",
                "prefect.resource.name": "!predict-returns",
            },
            after={"prefect.flow-run.Late"},
            expect={
                "prefect.flow-run.Pending",
                "prefect.flow-run.Running",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Crashed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Cancelling",
            },
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=late_after,
        ),
        actions=[
            _notify(
                None,
                f"investflow: {_WHERE} late for {minutes}",
                f"Flow run {{{{ flow_run.name }}}} of {_WHERE} was due at "
                "{{ flow_run.expected_start_time }} and has not started after "
                f"{minutes} late: no worker took it from pool "
                "{{ flow_run.work_pool_name or '(none)' }}.\n"
                f"Run: {link}",
            )
        ],
    )


def zombie_rule(within: dt.timedelta = ZOMBIE_AFTER) -> AutomationCore:
    """A running flow run whose heartbeats stopped is Crashed, so the crash rules take it on.

    Prefect's own recipe (docs: "detect zombie flows"). The Crashed state's message says why;
    the resubmit rule then schedules it again, and a desktop prediction falls back to the CPU.
    """
    seconds = int(within.total_seconds())
    return AutomationCore(
        name=PREFIX + f"crash a run silent for {seconds} s",
        description=f"A flow run sends a heartbeat every {int(HEARTBEAT.total_seconds())} s; "
        f"one that sent none for {seconds} s (its machine asleep, cut off or dead) is marked "
        "Crashed, so it is resubmitted or falls back, and cannot hold its slot forever.",
        trigger=EventTrigger(
            match={"prefect.resource.id": _RUN},
            # Running too: a run whose machine slept before its first heartbeat went out
            # would otherwise never be noticed (Prefect's recipe starts at a heartbeat).
            after={"prefect.flow-run.Running", "prefect.flow-run.heartbeat"},
            # Any other state but Running also says the run is not silently gone: it ended,
            # or was orchestrated anew (a Spot crash resubmitted: Resubmitted, Pending and
            # Submitting while its next task starts). Without them a resubmitted run whose new
            # task took longer to start than the window was crashed a second time.
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
                "prefect.flow-run.TimedOut",
                "prefect.flow-run.Scheduled",
                "prefect.flow-run.Late",
                "prefect.flow-run.Resubmitted",
                "prefect.flow-run.AwaitingRetry",
                "prefect.flow-run.Pending",
                "prefect.flow-run.Submitting",
                "prefect.flow-run.Retrying",
                "prefect.flow-run.Cancelling",
                "prefect.flow-run.Paused",
                "prefect.flow-run.Suspended",
            },
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {seconds} s: its machine slept, lost its network or "
                "died. Safe to rerun: a run woken later cannot write its results.",
            )
        ],
    )


def pool_alerts() -> list:
    """A pool whose last worker went quiet, and the same pool back: one message each.

    "Back" follows a "not ready" of the same pool only (the trigger's `after`): a fresh start,
    whose pools go ready without ever having been down, sends nothing.
    """
    down, back = "has no live worker", "has a live worker again"
    trigger = dict(
        match={"prefect.resource.id": "prefect.work-pool.*"},
        for_each={"prefect.resource.id"},
        posture=Posture.Reactive,
        threshold=1,
    )
    return [
        AutomationCore(
            name=PREFIX + f"alert when a work pool {down}",
            description="The server marks a pool not ready when no worker has sent a "
            f"heartbeat for three heartbeat intervals; this says when a pool {down}.",
            trigger=EventTrigger(expect={"prefect.work-pool.not-ready"}, **trigger),
            actions=[
                _notify(
                    None,
                    "investflow: work pool {{ work_pool.name }} " + down,
                    "Work pool {{ work_pool.name }} " + down + ": its runs will go Late.",
                )
            ],
        ),
        AutomationCore(
            name=PREFIX + f"alert when a work pool {back}",
            description=f"After a pool was reported with no live worker, says when it {back}.",
            trigger=EventTrigger(
                after={"prefect.work-pool.not-ready"},
                expect={"prefect.work-pool.ready"},
                # The window the not-ready opens: the server sweeps a closed one within a
                # minute, so "back" needs one as long as a pool may stay down.
                within=BACK_WITHIN,
                **trigger,
            ),
            actions=[
                _notify(
                    None,
                    "investflow: work pool {{ work_pool.name }} " + back,
                    "Work pool {{ work_pool.name }} " + back + ".",
                )
            ],
        ),
    ]


def stale_data_alert() -> AutomationCore:
    """The flows' freshness events: a dataset more than one session behind posts once a run."""
    return AutomationCore(
        name=PREFIX + "alert on stale data",
        description="After each ingestion run the flow emits investflow.data.fresh or "
        "investflow.data.stale per market and macro group; stale (more than one session "
        "behind the last closed one) posts the newest stored and the last closed session.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "investflow.dataset.*"},
            expect={"investflow.data.stale"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            _notify(
                None,
                "investflow: {{ event.resource['prefect.resource.name'] }} is stale",
                "{{ event.resource['prefect.resource.name'] }}: newest stored session "
                "{{ event.payload.newest_session or 'none' }}, last closed session "
                "{{ event.payload.last_session }} ({{ event.payload.behind }} behind).",
            )
        ],
    )


@dataclass(frozen=True)
class Cadence:
    deployment: str
    window: dt.timedelta  # the longest gap between two fire times, plus the grace


def cadences(prefect_yaml: Path = ROOT / "prefect.yaml", grace=OVERDUE_GRACE) -> list[Cadence]:
    """Each deployment with an active cron schedule, and how long it may go without a run."""
    from cronsim import CronSim

    found = []
    for deployment in yaml.safe_load(prefect_yaml.read_text())["deployments"]:
        crons = [s["cron"] for s in deployment.get("schedules") or [] if s.get("active", True)]
        if crons:
            gap = max(longest_gap(CronSim, cron) for cron in crons)
            found.append(Cadence(deployment["name"], gap + grace))
    return found


def longest_gap(cronsim, cron: str, weeks: int = 5) -> dt.timedelta:
    """The longest time between two fires of a cron expression over a few weeks (UTC)."""
    fires = cronsim(cron, dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
    times = [next(fires) for _ in range(2)]
    while times[-1] - times[0] < dt.timedelta(weeks=weeks):
        times.append(next(fires))
    return max(b - a for a, b in zip(times, times[1:], strict=False))


def overdue_alert(cadence: Cadence) -> AutomationCore:
    """No Completed run of the deployment within its window: the schedule produced nothing."""
    hours = round(cadence.window.total_seconds() / 3600, 1)
    name = cadence.deployment
    return AutomationCore(
        name=PREFIX + f"alert when {name} has no completed run for {hours} h",
        description=f"{name} must complete at least once every {hours} hours (its longest "
        "gap between scheduled runs plus a grace period); otherwise its schedule is paused, "
        "every try failed, or its runs never started.",
        trigger=EventTrigger(
            match={"prefect.resource.id": _RUN},
            match_related={"prefect.resource.role": "deployment", "prefect.resource.name": name},
            expect={"prefect.flow-run.Completed"},
            posture=Posture.Proactive,
            threshold=1,
            within=cadence.window,
        ),
        actions=[
            _notify(
                None,
                f"investflow: {name} is overdue",
                f"Deployment {name} has had no Completed run for {hours} hours "
                "(check its schedule, its last runs and its pool's worker).",
            )
        ],
    )


def desired(block_id, ui_url: str, late_after=LATE_AFTER, cadence_list=None) -> list:
    """Every automation investflow wants, with its notifications on the given block."""
    made = [*run_alerts(block_id, ui_url, late_after), *pool_alerts(), stale_data_alert()]
    made += [overdue_alert(c) for c in (cadences() if cadence_list is None else cadence_list)]
    for automation in made:
        automation.tags = [TAG]
        for action in automation.actions:
            if isinstance(action, SendNotification) and block_id is not None:
                action.block_document_id = block_id
    return made
