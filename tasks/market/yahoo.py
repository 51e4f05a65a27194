"""Yahoo Finance via yfinance 1.7 and its curl_cffi transport: per-symbol errors, retries."""

from __future__ import annotations

import contextvars
import datetime as dt
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import orjson
from curl_cffi import CurlOpt
from curl_cffi import requests as curl_requests
from curl_cffi.requests.exceptions import ConnectionError as CurlConnectionError
from curl_cffi.requests.exceptions import Timeout as CurlTimeout
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from yfinance.exceptions import YFDataException, YFRateLimitError, YFTickerMissingError

from tasks.limits import polite, slot_blocks
from tasks.market.calendars import Fetch, Market
from tasks.market.chart import CHART_URL, chart_query, read_chart
from tasks.market.frames import Frames, History, to_frames
from tasks.market.quality import Checked, check_chunk
from tasks.retries import retry_when

YAHOO_DEFAULT_URL = "https://query2.finance.yahoo.com"


class YahooServerError(RuntimeError):
    """Yahoo answered 5xx for a chart request (worth retrying)."""


class YahooThrottled(RuntimeError):
    """Yahoo kept throttling (HTTP 429) past every retry: the run must stop."""


# ---------------------------------------------------------------------------- session

# Every host yfinance 1.7 reaches for prices: the cookie, consent and crumb calls, the chart.
YAHOO_HOSTS = (
    "fc.yahoo.com",
    "guce.yahoo.com",
    "consent.yahoo.com",
    "finance.yahoo.com",
    "query1.finance.yahoo.com",
    "query2.finance.yahoo.com",
)


class YahooSession(curl_requests.Session):
    """yfinance's own kind of session (curl_cffi with Chrome's fingerprint, as yfinance makes
    it) whose chart 5xx answers raise: yfinance would turn them into a JSON decoding error,
    and a retry must tell a server error from a bad payload by its status."""

    def request(self, method, url, *args, **kwargs):
        response = super().request(method, url, *args, **kwargs)
        if response.status_code >= 500 and "/v8/finance/chart/" in str(url):
            raise YahooServerError(f"HTTP {response.status_code} from Yahoo chart API")
        return response


def resolve_entries(base_url: str) -> list[str]:
    """curl's --resolve entries that send every Yahoo host to base_url's address, if it is
    not Yahoo's own: URLs, Host headers and TLS names stay Yahoo's, as with an /etc/hosts
    entry, so a mirror (or a local stand-in) must answer for Yahoo's names on port 443."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if host == "yahoo.com" or host.endswith(".yahoo.com"):
        return []
    if parts.scheme != "https" or parts.port not in (None, 443):
        raise ValueError(
            f"INVESTFLOW_YAHOO_BASE_URL={base_url!r}: Yahoo is reached over https on port 443; "
            "give https://ADDRESS of a host that answers for Yahoo's names there"
        )
    address = socket.gethostbyname(host)
    return [f"{name}:443:{address}" for name in YAHOO_HOSTS]


@lru_cache(maxsize=8)
def yahoo_session(base_url: str = YAHOO_DEFAULT_URL, ca_bundle: str | None = None) -> YahooSession:
    """The session yfinance talks through: its own client, aimed at base_url's address and
    trusting ca_bundle (a mirror's own CA) when given."""
    entries = resolve_entries(base_url)
    return YahooSession(
        impersonate="chrome",
        curl_options={CurlOpt.RESOLVE: entries} if entries else None,
        verify=ca_bundle or True,
    )


def reset_yfinance(session: YahooSession) -> None:
    """Point yfinance's process-wide client at session and forget its cached responses."""
    import yfinance as yf
    from yfinance.data import YfData

    # Raise per-symbol errors instead of logging them: 1.7 has no yf.shared._ERRORS to read.
    yf.config.debug.hide_exceptions = False
    yf.config.network.retries = 0  # retries are fetch-symbol's task retries, at a polite rate
    YfData(session=session)
    # cache_get keeps up to 64 past-range responses per process: a memory cost, and a re-run
    # would never reach Yahoo (or a new stand-in) again.
    YfData.cache_get.cache_clear()


# ---------------------------------------------------------------------------- fetch


def fetch_history(
    symbol: str,
    start,
    end,
    tz: str,
    session: YahooSession,
    timeout_s: float,
) -> History:
    """One chart request for a symbol: daily bars with unadjusted close, adj close and actions.

    The request is yfinance's own (its client, URL and query, as Ticker.history() sends it);
    the answer is read by tasks/market/chart.py instead of history(), whose pandas work cost
    more than the request itself."""
    from yfinance.data import YfData

    symbol = symbol.upper()
    query = chart_query(start, end, tz)
    response = YfData(session=session).get(CHART_URL + symbol, params=query, timeout=timeout_s)
    if "Will be right back" in response.text:
        raise YFDataException("*** YAHOO! FINANCE IS CURRENTLY DOWN! ***")
    return read_chart(symbol, chart_json(response), query, tz)


def chart_json(response) -> dict:
    """A chart answer's JSON, as yfinance's response.json() reads it, but by orjson: a ten-year
    chart parses in a quarter of the time. What orjson refuses and the standard library takes
    (NaN and Infinity, which JSON has not and Yahoo does not send) goes to the latter, so
    both accept and refuse the same answers."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.json()


def describe_error(exc: BaseException) -> str:
    """A short, user-facing reason for a symbol's failure."""
    if isinstance(exc, YFTickerMissingError):
        return f"no data: {exc.rationale}"
    if isinstance(exc, ValueError) and "Expecting" in str(exc) or "JSON" in type(exc).__name__:
        return f"malformed payload: {exc}"
    if isinstance(exc, (KeyError, TypeError, IndexError)):
        return f"malformed payload: {type(exc).__name__} {exc}"
    return f"{type(exc).__name__}: {exc}"


def is_throttle(exc: BaseException | None) -> bool:
    return isinstance(exc, YFRateLimitError)


def is_transient(exc: BaseException | None) -> bool:
    """5xx, timeouts and connection errors (refused, reset, closed) of curl_cffi, the
    transport yfinance uses: worth another try."""
    return isinstance(exc, (YahooServerError, CurlTimeout, CurlConnectionError))


def retry_worthy(exc: BaseException) -> bool:
    """Throttling (429), 5xx, timeouts and connection errors: a second try may succeed.

    A delisted symbol or a malformed payload would answer the same the second time.
    """
    return is_throttle(exc) or is_transient(exc)


# retry_condition_fn of fetch-symbol: retry_worthy failures only.
retry_transient = retry_when(retry_worthy)


# Two retries per symbol (README: Retries, timeouts and parameters), backing off exponentially
# (2 s, 4 s by default) with jitter; the delays follow the run's backoff_s (see fetch_chunk).
@task(
    name="fetch-symbol",
    task_run_name="fetch-{symbol}",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2.0),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
)
def fetch_symbol(
    symbol: str,
    start,
    end,
    tz: str,
    base_url: str,
    timeout_s: float,
    rate_limit: str,
    ca_bundle: str | None = None,
) -> History:
    """One symbol's chart request, after a slot of rate_limit; retried when transient."""
    polite(rate_limit)
    return fetch_history(symbol, start, end, tz, yahoo_session(base_url, ca_bundle), timeout_s)


