"""Where each universe's members come from, read with FinanceDataReader, mapped to Yahoo symbols.

Pure parts (to_yahoo_*, check_members) are plain functions; read_* call the services.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

KRX_HOSTS = ("data.krx.co.kr",)
WIKIPEDIA_HOSTS = ("en.wikipedia.org",)
NAVER_HOSTS = ("api.stock.naver.com",)
LISTING_HOSTS = KRX_HOSTS + WIKIPEDIA_HOSTS + NAVER_HOSTS
# The page FinanceDataReader's WikipediaStockListing reads for the S&P 500.
SP500_URL = "https://en.wikipedia.org/wiki/List_of_S%26P_500_companies"
KRX_CODE = re.compile(r"^[0-9A-Z]{6}$")
US_SYMBOL = re.compile(r"^[A-Z][A-Z0-9-]{0,9}$")


class SourceError(RuntimeError):
    """A listing source failed or answered something that is not a listing."""


class ListingGarbage(SourceError):
    """The source answered, but not a believable listing: asking again would not help."""


@dataclass(frozen=True)
class Member:
    symbol: str  # Yahoo's symbol
    name: str | None
    market: str  # US, KR


@dataclass(frozen=True)
class Universe:
    name: str
    market: str
    source: str  # the service, named in errors and stored with each row
    read: Callable[[dt.date], pd.DataFrame]  # raw rows: columns code, name, board
    size: tuple[int, int]  # a believable member count: outside it the answer is garbage
    # The first day read(day) answers for a past day; None: the source gives today's only.
    history_since: dt.date | None = None


# ---------------------------------------------------------------------------- mapping


def to_yahoo_kr(code: str, board: str) -> str:
    """005930 on KOSPI (STK) -> 005930.KS; on KOSDAQ (KSQ) -> .KQ."""
    code = str(code).strip().upper()
    if not KRX_CODE.match(code):
        raise ValueError(f"not a KRX short code: {code!r}")
    suffix = {"STK": ".KS", "KSQ": ".KQ"}.get(board)
    if suffix is None:
        raise ValueError(f"{code}: board {board!r} has no Yahoo suffix (KONEX is not on Yahoo)")
    return code + suffix


def to_yahoo_us(symbol: str) -> str:
    """BRK.B -> BRK-B (Yahoo writes class shares with a hyphen; Naver may use / too)."""
    out = str(symbol).strip().upper().replace(".", "-").replace("/", "-")
    if not US_SYMBOL.match(out):
        raise ValueError(f"not a US ticker: {symbol!r}")
    return out


def check_members(universe: Universe, raw: pd.DataFrame) -> tuple[list[Member], list[str]]:
    """The members of raw, and the rows refused (with why); SourceError if raw is garbage."""
    if not isinstance(raw, pd.DataFrame) or not {"code", "name", "board"} <= set(raw.columns):
        raise ListingGarbage(f"{universe.source} ({universe.name}): not a listing table")
    members: dict[str, Member] = {}
    refused: list[str] = []
    for code, name, board in raw[["code", "name", "board"]].itertuples(index=False):
        try:
            symbol = to_yahoo_kr(code, board) if universe.market == "KR" else to_yahoo_us(code)
        except ValueError as exc:
            refused.append(str(exc))
            continue
        members.setdefault(
            symbol, Member(symbol, None if pd.isna(name) else str(name), universe.market)
        )
    low, high = universe.size
    if not low <= len(members) <= high:
        raise ListingGarbage(
            f"{universe.source} ({universe.name}): {len(members)} members, expected {low}-{high}; "
            "stored membership left as it was"
        )
    if len(refused) > max(5, 0.02 * len(raw)):
        raise ListingGarbage(
            f"{universe.source} ({universe.name}): {len(refused)} of {len(raw)} rows unreadable, "
            f"e.g. {refused[:3]}"
        )
    return sorted(members.values(), key=lambda m: m.symbol), refused


# ---------------------------------------------------------------------------- readers


def read_krx_listing(board: str) -> Callable[[dt.date], pd.DataFrame]:
    """Every stock listed on a KRX board today, from the exchange (data.krx.co.kr).

    FinanceDataReader's StockListing('KOSPI') reads a copy on GitHub made by its author;
    KrxMarcapListing asks KRX's own getJsonData.cmd (MDCSTAT01501), the authoritative list."""

    def read(day: dt.date) -> pd.DataFrame:
        from FinanceDataReader.krx.listing import KrxMarcapListing

        df = KrxMarcapListing({"STK": "KOSPI", "KSQ": "KOSDAQ"}[board]).read()
        df = df[df["MarketId"] == board]
        return pd.DataFrame({"code": df["Code"], "name": df["Name"], "board": df["MarketId"]})

    return read


def read_krx_index(full: str, short: str, board: str) -> Callable[[dt.date], pd.DataFrame]:
    """An index's constituents on a day, from KRX's [11006] screen (MDCSTAT00601)."""

    def read(day: dt.date) -> pd.DataFrame:
        from FinanceDataReader.krx.snap import _krx_index_listings

        df = _krx_index_listings(full, short, day.strftime("%Y-%m-%d"))
        return pd.DataFrame({"code": df["Code"], "name": df["Name"], "board": board})

    return read


def read_sp500(timeout_s: float) -> Callable[[dt.date], pd.DataFrame]:
    """The S&P 500 table of Wikipedia, the page FinanceDataReader reads.

    Read here rather than through WikipediaStockListing, which drops the dot of class shares
    (BRK.B -> BRKB), losing the Yahoo symbol (BRK-B)."""

    def read(day: dt.date) -> pd.DataFrame:
        import requests

        response = requests.get(
            SP500_URL, headers={"User-Agent": "investflow/0.1 (universes)"}, timeout=timeout_s
        )
        response.raise_for_status()
        table = pd.read_html(io.StringIO(response.text), header=0)[0]
        return pd.DataFrame({"code": table["Symbol"], "name": table["Security"], "board": "US"})

    return read


def read_naver(exchange: str) -> Callable[[dt.date], pd.DataFrame]:
    """Every stock of a US exchange as Naver's stock API lists it (FinanceDataReader's source)."""

    def read(day: dt.date) -> pd.DataFrame:
        from FinanceDataReader.naver.listing import NaverStockListing

        df = NaverStockListing(exchange).read()
        return pd.DataFrame({"code": df["Symbol"], "name": df["Name"], "board": exchange})

    return read


def universes(timeout_s: float = 30.0) -> dict[str, Universe]:
    """Every universe the flow keeps, by name."""
    return {
        u.name: u
        for u in (
            Universe("sp500", "US", "wikipedia", read_sp500(timeout_s), (450, 560)),
            Universe("nasdaq", "US", "naver", read_naver("NASDAQ"), (1000, 6000)),
            Universe("nyse", "US", "naver", read_naver("NYSE"), (1000, 6000)),
            Universe("kospi", "KR", "krx", read_krx_listing("STK"), (500, 1500)),
            Universe("kosdaq", "KR", "krx", read_krx_listing("KSQ"), (800, 2500)),
            # [11006] serves constituents from 2014-05-02 (pykrx refuses earlier days: KRX
            # answers nothing); KOSDAQ 150 was first published on 2015-07-13.
            Universe(
                "kospi200",
                "KR",
                "krx",
                read_krx_index("1", "028", "STK"),
                (195, 205),
                dt.date(2014, 5, 2),
            ),
            Universe(
                "kosdaq150",
                "KR",
                "krx",
                read_krx_index("2", "203", "KSQ"),
                (145, 155),
                dt.date(2015, 7, 13),
            ),
        )
    }
