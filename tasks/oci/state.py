"""Where an A1 launch campaign stands (attempts, backoff, next attempt), kept in a Prefect Variable.

The state outlives a run, a reboot or a killed worker: the next run reads it and waits out
the stored backoff instead of hammering the API.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import asdict, dataclass, field, fields

from prefect.variables import Variable

# 429s back off from 900 s, doubling, up to 3600 s, plus up to 120 s of jitter so that clients
# throttled together do not retry together (README.md, "A1.Flex launch").
THROTTLE_BASE_S = 900.0
THROTTLE_MAX_S = 3600.0
THROTTLE_JITTER_S = 120.0


@dataclass
class LaunchState:
    """One campaign: everything a restarted run needs to carry on where the last one stopped."""

    attempts: int = 0
    throttle_streak: int = 0  # consecutive 429s; any other answer resets it
    limit_streak: int = 0  # consecutive LimitExceeded with none of ours listed; likewise
    backoff_s: float = 0.0  # the wait chosen after the last attempt
    next_attempt_at: float = 0.0  # epoch seconds; no launch before this
    ad_cursor: int = 0  # which availability domain comes next (index into the usable ones)
    round_tried: int = 0  # ADs tried since the last capacity wait
    dropped_ads: list[str] = field(default_factory=list)  # ADs that answered "shape not found"
    pending_token: str | None = None  # opc-retry-token of a launch whose outcome is unknown
    pending_ad: str | None = None
    started_at: float | None = None
    last_outcome: str | None = None

    @classmethod
    def from_dict(cls, data: dict | None) -> LaunchState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


def variable_name(display_name: str) -> str:
    """The Prefect Variable that holds the campaign for one display name."""
    slug = re.sub(r"[^a-z0-9_]+", "_", display_name.lower()).strip("_") or "default"
    return f"a1_launch_state_{slug}"[:255]


def load_state(display_name: str) -> LaunchState:
    """The stored campaign, or a fresh one."""
    return LaunchState.from_dict(Variable.get(variable_name(display_name), default=None))


def save_state(display_name: str, state: LaunchState) -> None:
    """Store the campaign: at its start, before each backoff, after a launch, on giving up."""
    Variable.set(variable_name(display_name), state.to_dict(), overwrite=True)


def clear_state(display_name: str) -> None:
    """Forget the campaign once the instance exists, so a later one starts fresh."""
    Variable.unset(variable_name(display_name))


def retry_token(display_name: str, state: LaunchState, ad: str) -> str:
    """The opc-retry-token of the next launch: the same for a replay of the same attempt."""
    seed = f"{display_name}|{state.started_at}|{state.attempts}|{ad}"
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


def throttle_wait(
    streak: int,
    base_s: float = THROTTLE_BASE_S,
    max_s: float = THROTTLE_MAX_S,
    jitter_s: float = THROTTLE_JITTER_S,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff for the streak-th 429 in a row: min(max, base * 2^(n-1)) + jitter."""
    exponent = max(0, streak - 1)
    step = max_s if exponent > 30 else min(max_s, base_s * 2**exponent)
    return step + (rng or random).uniform(0.0, jitter_s)


def interval_wait(interval_s: float, jitter_s: float, rng: random.Random | None = None) -> float:
    """The pause between capacity rounds: the interval plus jitter, so clients don't align."""
    return interval_s + (rng or random).uniform(0.0, jitter_s)


@dataclass(frozen=True)
class Pacing:
    """The waits of the retry policy, in seconds."""

    retry_interval_s: float = 60.0
    retry_jitter_s: float = 15.0
    throttle_base_s: float = THROTTLE_BASE_S
    throttle_max_s: float = THROTTLE_MAX_S
    throttle_jitter_s: float = THROTTLE_JITTER_S

    def interval(self, rng=None) -> float:
        """The pause after a capacity round (or a lagging limit counter, or a gateway error)."""
        return interval_wait(self.retry_interval_s, self.retry_jitter_s, rng)

    def throttle(self, streak: int, rng=None) -> float:
        """The backoff after the streak-th 429 in a row."""
        return throttle_wait(
            streak, self.throttle_base_s, self.throttle_max_s, self.throttle_jitter_s, rng
        )


def after_refusal(
    state: LaunchState, kind: str, ad: str, n_ads: int, pacing: Pacing, rng=None
) -> float:
    """Advance the campaign after a retryable refusal (kinds: client.classify); return the wait."""
    if kind != "throttle":
        state.throttle_streak = 0
    if kind != "limit":
        state.limit_streak = 0
    if kind == "transient":
        # keep the token and the AD: the request may have gone through, and OCI answers a
        # replayed token with the instance it already made instead of making a second one
        return pacing.interval(rng)
    state.pending_token = state.pending_ad = None
    if kind == "throttle":
        state.throttle_streak += 1
        return pacing.throttle(state.throttle_streak, rng)
    if kind == "limit":
        # None of ours was listed, so OCI's limit counters are behind (they lag): the same
        # request can pass once they catch up. Pause as after a full capacity round.
        state.limit_streak += 1
        state.round_tried = 0
        return pacing.interval(rng)
    if kind == "shape-missing":
        if ad not in state.dropped_ads:
            state.dropped_ads.append(ad)
        return 0.0
    # capacity: the other ADs may have room now; a full round without luck earns a pause
    state.ad_cursor += 1
    state.round_tried += 1
    if state.round_tried < n_ads:
        return 0.0
    state.round_tried = 0
    return pacing.interval(rng)