# ---------------------------------------------------------------------------- task


@dataclass
class ChunkResult:
    """What one chunk fetched, and which symbols failed and why."""

    frames: Frames
    errors: dict[str, str]
    throttled: str | None = None
    checked: Checked | None = None  # the rows' checks, when the fetch was told the last session


@task(name="fetch-prices", cache_policy=NO_CACHE, persist_result=False)
def fetch_chunk(
    plans: list[Fetch],
    market: Market,
    base_url: str,
    timeout_s: float = 30.0,
    backoff_s: float = 2.0,
    rate_limit: str = "yahoo",
    workers: int = 2,
    ca_bundle: str | None = None,
    through: dt.date | None = None,
    slots: int | None = None,
) -> ChunkResult:
    """Fetch a chunk of symbols, one request each, in blocks of rate-limit slots; with through
    (the last session asked for), check the rows too (tasks/market/quality.py check_chunk).
    slots: the rate limit's size where the run has just read it (else it is read here)."""
    session = yahoo_session(base_url, ca_bundle)
    reset_yfinance(session)
    # The first attempt runs bare, its slot taken in a block below: a task run per symbol
    # costs more API traffic than the request itself. What is worth retrying goes to the
    # fetch-symbol task, whose Prefect retries make up the rest of its two retries.
    retry = fetch_symbol.with_options(retries=1, retry_delay_seconds=[2 * backoff_s])

    def one(plan: Fetch) -> History:
        args = (plan.symbol, plan.start, plan.end, market.tz)
        try:
            history = fetch_history(*args, session, timeout_s)
        except Exception as exc:
            if not retry_worthy(exc):
                raise
            time.sleep(backoff_s * (1 + 0.5 * random.random()))  # the first retry's wait
            try:
                history = retry(*args, base_url, timeout_s, rate_limit, ca_bundle)
            except YFRateLimitError as again:
                raise YahooThrottled("Yahoo still throttling (HTTP 429) after 2 retries") from again
        return history

    histories: list[History] = []
    errors: dict[str, str] = {}
    throttled = None
    # A few requests in flight hide the rate-limit round trip; the server-side limit still
    # decides the pace. Results are taken in order, so a throttled symbol stops the rest.
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="yahoo") as pool:
        futures = []
        for block in slot_blocks(rate_limit, len(plans), slots):
            if any(f.done() and isinstance(f.exception(), YahooThrottled) for _, f in futures):
                break  # Yahoo is throttling us: ask for nothing more
            polite(rate_limit, occupy=block)
            for plan in plans[len(futures) : len(futures) + block]:
                # Each thread runs in a copy of this task's context, so its fetch-symbol runs
                # are children of this one (as Prefect's own thread pool task runner does it).
                futures.append((plan, pool.submit(contextvars.copy_context().run, one, plan)))
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
            histories.append(outcome)
    frames = to_frames(histories, market.code, market.currency)
    landed = {i["symbol"] for i in frames.instruments}
    for history in histories:
        if history.symbol not in landed:
            errors[history.symbol] = "no data: empty result"
    checked = None
    if through is not None:
        starts = {p.symbol: p.start for p in plans}
        checked = check_chunk(frames.prices, frames.actions, market, starts, through)
    return ChunkResult(frames, errors, throttled, checked)
