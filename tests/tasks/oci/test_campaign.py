"""The A1 campaign's decisions as tables: each answer fed to the machine, the action it asks next.

No server, no SDK, no clock: the machine is given the time and a stand-in for the jitter draw.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from types import SimpleNamespace

import pytest

from tasks.oci.campaign import Run, start, step
from tasks.oci.client import Failure, classify
from tasks.oci.moves import (
    AdsListed,
    Answered,
    Done,
    GiveUp,
    Launch,
    ListAds,
    Listed,
    ListInstances,
    Plan,
    Slept,
    Stop,
    Wait,
)
from tasks.oci.state import LaunchState, Pacing
from tests.fakes.oci import ADS, ERRORS

T0 = 1_750_000_000.0
PLAN = Plan(
    "a1-test",
    availability_domains=ADS,
    pacing=Pacing(retry_interval_s=60, retry_jitter_s=15),  # 429s: 900 s doubling to 3600 s
    limit_exceeded_attempts=3,
    max_run_minutes=1000,
    progress_every=0,
)
OURS = SimpleNamespace(id="ocid1.instance..ours", availability_domain=ADS[1])
LAUNCHED = SimpleNamespace(id="ocid1.instance..launched", availability_domain=ADS[0])


class Jitter:
    """A stand-in for random: every draw lands at the same fraction of its range."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.fraction


LOW, HIGH = Jitter(0.0), Jitter(1.0)


def refusal(name: str) -> Failure:
    """OCI's answer as the stand-in sends it (tests/fakes/oci.py ERRORS), classified."""
    status, code, message = ERRORS[name]
    return Failure(classify(status, code, message), status, code, message, f"req-{name}")


NONE, FOUND, SLEPT, OK = Listed(None), Listed(OURS), Slept(), Answered(LAUNCHED)


def refused(name: str) -> Answered:
    return Answered(refusal(name))


def list_failed(name: str) -> Listed:
    return Listed(refusal(name))


def show(action) -> str:
    match action:
        case ListInstances():
            return "list"
        case ListAds():
            return "list ads"
        case Launch(ad=ad):
            return f"launch AD-{ADS.index(ad) + 1}"
        case Wait(seconds=seconds):
            return f"wait {seconds:g}"
        case Done(how=how, announce=announce):
            return f"done {how}" + ("" if announce else " quietly")
        case Stop(next_attempt_at=at):
            return f"stop until +{at - T0:g}"
        case GiveUp():
            return "give up"
    raise AssertionError(action)


def play(script, plan=PLAN, state=None, rng=LOW, now=T0):
    """Feed each answer in turn, checking the action asked for next; sleeping advances time."""
    moves = [start(state or LaunchState())]
    assert show(moves[0].action) == "list"
    for i, (answer, expected) in enumerate(script):
        if isinstance(answer, Slept):
            now += moves[-1].action.seconds
        moves.append(step(plan, moves[-1].run, answer, now, rng))
        assert show(moves[-1].action) == expected, f"after answer {i}: {answer}"
    return moves


def alerts(moves) -> list[str]:
    return [a.title.split(":")[0] for m in moves for a in m.alerts]


def rows(moves) -> list[tuple]:
    return [(r.availability_domain, r.outcome, r.oci_code, r.wait_s) for m in moves for r in m.rows]


# The first round of a fresh campaign: the look for ours, then the look before the launch.
OPENING = [(NONE, "list"), (NONE, "launch AD-1")]


@pytest.mark.parametrize("rng, pause", [(LOW, "wait 60"), (HIGH, "wait 75")])
def test_capacity_tries_the_next_ad_then_pauses_a_round(rng, pause):
    moves = play(
        OPENING
        + [(refused("capacity"), "list"), (NONE, "launch AD-2")]
        + [(refused("capacity"), "list"), (NONE, "launch AD-3")]
        + [(refused("capacity"), pause), (SLEPT, "list"), (NONE, "launch AD-1")]
        + [(OK, "list"), (FOUND, "done launched")],
        rng=rng,
    )
    assert alerts(moves) == ["A1 launch started"]
    assert [r[:3] for r in rows(moves)] == [(ad, "capacity", "500 InternalError") for ad in ADS]
    tokens = [m.action.token for m in moves if isinstance(m.action, Launch)]
    assert len(set(tokens)) == 4  # each attempt its own retry token


