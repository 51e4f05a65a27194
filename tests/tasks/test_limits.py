"""Rate limits on the Prefect server: runs create what is missing, never undo a tuned rate."""

import uuid

import pytest
from prefect.client.orchestration import get_client

from tasks.limits import ensure_rate_limits

pytestmark = pytest.mark.integration


def decay_of(name: str) -> float:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).slot_decay_per_second


def test_a_run_creates_a_missing_limit_but_keeps_a_tuned_one():
    name = f"test-limit-{uuid.uuid4().hex[:8]}"
    ensure_rate_limits({name: (1, 2.0)})
    assert decay_of(name) == 2.0
    with get_client(sync_client=True) as client:  # an operator slows it down in the UI
        client.upsert_global_concurrency_limit_by_name(name, limit=1, slot_decay_per_second=0.5)
    ensure_rate_limits({name: (1, 2.0)})
    assert decay_of(name) == 0.5
    ensure_rate_limits({name: (1, 2.0)}, overwrite=True)  # the bootstrap applies the code's
    assert decay_of(name) == 2.0
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name(name)
