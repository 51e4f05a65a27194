"""universe_members on both backends: validity rows, the as-of query, the grace period."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from tasks.store.schema import universe_members
from tasks.universes.membership import fetch_list, members_as_of, record_members
from tasks.universes.sources import Member

pytestmark = pytest.mark.integration

D1, D2, D3 = dt.date(2024, 6, 3), dt.date(2024, 6, 4), dt.date(2024, 6, 20)


def members(*pairs) -> list[Member]:
    return [Member(s, n, "US") for s, n in pairs]


def record(engine, listing, day):
    with engine.begin() as conn:
        return record_members(conn, "sp500", listing, day, "wikipedia", None)


def test_changes_are_spells_and_the_past_answers_as_it_was(store):
    first = record(store, members(("AAPL", "Apple"), ("META", "Meta"), ("XOM", "Exxon")), D1)
    assert {(c.symbol, c.change) for c in first} == {
        ("AAPL", "joined"),
        ("META", "joined"),
        ("XOM", "joined"),
    }
    second = record(store, members(("AAPL", "Apple Inc"), ("MEAT", "Meta"), ("KO", "Coca")), D2)
    assert {(c.symbol, c.change, c.detail) for c in second} == {
        ("AAPL", "renamed", "was Apple"),
        ("MEAT", "ticker change", "was META"),
        ("KO", "joined", ""),
        ("META", "left", "ticker change"),
        ("XOM", "left", ""),
    }
    assert members_as_of(store, "sp500", D1) == ["AAPL", "META", "XOM"]
    assert members_as_of(store, "sp500", D2) == ["AAPL", "KO", "MEAT"]
    assert members_as_of(store, "sp500", D1 - dt.timedelta(days=1)) == []
    with store.connect() as conn:
        c = universe_members.c
        spells = conn.execute(
            sa.select(c.symbol, c.valid_from, c.valid_to, c.name, c.previous_symbol).order_by(
                c.symbol, c.valid_from
            )
        ).all()
    assert [tuple(r) for r in spells] == [
        ("AAPL", D1, D2, "Apple", None),
        ("AAPL", D2, None, "Apple Inc", None),
        ("KO", D2, None, "Coca", None),
        ("MEAT", D2, None, "Meta", "META"),
        ("META", D1, D2, "Meta", None),
        ("XOM", D1, D2, "Exxon", None),
    ]
    # The same listing again writes nothing; an older listing is refused.
    assert record(store, members(("AAPL", "Apple Inc"), ("MEAT", "Meta"), ("KO", "Coca")), D2) == []
    with pytest.raises(ValueError, match="older than the stored one"):
        record(store, members(("AAPL", "Apple")), D1)


def test_leavers_are_fetched_through_the_grace_period_then_not(store):
    assert fetch_list(store, "sp500", D1, 7) == {"stored": False, "fetch": [], "left": {}}
    record(store, members(("AAPL", "Apple"), ("XOM", "Exxon")), D1)
    record(store, members(("AAPL", "Apple")), D2)
    within = fetch_list(store, "sp500", D2 + dt.timedelta(days=7), 7)
    assert within["fetch"] == ["AAPL", "XOM"] and within["left"] == {"XOM": D2}
    past = fetch_list(store, "sp500", D3, 7)
    assert past["fetch"] == ["AAPL"] and past["left"] == {"XOM": D2}
