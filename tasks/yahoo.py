"""Yahoo Finance via yfinance 1.7: a session aimed at any base URL, per-symbol errors, backoff."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import requests
from prefect import task
from prefect.cache_policies import NO_CACHE
from requests.adapters import HTTPAdapter
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import Timeout
from yfinance.exceptions import YFRateLimitError, YFTickerMissingError

from tasks.calendars import Fetch, Market
from tasks.limits import polite

YAHOO_DEFAULT_URL = "https://query2.finance.yahoo.com"
SOURCE = "yahoo"
PRICE_COLUMNS = {
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Adj Close": "adj_close",
    "Volume": "volume",
}


class YahooServerError(RuntimeError):
    """Yahoo answered 5xx for a chart request (worth retrying)."""


class YahooThrottled(RuntimeError):
    """Yahoo kept throttling (HTTP 429) past every retry: the run must stop."""


# ---------------------------------------------------------------------------- session


class RewriteAdapter(HTTPAdapter):
    """Send every *.yahoo.com request (cookie, crumb, chart, quote) to another base URL."""

    def __init__(self, base_url: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.base = urlsplit(base_url.rstrip("/"))

    def send(self, request, **kwargs):
        parts = urlsplit(request.url)
        if (parts.hostname or "").endswith("yahoo.com"):
            # The stand-in tells fc.yahoo.com from query2 by this header, since paths overlap.
            request.headers["X-Yahoo-Host"] = parts.hostname
            path = self.base.path + parts.path
            request.url = urlunsplit(
                (self.base.scheme, self.base.netloc, path, parts.query, parts.fragment)
            )
        return super().send(request, **kwargs)


def _raise_on_server_error(response, *args, **kwargs):
    # yfinance turns a 5xx into a JSON decoding error; raise something a retry can recognise.
    if response.status_code >= 500 and "/v8/finance/chart/" in response.url:
        raise YahooServerError(f"HTTP {response.status_code} from Yahoo chart API")
    return response


@lru_cache(maxsize=8)
def yahoo_session(base_url: str) -> requests.Session | None:
    """A requests session aimed at base_url, or None for real Yahoo (yfinance's curl_cffi)."""
    if base_url.rstrip("/") == YAHOO_DEFAULT_URL:
        return None  # curl_cffi's browser fingerprint is what real Yahoo tolerates best
    session = requests.Session()
    adapter = RewriteAdapter(base_url)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.hooks["response"].append(_raise_on_server_error)
    return session


def reset_yfinance(session: requests.Session | None) -> None:
    """Point yfinance's process-wide client at session and forget its cached responses."""
    import yfinance as yf
    from yfinance.data import YfData

    # Raise per-symbol errors instead of logging them: 1.7 has no yf.shared._ERRORS to read.
    yf.config.debug.hide_exceptions = False
    yf.config.network.retries = 0  # retries are ours, with backoff and a polite rate
    if session is not None:
        YfData(session=session)
    # cache_get keeps up to 64 past-range responses per process: a memory cost, and a re-run
    # would never reach Yahoo (or a new stand-in) again.
    YfData.cache_get.cache_clear()


# ---------------------------------------------------------------------------- fetch


@dataclass
class History:
    """One symbol's download: yfinance's frame and the metadata that came with it."""

    symbol: str
    frame: pd.DataFrame
    currency: str | None
    exchange_tz: str | None


def fetch_history(
    symbol: str,
    start,
    end,
    tz: str,
    session: requests.Session | None,
    timeout_s: float,
) -> History:
    """One chart request for a symbol: daily bars with unadjusted close, adj close and actions."""
    import yfinance as yf
    from yfinance.data import YfData

    ticker = yf.Ticker(symbol, session=session)
    # We know the exchange's timezone; this spares yfinance one extra chart request per symbol
    # (its tz cache would not survive a fresh Fargate container anyway).
    ticker._tz = tz
    try:
        frame = ticker.history(
            start=str(start),
            end=str(end),
            interval="1d",
            auto_adjust=False,
            actions=True,
            repair=False,
            timeout=timeout_s,
        )
        meta = ticker.history_metadata
        currency = meta["currency"] if "currency" in meta else None
        exchange_tz = meta["exchangeTimezoneName"] if "exchangeTimezoneName" in meta else tz
    finally:
        YfData.cache_get.cache_clear()
    return History(symbol.upper(), frame, currency, exchange_tz)


def describe_error(exc: BaseException) -> str:
    """A short, user-facing reason for a symbol's failure."""
    if isinstance(exc, YFTickerMissingError):
        return f"no data: {exc.rationale}"
    if isinstance(exc, ValueError) and "Expecting" in str(exc) or "JSON" in type(exc).__name__:
        return f"malformed payload: {exc}"
    if isinstance(exc, (KeyError, TypeError, IndexError)):
        return f"malformed payload: {type(exc).__name__} {exc}"
    return f"{type(exc).__name__}: {exc}"


def is_throttle(exc: BaseException) -> bool:
    return isinstance(exc, YFRateLimitError)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (YahooServerError, Timeout, RequestsConnectionError))


