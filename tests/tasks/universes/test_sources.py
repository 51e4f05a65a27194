"""Listing rows to Yahoo symbols, and what makes an answer garbage."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.universes.sources import SourceError, check_members, to_yahoo_kr, to_yahoo_us, universes


def test_krx_codes_get_their_boards_suffix():
    assert to_yahoo_kr("005930", "STK") == "005930.KS"
    assert to_yahoo_kr("247540", "KSQ") == "247540.KQ"
    assert to_yahoo_kr("0009K0", "STK") == "0009K0.KS"  # the 2024 alphanumeric codes
    with pytest.raises(ValueError, match="KONEX"):
        to_yahoo_kr("123456", "KNX")
    with pytest.raises(ValueError, match="not a KRX short code"):
        to_yahoo_kr("59300", "STK")


def test_us_class_shares_take_a_hyphen():
    assert to_yahoo_us("BRK.B") == "BRK-B"
    assert to_yahoo_us("bf/b") == "BF-B"
    assert to_yahoo_us("AAPL") == "AAPL"
    with pytest.raises(ValueError, match="not a US ticker"):
        to_yahoo_us("<td>")


def frame(rows, board):
    return pd.DataFrame(
        {"code": [c for c, _ in rows], "name": [n for _, n in rows], "board": board}
    )


def test_a_listing_of_the_wrong_size_is_garbage_naming_the_source():
    kospi200 = universes()["kospi200"]
    rows = [(f"{i:06d}", f"Co {i}") for i in range(200)]
    members, refused = check_members(kospi200, frame(rows, "STK"))
    assert len(members) == 200 and refused == [] and members[0].symbol == "000000.KS"
    with pytest.raises(SourceError, match=r"^krx \(kospi200\): 20 members, expected 195-205"):
        check_members(kospi200, frame(rows[:20], "STK"))
    with pytest.raises(SourceError, match="not a listing table"):
        check_members(kospi200, pd.DataFrame({"Code": ["005930"]}))


def test_a_few_unreadable_rows_are_refused_many_are_garbage():
    sp500 = universes()["sp500"]
    rows = [(f"S{chr(65 + i // 26)}{chr(65 + i % 26)}", "x") for i in range(500)]
    members, refused = check_members(sp500, frame(rows + [("<b>", "bad")], "US"))
    assert len(members) == 500 and len(refused) == 1
    with pytest.raises(SourceError, match="rows unreadable"):
        check_members(sp500, frame(rows + [("<b>", "bad")] * 40, "US"))
