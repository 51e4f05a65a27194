"""Fixtures the flow tests share."""

from __future__ import annotations

import pytest

from tasks.limits import set_limit
from tests.fakes.listings import FakeListings
from tests.fakes.yahoo import FakeYahoo


@pytest.fixture
def yahoo(pg_engine, monkeypatch):
    """The stand-in, set as the flows' Yahoo, with a fast rate limit so tests take seconds."""
    set_limit("yahoo", 1, 200.0)
    with FakeYahoo() as fake:
        for name, value in fake.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("INVESTFLOW_HTTP_TIMEOUT_S", "5")
        yield fake


@pytest.fixture
def listings(pg_engine, monkeypatch, request):
    """The listing stand-ins (KRX, Wikipedia, Naver), set as the flows' listing services;
    sizes from the test's `listing_sizes` mark."""
    mark = request.node.get_closest_marker("listing_sizes")
    with FakeListings(**(mark.kwargs if mark else {})) as fake:
        for name, value in fake.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("INVESTFLOW_HTTP_TIMEOUT_S", "5")
        yield fake