@pytest.mark.parametrize(
    "rng, waits",
    [(LOW, [900, 1800, 3600, 3600]), (HIGH, [1020, 1920, 3720, 3720])],
)
def test_429_backs_off_from_900_s_doubling_to_3600_s_plus_jitter_in_the_same_ad(rng, waits):
    script = list(OPENING)
    for wait in waits:
        script += [(refused("throttle"), f"wait {wait}"), (SLEPT, "list"), (NONE, "launch AD-1")]
    moves = play(script + [(OK, "list"), (FOUND, "done launched")], rng=rng)
    assert alerts(moves) == ["A1 launch started"] + ["A1 launch throttled"] * 4
    assert {a.key for m in moves for a in m.alerts if "throttled" in a.title} == {
        "a1-throttled-a1-test"  # one key: the rate limiter sends the first, coalesces the rest
    }
    assert moves[-3].run.campaign.throttle_streak == 4


def test_a_capacity_answer_ends_the_throttle_streak():
    moves = play(
        OPENING
        + [(refused("throttle"), "wait 900"), (SLEPT, "list"), (NONE, "launch AD-1")]
        + [(refused("capacity"), "list"), (NONE, "launch AD-2")]
        + [(refused("throttle"), "wait 900")]
    )
    assert moves[-1].run.campaign.throttle_streak == 1


def test_limit_exceeded_with_ours_listed_is_done_without_a_second_launch():
    moves = play(OPENING + [(refused("limit"), "list"), (FOUND, "done exists")])
    assert sum(isinstance(m.action, Launch) for m in moves) == 1
    assert rows(moves) == [(ADS[0], "limit", "400 LimitExceeded", 0.0)]
    assert alerts(moves) == ["A1 launch started"] and moves[-1].action.instance is OURS


def test_limit_exceeded_with_none_listed_waits_like_capacity_and_gives_up_past_the_attempts():
    after_one = [
        (refused("limit"), "list"),
        (NONE, "wait 60"),
        (SLEPT, "list"),
        (NONE, "launch AD-1"),
    ]
    moves = play(OPENING + after_one * 2 + [(refused("limit"), "list"), (NONE, "give up")])
    # no alert until the answer outlasted limit_exceeded_attempts (3), then exactly one
    assert alerts(moves) == ["A1 launch started", "A1 launch failed"]
    assert moves[-1].alerts[-1].urgent and moves[-1].save
    reason = moves[-1].action.reason
    assert "LimitExceeded 3 times in a row" in reason and "no instance named 'a1-test'" in reason
    assert moves[-1].run.campaign.limit_streak == 0  # the next run waits through 3 again
    assert [r[1:] for r in rows(moves)] == [("limit", "400 LimitExceeded", w) for w in (60, 60, 0)]


def test_limit_answers_carry_over_to_the_next_run():
    state = LaunchState(started_at=T0 - 600, attempts=2, limit_streak=2)
    moves = play(
        [(NONE, "list"), (NONE, "launch AD-1"), (refused("limit"), "list"), (NONE, "give up")],
        state=state,
    )
    assert "LimitExceeded 3 times" in moves[-1].action.reason
    assert alerts(moves) == ["A1 launch failed"]  # resumed: no second "started"


def test_the_run_stops_where_the_next_wait_would_pass_its_end():
    plan = replace(PLAN, pacing=Pacing(retry_interval_s=300, retry_jitter_s=0), max_run_minutes=9)
    round_ = [(refused("capacity"), "list"), (NONE, "launch AD-2"), (refused("capacity"), "list")]
    round_ += [(NONE, "launch AD-3")]
    moves = play(
        OPENING
        + round_
        + [(refused("capacity"), "wait 300"), (SLEPT, "list"), (NONE, "launch AD-1")]
        + round_
        + [(refused("capacity"), "stop until +600")],
        plan=plan,
    )
    stored = moves[-1].run.campaign
    assert stored.attempts == 6 and stored.next_attempt_at == T0 + 600 and moves[-1].save


def test_a_resumed_campaign_waits_out_the_stored_backoff_and_continues_the_streak():
    state = LaunchState(started_at=T0 - 60, attempts=1, throttle_streak=1, next_attempt_at=T0 + 25)
    moves = play(
        [
            (NONE, "wait 25"),
            (SLEPT, "list"),
            (NONE, "launch AD-1"),
            (refused("throttle"), "wait 1800"),
        ],
        state=state,
    )
    assert alerts(moves) == ["A1 launch throttled"]
    assert (logging.INFO, "Resuming after 1 attempt(s), throttle streak 1") in moves[1].logs


