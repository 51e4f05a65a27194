"""The A1 launch campaign as a pure state machine: no I/O, no sleeping, no clock reads.

step() takes where a run stands, the answer to the call it asked for last and the time, and
returns the next Run with the action to take next (list, launch, wait, done, stop, give up), the
attempts-table rows and alerts it produced, and whether the campaign must be saved first. The
flow in flows/a1_launch.py makes the calls, sleeps, records, alerts and feeds the answers back.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from tasks.oci.client import FATAL, LIMIT, THROTTLE, Failure, limit_persists
from tasks.oci.moves import (
    Action,
    AdsListed,
    Alert,
    Answer,
    Answered,
    Done,
    GiveUp,
    Launch,
    ListAds,
    Listed,
    ListInstances,
    Plan,
    Row,
    Slept,
    Stop,
    Wait,
)
from tasks.oci.state import LaunchState, after_refusal, retry_token

# Where a run stands: which call it waits on the answer of.
CHECK, ADS, WAITING, LISTING, LAUNCHING, CONFIRMING, LIMIT_CHECK = (
    "check",  # the first look for ours, before anything else
    "ads",
    "waiting",
    "listing",  # the look before every launch
    "launching",
    "confirming",  # the look after a launch answered 200
    "limit-check",  # the look after a LimitExceeded
)


@dataclass(frozen=True)
class Run:
    """One run's position: the stored campaign plus what lives only as long as the run."""

    campaign: LaunchState
    phase: str = CHECK
    ads: tuple[str, ...] = ()  # every AD of the campaign, dropped ones included
    deadline: float = 0.0
    ad: str = ""  # the AD of the last launch
    refusal: Failure | None = None  # a LimitExceeded waiting for the look that explains it
    launched: Any = None  # the instance a launch answered with, until a list confirms it


@dataclass(frozen=True)
class Step:
    """One move: the run after it, the action to take, and what to store and tell first."""

    run: Run
    action: Action
    save: bool = False  # store run.campaign before acting: it must outlive this run
    rows: tuple[Row, ...] = ()
    alerts: tuple[Alert, ...] = ()
    logs: tuple[tuple[int, str], ...] = ()  # (logging level, message)


def start(campaign: LaunchState) -> Step:
    """A run's first move: look for ours before anything else."""
    return Step(Run(campaign), ListInstances())


def step(plan: Plan, run: Run, answer: Answer, now: float, rng=random) -> Step:
    """The next move after `answer`, at time `now`; jitter comes from rng. Inputs stay as given."""
    turn = _Turn(plan, run, now, rng)
    return _HANDLERS[run.phase](turn, answer)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


class _Turn:
    """One step being worked out, on a private copy of the campaign."""

    def __init__(self, plan: Plan, run: Run, now: float, rng) -> None:
        self.plan, self.run, self.now, self.rng = plan, run, now, rng
        self.state = replace(run.campaign, dropped_ads=list(run.campaign.dropped_ads))
        self.save = False
        self.rows: list[Row] = []
        self.alerts: list[Alert] = []
        self.logs: list[tuple[int, str]] = []

    def usable_ads(self) -> list[str]:
        return [ad for ad in self.run.ads if ad not in self.state.dropped_ads]

    def to(self, action: Action, **run_changes) -> Step:
        run = replace(self.run, campaign=self.state, **run_changes)
        rows, alerts, logs = tuple(self.rows), tuple(self.alerts), tuple(self.logs)
        return Step(run, action, self.save, rows, alerts, logs)

    def info(self, message: str) -> None:
        self.logs.append((logging.INFO, message))

    def warn(self, message: str) -> None:
        self.logs.append((logging.WARNING, message))

    def alert(self, what: str, body: str, key: str | None = None, urgent: bool = False) -> None:
        name = self.plan.display_name
        key = key and f"{key}-{name}"  # coalesced per campaign by the alert rate limiter
        self.alerts.append(Alert(f"A1 launch {what}: {name}", body, key, urgent))

    def give_up(self, reason: str) -> Step:
        self.state.last_outcome, self.save = reason, True
        self.alert("failed", reason, urgent=True)
        return self.to(GiveUp(reason))


