"""tasks.market.rebase and the calendar and adjustment checks of quality, on small tables."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from tasks.market.quality import calendar_issues, check_prices
from tasks.market.rebase import find_rebases

D = dt.date
DAYS = [D(2024, 6, 10), D(2024, 6, 11), D(2024, 6, 12)]
NO_ACTIONS = pd.DataFrame(columns=["symbol", "action_date", "action_type", "value"])


def bars(symbol="X", close=(10.0, 10.2, 10.1), adj=(9.9, 10.1, 10.0), days=DAYS):
    n = len(days)
    return pd.DataFrame(
        {"symbol": [symbol] * n, "trade_date": list(days), "open": list(close),
         "high": [c * 1.01 for c in close], "low": [c * 0.99 for c in close],
         "close": list(close), "adj_close": list(adj), "volume": [100] * n}
    )  # fmt: skip


def stored(frame):
    return frame[["symbol", "trade_date", "close", "adj_close"]]


def test_the_same_numbers_are_no_rebase():
    assert find_rebases(bars(), NO_ACTIONS, stored(bars()), NO_ACTIONS) == {}


def test_a_new_split_and_closes_in_another_basis_are_a_rebase():
    old = bars(close=(40.0, 40.8, 40.4), adj=(39.6, 40.4, 40.0))
    split = pd.DataFrame(
        {"symbol": ["X"], "action_date": [D(2024, 6, 12)], "action_type": ["split"],
         "value": [4.0]}
    )  # fmt: skip
    why = find_rebases(bars(), split, stored(old), NO_ACTIONS)["X"]
    assert "new split 2024-06-12 (4)" in why
    assert "close differs on 3 of 3 stored sessions (up to 75.000%)" in why


def test_a_rescaled_adj_close_alone_is_a_rebase_and_a_backfill_never_is():
    fetched = bars(adj=(9.8, 10.0, 10.0))  # a dividend re-scaled the first two sessions
    why = find_rebases(fetched, NO_ACTIONS, stored(bars()), NO_ACTIONS)
    assert why == {"X": "adj_close differs on 2 of 3 stored sessions (up to 1.010%)"}
    # Nothing stored: a backfill has no past to re-base, whatever actions it brings.
    empty = stored(bars()).iloc[0:0]
    div = pd.DataFrame(
        {"symbol": ["X"], "action_date": [DAYS[1]], "action_type": ["dividend"], "value": [0.1]}
    )
    assert find_rebases(fetched, div, empty, NO_ACTIONS) == {}


def test_calendar_gaps_and_bars_on_non_sessions_are_flagged_and_those_bars_dropped():
    days = [D(2024, 6, 17), D(2024, 6, 19), D(2024, 6, 20)]  # Jun 18 missing, Jun 19 closed
    sessions = {D(2024, 6, 17), D(2024, 6, 18), D(2024, 6, 20)}
    kept, issues = calendar_issues(bars(days=days), sessions, {"X": D(2024, 6, 14)}, D(2024, 6, 20))
    assert list(kept["trade_date"]) == [D(2024, 6, 17), D(2024, 6, 20)]
    assert sorted((i.date, i.kind) for i in issues) == [
        (D(2024, 6, 18), "missing_session"),
        (D(2024, 6, 19), "non_session_bar"),
    ]


def test_an_adj_close_ratio_jump_without_an_action_is_flagged():
    frame = bars(close=(10.0, 10.0, 10.0), adj=(9.0, 9.0, 10.0))  # ratio 0.9 -> 1.0 on Jun 12
    kinds = {(i.date, i.kind) for i in check_prices(frame, NO_ACTIONS)[1]}
    assert kinds == {(D(2024, 6, 12), "adj_ratio_jump")}
    dividend = pd.DataFrame(
        {"symbol": ["X"], "action_date": [D(2024, 6, 12)], "action_type": ["dividend"]}
    )
    assert check_prices(frame, dividend)[1] == []