def backoff_delay(attempt: int, base_s: float, max_s: float, jitter: float) -> float:
    """Exponential backoff with jitter: base * 2^attempt, capped, plus up to `jitter` of it."""
    delay = min(max_s, base_s * 2**attempt)
    return delay + delay * jitter * random.random()


def fetch_with_backoff(
    fetch: Callable[[], History],
    *,
    attempts: int = 5,
    base_s: float = 2.0,
    max_s: float = 60.0,
    before_request: Callable[[], None] = lambda: None,
    sleep: Callable[[float], None] = time.sleep,
) -> History:
    """Call fetch, retrying throttling and transient errors; other errors go straight up.

    Throttling that outlasts the attempts raises YahooThrottled, which should stop the run.
    """
    for attempt in range(attempts):
        before_request()
        try:
            return fetch()
        except Exception as exc:
            last = attempt == attempts - 1
            if is_throttle(exc):
                if last:
                    raise YahooThrottled(
                        f"Yahoo still throttling (HTTP 429) after {attempts} attempts"
                    ) from exc
            elif not is_transient(exc) or last:
                raise
            sleep(backoff_delay(attempt, base_s, max_s, jitter=0.5))
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- parse


@dataclass
class Frames:
    """Rows ready for the store from one or more symbols."""

    prices: pd.DataFrame
    actions: pd.DataFrame
    instruments: list[dict] = field(default_factory=list)


def to_frames(history: History, market: str, currency: str) -> Frames:
    """Turn yfinance's frame into daily_prices and corporate_actions rows (pure)."""
    df = history.frame
    symbol = history.symbol
    currency = history.currency or currency
    if df is None or df.empty:
        empty = pd.DataFrame(columns=["symbol", "trade_date"])
        return Frames(empty, pd.DataFrame(columns=["symbol", "action_date"]))
    dates = pd.Index(df.index.date, name="trade_date")
    prices = pd.DataFrame(
        {new: df[old].to_numpy() for old, new in PRICE_COLUMNS.items() if old in df.columns},
        index=dates,
    )
    prices = drop_empty_rows(prices)
    prices.insert(0, "symbol", symbol)
    prices = prices.reset_index()
    prices["currency"] = currency
    prices["source"] = SOURCE
    actions = []
    for column, kind in (("Dividends", "dividend"), ("Stock Splits", "split")):
        if column in df.columns:
            values = pd.Series(df[column].to_numpy(), index=dates)
            values = values[values.fillna(0) != 0]
            actions.append(
                pd.DataFrame(
                    {
                        "symbol": symbol,
                        "action_date": values.index,
                        "action_type": kind,
                        "value": values.to_numpy(dtype=float),
                        "source": SOURCE,
                    }
                )
            )
    actions_frame = pd.concat(actions, ignore_index=True) if actions else pd.DataFrame()
    instrument = {
        "symbol": symbol,
        "market": market,
        "currency": currency,
        "exchange_tz": history.exchange_tz,
    }
    return Frames(prices, actions_frame, [instrument])