def _checked(t: _Turn, answer: Listed) -> Step:
    found = answer.found
    if isinstance(found, Failure) and found.kind == FATAL:
        return t.give_up(f"OCI refused to list instances: {found.describe()}")
    if found is not None and not isinstance(found, Failure):
        return t.to(Done(found, "exists", announce=t.state.started_at is not None))
    # any other failed look is no reason to stop: the look before each launch repeats it
    if t.plan.availability_domains:
        return _begin(t, tuple(t.plan.availability_domains))
    return t.to(ListAds(), phase=ADS)


def _ads_listed(t: _Turn, answer: AdsListed) -> Step:
    return _begin(t, tuple(answer.ads))


def _begin(t: _Turn, ads: tuple[str, ...]) -> Step:
    """Pick up the campaign where the last run left it, or start it."""
    state, plan = t.state, t.plan
    if state.started_at is None:
        state.started_at, t.save = t.now, True
        t.alert(
            "started",
            f"{plan.shape} {plan.ocpus} OCPU / {plan.memory_gbs} GB in {', '.join(ads)}; "
            f"retrying capacity every {plan.pacing.retry_interval_s:.0f} s.",
            key="a1-started",
        )
    else:
        t.info(
            f"Resuming after {state.attempts} attempt(s), throttle streak {state.throttle_streak}",
        )
    t.run = replace(t.run, ads=ads, deadline=t.now + plan.max_run_minutes * 60)
    return _next_attempt(t)


def _next_attempt(t: _Turn) -> Step:
    """Wait out the stored backoff, unless that outlasts this run: the next one resumes."""
    if not t.usable_ads():
        return t.give_up(f"No availability domain offers {t.plan.shape}: {', '.join(t.run.ads)}")
    next_at = t.state.next_attempt_at
    wait = max(0.0, next_at - t.now)
    if t.now + wait >= t.run.deadline:
        t.info(f"Next attempt at {iso(next_at)} is past this run's end; stopping here")
        return t.to(Stop(next_at))
    if wait > 0:
        t.info(f"Waiting {wait:.0f} s before the next attempt")
        return t.to(Wait(wait), phase=WAITING)
    return t.to(ListInstances(), phase=LISTING)


def _slept(t: _Turn, answer: Slept) -> Step:
    return t.to(ListInstances(), phase=LISTING)


def _listed(t: _Turn, answer: Listed) -> Step:
    """The look before a launch: never launch when ours is there already."""
    found, state = answer.found, t.state
    if isinstance(found, Failure):
        return _listing_failed(t, found)
    if found is not None:
        return t.to(Done(found, "exists", announce=True))
    # The retry token follows from the campaign and the attempt number, so a worker killed
    # mid-call sends the same token again and OCI answers with the instance it may already
    # have made instead of making a second one.
    ads = t.usable_ads()
    pending = state.pending_ad
    ad = pending if pending in ads else ads[state.ad_cursor % len(ads)]
    if pending != ad or not state.pending_token:
        state.pending_token = retry_token(t.plan.display_name, state, ad)
    state.pending_ad = ad
    return t.to(Launch(ad, state.pending_token), phase=LAUNCHING, ad=ad)


def _listing_failed(t: _Turn, failure: Failure) -> Step:
    """Stop on a refusal, else back off as a launch would."""
    t.rows.append(Row("-", f"list {failure.kind}", f"{failure.status or '-'} {failure.code or ''}"))
    if failure.kind in (FATAL, LIMIT):
        return t.give_up(f"OCI refused to list instances: {failure.describe()}")
    state, pacing = t.state, t.plan.pacing
    if failure.kind == THROTTLE:
        state.throttle_streak += 1
        wait = pacing.throttle(state.throttle_streak, t.rng)
    else:
        wait = pacing.interval(t.rng)
    state.backoff_s, state.next_attempt_at, t.save = wait, t.now + wait, True
    t.warn(f"Listing instances failed: {failure.describe()}; next try in {wait:.0f} s")
    return _next_attempt(t)


