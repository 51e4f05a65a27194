"""Past listings to spells: which days are read, and the spells a backfill writes."""

from __future__ import annotations

import datetime as dt

import pytest

from tasks.universes.history import MAX_SAMPLES, history_spells, plan, sample_days
from tasks.universes.sources import Member, universes

D = dt.date


def test_samples_are_monthly_and_each_regular_reconstitution_day():
    days = sample_days(D(2023, 11, 20), D(2024, 1, 10))
    # The December change takes effect the day after the second Thursday (14th): the 15th.
    assert days == [D(2023, 11, 20), D(2023, 12, 1), D(2023, 12, 15), D(2024, 1, 1)]
    assert sample_days(D(2024, 6, 3), D(2024, 6, 3)) == []
    assert D(2024, 6, 14) in sample_days(D(2024, 6, 1), D(2024, 7, 1))


def test_a_start_out_of_reach_or_too_far_back_is_refused():
    kospi200, sp500 = universes()["kospi200"], universes()["sp500"]
    assert plan(sp500, D(2020, 1, 1), D(2024, 6, 3)) == []  # today's listing only
    with pytest.raises(ValueError, match="krx has listings from 2014-05-02"):
        plan(kospi200, D(2014, 5, 1), D(2024, 6, 3))
    with pytest.raises(ValueError, match=f"at most {MAX_SAMPLES} a run"):
        plan(kospi200, D(2014, 5, 2), D(2024, 6, 3))
    assert len(plan(kospi200, D(2017, 5, 1), D(2024, 6, 3))) == MAX_SAMPLES


def kr(*pairs) -> list[Member]:
    return [Member(s, n, "KR") for s, n in pairs]


def test_spells_follow_the_samples_and_end_where_the_stored_history_begins():
    samples = [
        (D(2024, 1, 1), kr(("A.KS", "Alpha"), ("B.KS", "Beta"), ("C.KS", "Gamma"))),
        (D(2024, 2, 1), kr(("A.KS", "Alpha"), ("B.KS", "Beta Holdings"), ("D.KS", "Gamma"))),
        (D(2024, 3, 1), kr(("A.KS", "Alpha"), ("B.KS", "Beta Holdings"))),
    ]
    got = {
        (s["symbol"], s["valid_from"], s["valid_to"], s["previous_symbol"])
        for s in history_spells(samples, D(2024, 6, 3))
    }
    assert got == {
        ("A.KS", D(2024, 1, 1), D(2024, 6, 3), None),
        ("B.KS", D(2024, 1, 1), D(2024, 2, 1), None),  # renamed: a new spell
        ("B.KS", D(2024, 2, 1), D(2024, 6, 3), None),
        ("C.KS", D(2024, 1, 1), D(2024, 2, 1), None),
        ("D.KS", D(2024, 2, 1), D(2024, 3, 1), "C.KS"),  # the same company, a new code
    }
    assert history_spells([], D(2024, 6, 3)) == []