def drop_empty_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop rows where every price is missing: the other market's holidays in a mixed download."""
    priced = [c for c in frame.columns if c in ("open", "high", "low", "close", "adj_close")]
    if not priced:
        return frame
    return frame[frame[priced].notna().any(axis=1)]


def download_to_long(wide: pd.DataFrame) -> pd.DataFrame:
    """A yf.download (group_by='column') frame to one row per symbol and date, empty rows gone."""
    if wide.empty:
        return pd.DataFrame(columns=["symbol", "trade_date"])
    long = wide.stack(level="Ticker", future_stack=True).rename(columns=PRICE_COLUMNS)
    long.index = long.index.set_names(["trade_date", "symbol"])
    long = drop_empty_rows(long.reset_index())
    long["trade_date"] = pd.to_datetime(long["trade_date"]).dt.date
    keep = ["symbol", "trade_date", *[c for c in PRICE_COLUMNS.values() if c in long.columns]]
    return long[keep].reset_index(drop=True)


# ---------------------------------------------------------------------------- task


@dataclass
class ChunkResult:
    """What one chunk fetched, and which symbols failed and why."""

    frames: Frames
    errors: dict[str, str]
    throttled: str | None = None


@task(name="fetch-prices", cache_policy=NO_CACHE, persist_result=False)
def fetch_chunk(
    plans: list[Fetch],
    market: Market,
    base_url: str,
    timeout_s: float = 30.0,
    backoff_s: float = 2.0,
    rate_limit: str | None = "yahoo",
    workers: int = 2,
) -> ChunkResult:
    """Fetch a chunk of symbols one request at a time, each after a polite rate-limit slot."""
    session = yahoo_session(base_url)
    reset_yfinance(session)
    before = (lambda: polite(rate_limit)) if rate_limit else (lambda: None)

    def one(plan: Fetch) -> Frames | str:
        history = fetch_with_backoff(
            lambda: fetch_history(plan.symbol, plan.start, plan.end, market.tz, session, timeout_s),
            base_s=backoff_s,
            before_request=before,
        )
        frames = to_frames(history, market.code, market.currency)
        return frames if not frames.prices.empty else "no data: empty result"

    parts: list[Frames] = []
    errors: dict[str, str] = {}
    throttled = None
    # A few requests in flight hide the rate-limit round trip; the server-side limit still
    # decides the pace. Results are taken in order, so a throttled symbol stops the rest.
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="yahoo") as pool:
        futures = [(plan, pool.submit(one, plan)) for plan in plans]
        for plan, future in futures:
            if throttled:
                future.cancel()
                continue
            try:
                outcome = future.result()
            except YahooThrottled as exc:
                throttled = f"{plan.symbol}: {exc}"
                errors[plan.symbol] = str(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - one symbol's failure never stops the chunk
                errors[plan.symbol] = describe_error(exc)
                continue
            if isinstance(outcome, str):
                errors[plan.symbol] = outcome
            else:
                parts.append(outcome)
    return ChunkResult(combine(parts), errors, throttled)


def combine(parts: list[Frames]) -> Frames:
    """One Frames from many (pure)."""
    if not parts:
        return Frames(pd.DataFrame(columns=["symbol", "trade_date"]), pd.DataFrame(), [])
    actions = [p.actions for p in parts if not p.actions.empty]
    return Frames(
        pd.concat([p.prices for p in parts], ignore_index=True),
        pd.concat(actions, ignore_index=True) if actions else pd.DataFrame(),
        [i for p in parts for i in p.instruments],
    )