def _answered(t: _Turn, answer: Answered) -> Step:
    result, state = answer.result, t.state
    state.attempts += 1
    if not isinstance(result, Failure):
        # Launched: confirm by listing again before calling it done.
        state.pending_token = state.pending_ad = None
        t.save = True
        return t.to(ListInstances(), phase=CONFIRMING, launched=result)
    state.last_outcome = result.describe()
    if result.kind == FATAL:
        t.rows.append(_row(t.run.ad, result))
        return t.give_up(f"OCI refused the launch in {t.run.ad}: {result.describe()}")
    if result.kind == LIMIT:
        # OCI also answers LimitExceeded while its limit counters lag behind: ours listed
        # means done; none means wait like a capacity round and try again.
        return t.to(ListInstances(), phase=LIMIT_CHECK, refusal=result)
    return _retry(t, result)


def _confirmed(t: _Turn, answer: Listed) -> Step:
    found = None if isinstance(answer.found, Failure) else answer.found
    if found is None:
        launched = t.run.launched.id
        t.warn(f"Launch of {launched} answered 200 but the list does not show it yet")
    return t.to(Done(found or t.run.launched, "launched", announce=True), launched=None)


def _limit_checked(t: _Turn, answer: Listed) -> Step:
    found, refusal = answer.found, t.run.refusal
    t.run = replace(t.run, refusal=None)
    if found is not None and not isinstance(found, Failure):
        t.rows.append(_row(t.run.ad, refusal))
        return t.to(Done(found, "exists", announce=True))
    return _retry(t, refusal)


def _retry(t: _Turn, failure: Failure) -> Step:
    """Capacity, throttling, a transient error, a missing shape or a lagging limit counter."""
    state, plan, ad = t.state, t.plan, t.run.ad
    wait = after_refusal(state, failure.kind, ad, len(t.usable_ads()), plan.pacing, t.rng)
    if failure.kind == LIMIT and state.limit_streak >= plan.limit_exceeded_attempts:
        t.rows.append(_row(ad, failure))
        streak, state.limit_streak = state.limit_streak, 0  # the next run counts afresh
        reason = limit_persists(plan.display_name, streak, plan.ocpus, plan.memory_gbs, failure)
        return t.give_up(reason)
    state.backoff_s, state.next_attempt_at, t.save = wait, t.now + wait, True
    t.rows.append(_row(ad, failure, wait))
    what = f"{failure.describe()}; next attempt in {wait:.0f} s"
    t.info(f"Attempt {state.attempts} in {ad}: {what}")
    if failure.kind == LIMIT:
        t.warn(
            f"LimitExceeded with none of ours listed (lagging counters?): "
            f"{state.limit_streak} of {plan.limit_exceeded_attempts}",
        )
    if failure.kind == THROTTLE:
        t.alert(
            "throttled",
            f"OCI answered 429; backing off {wait:.0f} s ({state.throttle_streak} in a row).",
            key="a1-throttled",
        )
    if plan.progress_every and state.attempts % plan.progress_every == 0:
        t.alert(
            "still trying",
            f"{state.attempts} attempts so far; last: {failure.describe()}.",
            key="a1-progress",
        )
    return _next_attempt(t)


def _row(ad: str, failure: Failure, wait: float = 0.0) -> Row:
    code = f"{failure.status or '-'} {failure.code or ''}".strip()
    return Row(ad, failure.kind, code, wait, failure.request_id or "")


_HANDLERS = {
    CHECK: _checked,
    ADS: _ads_listed,
    WAITING: _slept,
    LISTING: _listed,
    LAUNCHING: _answered,
    CONFIRMING: _confirmed,
    LIMIT_CHECK: _limit_checked,
}
