"""A local Yahoo Finance: v8 chart JSON from deterministic synthetic series, faults on demand."""

from __future__ import annotations

import datetime as dt
import errno
import random
import threading
import zlib
from functools import lru_cache

import numpy as np
import pandas as pd

from tasks.market.calendars import market_of, trading_calendar
from tasks.market.yahoo import YAHOO_HOSTS
from tests.fakes.base import FakeServer, Request, Response
from tests.fakes.tls import server_context

CRUMB = "fakeCrumb123"
# Yahoo's A3 consent cookie lasts a year; yfinance caches it and reads its expiry.
A3_COOKIE = "A3=fake; Max-Age=31557600; Domain=.yahoo.com; Path=/; SameSite=None; Secure"


@lru_cache(maxsize=4)
def _sessions(calendar: str) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Every session of the calendar and its open time in UTC epoch seconds."""
    cal = trading_calendar(calendar)
    opens = cal.opens
    return opens.index, (opens.astype("int64").to_numpy() // 10**9)


class FakeYahoo(FakeServer):
    """Answers what yfinance asks: cookie (/), crumb, consent pages, chart and quote.

    It serves HTTPS on port 443 of an address of its own in 127.0.0.0/8, with a certificate
    for Yahoo's names from a throwaway CA: yfinance reaches it through its own curl_cffi
    session, only resolved there (see tasks.market.yahoo.resolve_entries). Give the flows `env()`.
    Every symbol trades on its market's real calendar (exchange-calendars), so holidays match.
    Script faults with fail(match, status, body, times, delay_s), or per symbol with the sets
    delisted, empty and malformed. Events: `splits[symbol] = {date: (num, den)}` and
    `dividends[symbol] = {date: amount}` override the generated ones.

    Like Yahoo, it serves history in the basis of what it knows today: a known split divides
    every price of the symbol's whole history by its ratio (volume multiplied), and each known
    dividend scales adjclose of every earlier session. `today` (None: everything is known) is
    the stand-in's clock: sessions, splits and dividends after it do not exist yet, so a test
    moves it forward and sees the past re-based. `missing[symbol]` drops sessions the calendar
    has; `holiday_bars[symbol]` adds a bar (a copy of the previous session's) on days that are
    not sessions, as Yahoo did on one-off closures.
    """

    def __init__(self) -> None:
        context, self.ca_file = server_context(YAHOO_HOSTS)
        for _ in range(20):
            # Port 443 (curl's resolve keeps the port) on an address no other stand-in has.
            octets = (random.randint(1, 254), random.randint(0, 255), random.randint(2, 254))
            address = "127.{}.{}.{}".format(*octets)
            try:
                super().__init__(address, 443, tls=context)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        self.delisted: set[str] = set()
        self.empty: set[str] = set()
        self.malformed: set[str] = set()
        self.splits: dict[str, dict[dt.date, tuple[int, int]]] = {}
        self.dividends: dict[str, dict[dt.date, float]] = {}
        self.today: dt.date | None = None
        self.missing: dict[str, set[dt.date]] = {}
        self.holiday_bars: dict[str, set[dt.date]] = {}
        # symbol -> seconds its next chart answer takes (a slow Yahoo keeps a run in flight)
        self.slow: dict[str, float] = {}
        self._series: dict[tuple, dict] = {}
        self._series_lock = threading.Lock()

    def known(self, day) -> bool:
        """Whether the stand-in's clock has reached day (a date or Timestamp)."""
        return self.today is None or pd.Timestamp(day).date() <= self.today

    def env(self) -> dict[str, str]:
        """The settings that point the flows at this stand-in."""
        return {
            "INVESTFLOW_YAHOO_BASE_URL": self.url,
            "INVESTFLOW_YAHOO_CA_BUNDLE": str(self.ca_file),
        }

    # -- what tests read
    def chart_requests(self, symbol: str | None = None) -> list[Request]:
        prefix = "/v8/finance/chart/" + (symbol or "")
        return [r for r in self.requests if r.path.startswith(prefix)]

    # -- routes
    def route(self, req: Request) -> Response:
        path = req.path
        host = req.headers.get("Host", "").split(":")[0]
        if host == "fc.yahoo.com" or path == "/consent" or "Consent" in path:
            # fc.yahoo.com and the consent pages: a cookie, and no form to fill in.
            return Response(200, "<html>ok</html>", {"Set-Cookie": A3_COOKIE})
        if path == "/v1/test/getcrumb":
            return Response(200, CRUMB, {"Content-Type": "text/plain"})
        if path.startswith("/v8/finance/chart/"):
            symbol = path.rsplit("/", 1)[1].upper()
            response = self.chart(symbol, req.query)
            response.delay_s = self.slow.pop(symbol, 0.0)
            return response
        if path.startswith("/v7/finance/quote"):
            symbols = req.query.get("symbols", "").split(",")
            return Response(200, {"quoteResponse": {"result": [self.quote(s) for s in symbols]}})
        if path.startswith("/v10/finance/quoteSummary/"):
            symbol = path.rsplit("/", 1)[1].upper()
            return Response(200, {"quoteSummary": {"result": [{"price": self.quote(symbol)}]}})
        return Response(404, {"error": f"no route {path}"})

    def quote(self, symbol: str) -> dict:
        market = market_of(symbol)
        return {
            "symbol": symbol,
            "currency": market.currency,
            "exchangeTimezoneName": market.tz,
            "quoteType": "EQUITY",
        }

    def chart(self, symbol: str, query: dict[str, str]) -> Response:
        if symbol in self.delisted:
            return Response(
                404,
                {
                    "chart": {
                        "result": None,
                        "error": {
                            "code": "Not Found",
                            "description": "No data found, symbol may be delisted",
                        },
                    }
                },
            )
        if symbol in self.malformed:
            return Response(
                200, '{"chart": {"result": [{"meta": ', {"Content-Type": "application/json"}
            )
        market = market_of(symbol)
        meta = {
            "currency": market.currency,
            "symbol": symbol,
            "exchangeName": "NMS" if market.code == "US" else "KSC",
            "instrumentType": "EQUITY",
            "gmtoffset": 0,
            "timezone": "EST" if market.code == "US" else "KST",
            "exchangeTimezoneName": market.tz,
            "priceHint": 2,
            "dataGranularity": "1d",
            "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
        }
        if "period1" in query:
            lo, hi = int(float(query["period1"])), int(float(query["period2"]))
        else:  # range=1d and friends: the last few sessions
            hi = int(dt.datetime.now(dt.UTC).timestamp())
            lo = hi - 7 * 86400
        if symbol in self.empty:
            return Response(200, _chart({"meta": meta, "indicators": {"quote": [{}]}}))
        series = self.series(symbol)
        stamps = series["timestamp"]
        pick = (stamps >= lo) & (stamps < hi)
        result = {
            "meta": meta,
            "timestamp": stamps[pick].tolist(),
            "indicators": {
                "quote": [
                    {k: series[k][pick].round(4).tolist() for k in ("open", "high", "low", "close")}
                    | {"volume": series["volume"][pick].tolist()}
                ],
                "adjclose": [{"adjclose": series["adjclose"][pick].round(6).tolist()}],
            },
        }
        events = self.events(symbol, series, lo, hi)
        if events:
            result["events"] = events
        return Response(200, _chart(result))

    # -- synthetic data
    def series(self, symbol: str) -> dict[str, np.ndarray]:
        """The symbol's whole history as served now: same symbol and clock, same numbers.

        Kept per state (clock and the symbol's scripted events), as Yahoo serves a stored
        history: rebuilding ten years for each five-session request would make the stand-in,
        not the code under test, what a benchmark measures."""
        state = (
            symbol,
            self.today,
            tuple(sorted(self.splits.get(symbol, {}).items())),
            tuple(sorted(self.dividends.get(symbol, {}).items()))
            if symbol in self.dividends
            else None,
            tuple(sorted(self.missing.get(symbol, ()))),
            tuple(sorted(self.holiday_bars.get(symbol, ()))),
        )
        with self._series_lock:
            if state not in self._series:
                if len(self._series) >= 2048:
                    self._series.pop(next(iter(self._series)))
                self._series[state] = self._build_series(symbol)
            return self._series[state]

    def _build_series(self, symbol: str) -> dict[str, np.ndarray]:
        market = market_of(symbol)
        sessions, stamps = _sessions(market.calendar)
        seed = zlib.crc32(symbol.encode())
        rng = np.random.default_rng(seed)
        n = len(sessions)
        start = 20.0 + seed % 300 if market.code == "US" else 5000.0 + (seed % 900) * 100
        close = start * np.exp(np.cumsum(rng.normal(0.0003, 0.015, n)))
        opens = close * (1 + rng.normal(0, 0.004, n))
        high = np.maximum(opens, close) * (1 + np.abs(rng.normal(0, 0.006, n)))
        low = np.minimum(opens, close) * (1 - np.abs(rng.normal(0, 0.006, n)))
        volume = rng.integers(100_000, 5_000_000, n)
        # The generated path is as traded before any split: once a split is known, all of
        # history is shown in post-split units (Yahoo re-bases retroactively).
        ratio = 1.0
        for day, (num, den) in self.splits.get(symbol, {}).items():
            if self.known(day):
                ratio *= num / den
        close, opens, high, low = (a / ratio for a in (close, opens, high, low))
        volume = np.round(volume * ratio).astype("int64")
        divs = self._dividend_days(symbol, sessions, close)
        # Yahoo's close is split-adjusted, not dividend-adjusted; adjclose is both.
        factor = np.ones(n)
        for i, amount in divs.items():
            factor[:i] *= 1 - amount / close[i - 1]
        keep = np.ones(n, dtype=bool)
        if self.today is not None:
            keep &= np.asarray(sessions.date <= self.today)
        for day in self.missing.get(symbol, ()):
            keep &= np.asarray(sessions != pd.Timestamp(day))
        paid = {sessions[i]: amount for i, amount in divs.items()}
        served = {
            "timestamp": stamps,
            "sessions": sessions,
            "open": opens,
            "high": high,
            "low": low,
            "close": close,
            "adjclose": close * factor,
            "volume": volume,
        }
        served = {k: v[keep] for k, v in served.items()}
        served = self._with_holiday_bars(symbol, market.tz, served)
        where = {day: i for i, day in enumerate(served["sessions"])}
        served["dividends"] = {where[d]: a for d, a in paid.items() if d in where}
        return served

    def _with_holiday_bars(self, symbol: str, tz: str, series: dict) -> dict:
        """Add a copy of the previous session's bar on each scripted non-session day."""
        days = sorted(pd.Timestamp(d) for d in self.holiday_bars.get(symbol, ()) if self.known(d))
        if not days:
            return series
        sessions = series["sessions"]
        at = sessions.searchsorted(days)
        out = {k: np.insert(v, at, v[at - 1]) for k, v in series.items() if k != "sessions"}
        opens = [int(pd.Timestamp(f"{d.date()} 09:30", tz=tz).timestamp()) for d in days]
        out["timestamp"] = np.insert(series["timestamp"], at, opens)
        out["sessions"] = pd.DatetimeIndex(
            np.insert(sessions.to_numpy(), at, np.array(days, dtype="datetime64[ns]"))
        )
        return out

    def dividend_schedule(self, symbol: str) -> dict[dt.date, float]:
        """The dividends this symbol pays (generated quarterly unless scripted), all dates."""
        today, self.today = self.today, None
        try:
            series = self.series(symbol)
        finally:
            self.today = today
        days = series["sessions"]
        return {days[i].date(): a for i, a in series["dividends"].items()}

    def _dividend_days(self, symbol, sessions, close) -> dict[int, float]:
        if symbol in self.dividends:
            wanted = {pd.Timestamp(d): a for d, a in self.dividends[symbol].items()}
            days = {int(sessions.get_loc(d)): a for d, a in wanted.items() if d in sessions}
        else:
            # Quarterly: every 63rd session, at about 0.5% of the price.
            offset = zlib.crc32(symbol.encode()) % 63
            days = {
                i: round(close[i - 1] * 0.005, 4) for i in range(max(offset, 1), len(close), 63)
            }
        return {i: a for i, a in days.items() if self.known(sessions[i])}

    def events(self, symbol: str, series: dict, lo: int, hi: int) -> dict:
        stamps, sessions = series["timestamp"], series["sessions"]
        out: dict[str, dict] = {}
        divs = {
            str(stamps[i]): {"amount": a, "date": int(stamps[i])}
            for i, a in series["dividends"].items()
            if lo <= stamps[i] < hi
        }
        if divs:
            out["dividends"] = divs
        splits = {}
        for day, (num, den) in self.splits.get(symbol, {}).items():
            ts = pd.Timestamp(day)
            if ts in sessions and self.known(ts):
                stamp = int(stamps[sessions.get_loc(ts)])
                if lo <= stamp < hi:
                    splits[str(stamp)] = {
                        "date": stamp,
                        "numerator": num,
                        "denominator": den,
                        "splitRatio": f"{num}:{den}",
                    }
        if splits:
            out["splits"] = splits
        return out


def _chart(result: dict) -> dict:
    return {"chart": {"result": [result], "error": None}}
