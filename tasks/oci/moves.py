"""What the A1 campaign and its flow tell each other: the plan, the actions, the answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.oci.state import Pacing


@dataclass(frozen=True)
class Plan:
    """What the campaign launches and how patiently: the flow's parameters."""

    display_name: str
    shape: str = "VM.Standard.A1.Flex"
    ocpus: float = 2
    memory_gbs: float = 12
    availability_domains: tuple[str, ...] = ()  # empty: every AD of the region, listed
    pacing: Pacing = Pacing()
    limit_exceeded_attempts: int = 10  # LimitExceeded answers in a row before giving up
    max_run_minutes: float = 9
    progress_every: int = 20  # a progress alert every this many attempts; 0: none
    # Where the instance goes and what it boots (the LaunchInstanceDetails beyond the shape).
    compartment_id: str = ""
    subnet_id: str = ""
    image_id: str = ""
    boot_volume_gbs: int | None = None
    ssh_public_key: str | None = None
    assign_public_ip: bool = True


# -- what to do next
@dataclass(frozen=True)
class ListInstances:
    """List the compartment for a live instance of ours; answer with Listed."""


@dataclass(frozen=True)
class ListAds:
    """List the region's availability domains; answer with AdsListed."""


@dataclass(frozen=True)
class Launch:
    """Launch once in this AD with this opc-retry-token; answer with Answered."""

    ad: str
    token: str


@dataclass(frozen=True)
class Wait:
    """Sleep this long; answer with Slept."""

    seconds: float


@dataclass(frozen=True)
class Done:
    """Ours exists. announce: a campaign was under way, so report the instance and forget it."""

    instance: Any
    how: str  # "exists" or "launched"
    announce: bool


@dataclass(frozen=True)
class Stop:
    """The next attempt falls past this run's end; the next run resumes at next_attempt_at."""

    next_attempt_at: float


@dataclass(frozen=True)
class GiveUp:
    """Retrying will not help: the run fails with this reason (its alert is in the Step)."""

    reason: str


Action = ListInstances | ListAds | Launch | Wait | Done | Stop | GiveUp


# -- what the last call answered
@dataclass(frozen=True)
class Listed:
    found: Any  # our live instance, None, or the Failure of the list call


@dataclass(frozen=True)
class AdsListed:
    ads: tuple[str, ...]


@dataclass(frozen=True)
class Slept:
    pass


@dataclass(frozen=True)
class Answered:
    result: Any  # the launched instance or the Failure


Answer = Listed | AdsListed | Slept | Answered


@dataclass(frozen=True)
class Row:
    """One line of the run's attempts table; the flow adds the time."""

    availability_domain: str
    outcome: str
    oci_code: str = ""
    wait_s: float = 0.0
    opc_request_id: str = ""


@dataclass(frozen=True)
class Alert:
    title: str
    body: str
    key: str | None = None  # alerts with one key are coalesced by the rate limiter
    urgent: bool = False
