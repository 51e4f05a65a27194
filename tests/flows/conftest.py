"""Fixtures the flow tests share."""

from __future__ import annotations

import pytest

from tasks.limits import ensure_rate_limits
from tests.fakes.yahoo import FakeYahoo


@pytest.fixture
def yahoo(pg_engine, monkeypatch):
    """The stand-in, set as the flows' Yahoo, with a fast rate limit so tests take seconds."""
    ensure_rate_limits({"yahoo": (1, 200.0)}, overwrite=True)
    with FakeYahoo() as fake:
        for name, value in fake.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("INVESTFLOW_HTTP_TIMEOUT_S", "5")
        yield fake
