"""Polite request rates shared by every run: Prefect global concurrency limits with slot decay."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import rate_limit

# name: (slots, slots freed per second). One slot freed every 1/decay s caps the rate at decay
# requests per second across all concurrent runs, without bursts.
RATE_LIMITS: dict[str, tuple[int, float]] = {
    # Four a second, taken four slots at a time: a chunk asks the server once per four requests.
    "yahoo": (4, 4.0),
    "fred": (1, 1.9),  # FRED rejects bursts; stay under 2 requests per second
    "oci": (1, 1.0),
}


def ensure_rate_limits(
    limits: dict[str, tuple[int, float]] | None = None, *, overwrite: bool = False
) -> None:
    """Create the limits missing on the Prefect server; overwrite=True also resets existing ones.

    Runs call this without overwrite, so a rate an operator tuned in the UI stays as tuned;
    the bootstrap (and tests that need a fast limit) overwrite.
    """
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for name, (slots, decay) in (limits or RATE_LIMITS).items():
            if not overwrite:
                try:
                    client.read_global_concurrency_limit_by_name(name)
                    continue
                except ObjectNotFound:
                    pass
            client.upsert_global_concurrency_limit_by_name(
                name, limit=slots, slot_decay_per_second=decay
            )


def ensure_rate_limit(name: str) -> None:
    """Create the named limit with its default rate if it does not exist yet."""
    ensure_rate_limits({name: RATE_LIMITS[name]})


def polite(name: str, timeout_s: float | None = 600, occupy: int = 1) -> None:
    """Wait for `occupy` slots of the named rate limit: one per request about to be made.

    A server restarting meanwhile refuses the connection: the request waits for it, backing
    off as Prefect's client does (the pools set PREFECT_CLIENT_MAX_RETRIES). Prefect retries a
    refused connection only on a client that has connected before, and rate_limit makes a
    new client each call, so without this the first slot asked during a restart failed the run.
    """
    import time

    import httpx
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

    for attempt in range(1, PREFECT_CLIENT_MAX_RETRIES.value() + 2):
        try:
            rate_limit(name, occupy=occupy, timeout_seconds=timeout_s, strict=True)
            return
        except httpx.ConnectError:
            if attempt > PREFECT_CLIENT_MAX_RETRIES.value():
                raise
            time.sleep(2**attempt)


def slot_blocks(name: str, count: int) -> list[int]:
    """count requests as blocks of slots to take at once: as many as the limit holds, so a
    run asks the server once per block rather than once per request."""
    with get_client(sync_client=True) as client:
        size = max(1, client.read_global_concurrency_limit_by_name(name).limit)
    return [min(size, count - start) for start in range(0, count, size)]