@pytest.mark.parametrize(
    "state, expected",
    [(LaunchState(), "done exists quietly"), (LaunchState(started_at=T0 - 60), "done exists")],
)
def test_ours_at_the_first_look_means_no_launch_and_news_only_for_a_campaign(state, expected):
    moves = play([(FOUND, expected)], state=state)
    assert alerts(moves) == [] and not moves[-1].save


@pytest.mark.parametrize(
    "script, reason",
    [
        ([(list_failed("auth"), "give up")], "OCI refused to list instances: 401 NotAuthenticated"),
        (OPENING + [(refused("auth"), "give up")], f"OCI refused the launch in {ADS[0]}: 401"),
        (OPENING[:1] + [(list_failed("limit"), "give up")], "OCI refused to list instances: 400"),
        (
            OPENING[:1] + [(list_failed("bad-param"), "give up")],
            "OCI refused to list instances: 400 Inv",
        ),
    ],
)
def test_refusals_that_retrying_cannot_fix_give_up_with_one_urgent_alert(script, reason):
    moves = play(script)
    assert (
        moves[-1].action.reason.startswith(reason)
        and "opc-request-id req-" in moves[-1].action.reason
    )
    failed = [a for a in moves[-1].alerts if "failed" in a.title]
    assert len(failed) == 1 and failed[0].urgent and moves[-1].save
    assert moves[-1].run.campaign.last_outcome == moves[-1].action.reason


@pytest.mark.parametrize(
    "failed, wait, streak",
    [("throttle", "wait 900", 1), ("unavailable", "wait 60", 0), ("capacity", "wait 60", 0)],
)
def test_a_failed_look_before_a_launch_backs_off_as_a_launch_would(failed, wait, streak):
    moves = play(
        OPENING[:1] + [(list_failed(failed), wait), (SLEPT, "list"), (NONE, "launch AD-1")]
    )
    assert moves[2].run.campaign.throttle_streak == streak and moves[2].save
    assert rows(moves)[0][:2] == ("-", f"list {refusal(failed).kind}")


def test_a_failed_first_look_is_no_reason_to_stop():
    play([(list_failed("unavailable"), "list"), (NONE, "launch AD-1")])


def test_a_gateway_error_replays_the_same_ad_and_token():
    moves = play(
        OPENING + [(refused("unavailable"), "wait 60"), (SLEPT, "list"), (NONE, "launch AD-1")]
    )
    first, again = (m.action for m in moves if isinstance(m.action, Launch))
    assert first == again


def test_shape_missing_drops_the_ad_and_none_left_gives_up():
    moves = play(
        OPENING
        + [(refused("shape"), "list"), (NONE, "launch AD-2"), (refused("shape"), "list")]
        + [(NONE, "launch AD-3"), (refused("shape"), "give up")]
    )
    assert moves[-1].run.campaign.dropped_ads == list(ADS)
    assert moves[-1].action.reason.startswith("No availability domain offers VM.Standard.A1.Flex")


def test_a_launch_the_list_does_not_show_yet_is_done_with_the_launch_answer():
    moves = play(OPENING + [(OK, "list"), (list_failed("unavailable"), "done launched")])
    assert moves[-1].action.instance is LAUNCHED
    assert moves[-2].save and moves[-2].run.campaign.pending_token is None
    assert moves[-1].logs[0][0] == logging.WARNING


def test_without_configured_ads_the_region_is_listed_first():
    plan = replace(PLAN, availability_domains=())
    moves = play(
        [(NONE, "list ads"), (AdsListed(ADS[1:]), "list"), (NONE, "launch AD-2")], plan=plan
    )
    assert ", ".join(ADS[1:]) in moves[2].alerts[0].body


def test_progress_is_news_every_progress_every_attempts():
    plan = replace(PLAN, progress_every=2)
    moves = play(
        OPENING
        + [(refused("capacity"), "list"), (NONE, "launch AD-2"), (refused("capacity"), "list")],
        plan=plan,
    )
    assert alerts(moves) == ["A1 launch started", "A1 launch still trying"]


def test_a_step_leaves_what_it_was_given_as_it_was():
    run = Run(
        LaunchState(started_at=T0, dropped_ads=[ADS[2]]), phase="launching", ads=ADS, ad=ADS[0]
    )
    before = copy.deepcopy(run)
    step(PLAN, run, refused("shape"), T0, LOW)
    step(PLAN, run, refused("capacity"), T0, LOW)
    assert run == before
