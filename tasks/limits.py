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


def ensure_rate_limits(*, overwrite: bool = False) -> None:
    """Create the limits of RATE_LIMITS missing on the Prefect server; overwrite=True also
    resets existing ones.

    Runs call this without overwrite, so a rate an operator tuned in the UI stays as tuned;
    the bootstrap overwrites.
    """
    with get_client(sync_client=True) as client:
        for name, (slots, decay) in RATE_LIMITS.items():
            _apply(client, name, slots, decay, overwrite)


def ensure_rate_limit(name: str) -> int:
    """Create the named limit if it does not exist yet, at its rate in RATE_LIMITS; return its
    size (slots), as the server holds it now.

    A name the code does not list is a price run's own Yahoo budget (market-prices gives each
    child one: yahoo-1, yahoo-2, ...): it starts at Yahoo's rate.
    """
    slots, decay = RATE_LIMITS.get(name, RATE_LIMITS["yahoo"])
    with get_client(sync_client=True) as client:
        return _apply(client, name, slots, decay, overwrite=False)


def set_limit(name: str, slots: int, per_second: float = 0.0) -> None:
    """Create or reset a global limit: slots at once, freed per_second (0: when released),
    as an operator sets one in the UI."""
    with get_client(sync_client=True) as client:
        _apply(client, name, slots, per_second, overwrite=True)


def _apply(client, name: str, slots: int, decay: float, overwrite: bool) -> int:
    """The limit's size after making sure it exists (overwrite: at slots and decay)."""
    from prefect.exceptions import ObjectNotFound

    if not overwrite:
        try:
            return client.read_global_concurrency_limit_by_name(name).limit
        except ObjectNotFound:
            pass
    client.upsert_global_concurrency_limit_by_name(name, limit=slots, slot_decay_per_second=decay)
    return slots


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


def slot_blocks(name: str, count: int, size: int | None = None) -> list[int]:
    """count requests as blocks of slots to take at once: as many as the limit holds, so a
    run asks the server once per block rather than once per request. size: the limit's size
    where the caller has just read it (ensure_rate_limit's answer); else it is read now, so
    an operator's change in the UI holds from the next chunk on."""
    if size is None:
        with get_client(sync_client=True) as client:
            size = client.read_global_concurrency_limit_by_name(name).limit
    size = max(1, size)
    return [min(size, count - start) for start in range(0, count, size)]
