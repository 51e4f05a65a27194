"""The stored A1 campaign and its backoff policy."""

from __future__ import annotations

import random

import pytest

from tasks.oci.client import CAPACITY, LIMIT, SHAPE_MISSING, THROTTLE, TRANSIENT
from tasks.oci.state import (
    LaunchState,
    Pacing,
    after_refusal,
    clear_state,
    load_state,
    retry_token,
    save_state,
    throttle_wait,
)
from tests.fakes.oci import ADS


def test_limit_answers_pause_like_a_capacity_round_and_count_in_a_row():
    state = LaunchState(pending_token="t1", pending_ad=ADS[0], round_tried=1)
    pacing = Pacing(retry_interval_s=60, retry_jitter_s=10)
    assert 60 <= after_refusal(state, LIMIT, ADS[0], 3, pacing) <= 70
    assert 60 <= after_refusal(state, LIMIT, ADS[0], 3, pacing) <= 70
    assert state.limit_streak == 2 and state.pending_token is None and state.round_tried == 0
    assert state.ad_cursor == 0  # the limit is the tenancy's, not the AD's: stay
    after_refusal(state, CAPACITY, ADS[0], 3, pacing)
    assert state.limit_streak == 0


def test_throttle_waits_double_from_the_base_and_stay_bounded():
    rng = random.Random(7)
    waits = [throttle_wait(n, 900, 3600, 120, rng) for n in range(1, 8)]
    steps = [900, 1800, 3600, 3600, 3600, 3600, 3600]
    for wait, step in zip(waits, steps, strict=True):
        assert step <= wait <= step + 120


def test_capacity_tries_every_ad_before_pausing_and_shape_missing_drops_the_ad():
    state, pacing = LaunchState(), Pacing(retry_interval_s=60, retry_jitter_s=10)
    assert after_refusal(state, CAPACITY, ADS[0], 3, pacing) == 0.0
    assert after_refusal(state, CAPACITY, ADS[1], 3, pacing) == 0.0
    assert 60 <= after_refusal(state, CAPACITY, ADS[2], 3, pacing) <= 70
    assert state.ad_cursor == 3 and state.round_tried == 0
    assert after_refusal(state, SHAPE_MISSING, ADS[1], 3, pacing) == 0.0
    assert state.dropped_ads == [ADS[1]]


def test_a_transient_error_keeps_the_retry_token_and_other_answers_drop_it():
    state, pacing = LaunchState(pending_token="t1", pending_ad=ADS[0]), Pacing()
    after_refusal(state, TRANSIENT, ADS[0], 3, pacing)
    assert (state.pending_token, state.pending_ad) == ("t1", ADS[0])
    after_refusal(state, THROTTLE, ADS[0], 3, pacing)
    assert state.pending_token is None and state.throttle_streak == 1
    after_refusal(state, CAPACITY, ADS[0], 3, pacing)
    assert state.throttle_streak == 0


@pytest.mark.integration
def test_campaign_state_survives_in_a_prefect_variable():
    name = "A1 State/Test"
    clear_state(name)
    assert load_state(name) == LaunchState()
    save_state(name, LaunchState(attempts=4, throttle_streak=2, next_attempt_at=123.5))
    again = load_state(name)
    assert (again.attempts, again.throttle_streak, again.next_attempt_at) == (4, 2, 123.5)
    clear_state(name)
    assert load_state(name).attempts == 0


def test_the_retry_token_is_stable_for_a_replayed_attempt_and_new_for_the_next():
    state = LaunchState(started_at=1.0, attempts=3)
    token = retry_token("a1", state, ADS[0])
    assert token == retry_token("a1", LaunchState(started_at=1.0, attempts=3), ADS[0])
    assert len(token) <= 64 and token != retry_token(
        "a1", LaunchState(started_at=1.0, attempts=4), ADS[0]
    )
