"""Polite request rates shared by every run: Prefect global concurrency limits with slot decay."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import rate_limit

# name: (slots, slots freed per second). One slot freed every 1/decay s caps the rate at decay
# requests per second across all concurrent runs, without bursts.
RATE_LIMITS: dict[str, tuple[int, float]] = {
    "yahoo": (1, 4.0),
    "fred": (1, 1.9),  # FRED rejects bursts; stay under 2 requests per second
    "oci": (1, 1.0),
}


def ensure_rate_limits(limits: dict[str, tuple[int, float]] | None = None) -> None:
    """Create or update the limits on the Prefect server; safe to call at every run."""
    with get_client(sync_client=True) as client:
        for name, (slots, decay) in (limits or RATE_LIMITS).items():
            client.upsert_global_concurrency_limit_by_name(
                name, limit=slots, slot_decay_per_second=decay
            )


def polite(name: str, timeout_s: float | None = 600) -> None:
    """Wait for a slot of the named rate limit before one request."""
    rate_limit(name, occupy=1, timeout_seconds=timeout_s, strict=True)
