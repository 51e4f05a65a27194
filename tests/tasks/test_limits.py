"""Rate limits on the Prefect server: runs create what is missing, never undo a tuned rate."""

import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from tasks.limits import RATE_LIMITS, ensure_rate_limit, ensure_rate_limits

pytestmark = pytest.mark.integration


def read(name: str):
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name)


def delete(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.delete_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            pass


def test_a_run_creates_a_missing_limit_but_keeps_a_tuned_one():
    # The real `fred` limit, as a fresh server has none of it.
    delete("fred")
    try:
        ensure_rate_limit("fred")  # what the macro run calls first
        assert read("fred").slot_decay_per_second == RATE_LIMITS["fred"][1]
        with get_client(sync_client=True) as client:  # an operator slows it down in the UI
            client.upsert_global_concurrency_limit_by_name(
                "fred", limit=1, slot_decay_per_second=0.5
            )
        ensure_rate_limit("fred")
        ensure_rate_limits()
        assert read("fred").slot_decay_per_second == 0.5
        ensure_rate_limits(overwrite=True)  # the bootstrap applies the code's
        assert read("fred").slot_decay_per_second == RATE_LIMITS["fred"][1]
    finally:
        ensure_rate_limits(overwrite=True)


def test_a_price_runs_own_limit_starts_at_yahoos_rate():
    name = f"yahoo-test-{uuid.uuid4().hex[:8]}"  # as market-prices names its children's
    try:
        ensure_rate_limit(name)
        limit = read(name)
        assert (limit.limit, limit.slot_decay_per_second) == RATE_LIMITS["yahoo"]
    finally:
        delete(name)
