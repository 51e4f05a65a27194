"""FRED through fredapi: a client with timeouts, retries and a shared rate limit; pure parsers."""

from __future__ import annotations

import datetime as dt
import http.client
import xml.etree.ElementTree as ET
from collections.abc import Callable
from urllib.error import HTTPError
from urllib.request import urlopen

import pandas as pd
import sqlalchemy as sa
from fredapi import Fred
from pydantic import SecretStr

from blocks.names import FRED_API_KEY
from tasks.alerts.redact import redact
from tasks.macro.series import (
    VINTAGE_COLUMNS,
    observations_frame,
    parse_series_info,
    vintage_windows,
    vintages_frame,
)
from tasks.settings import MissingSetting
from tasks.store.schema import macro_vintages

DEFAULT_SERIES = (
    "DGS10", "DGS2", "T10Y2Y", "FEDFUNDS", "DFF", "CPIAUCSL", "CPILFESL", "UNRATE", "PAYEMS",
    "VIXCLS", "DTWEXBGS", "DCOILWTICO", "T10YIE", "DEXKOUS",
)  # fmt: skip


class FredError(RuntimeError):
    """FRED refused or could not answer a request; the message is FRED's own, scrubbed.

    transient: worth asking again (network error, timeout, 429, 5xx); the task retries those.
    """

    def __init__(self, message: str, status: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


class FredKeyError(FredError):
    """FRED refused the API key: every series would fail the same way."""


def scrub(text: object, *secrets: str | None) -> str:
    """Text with every api_key=... and every given secret replaced by ***."""
    return redact(text, secrets)


# ------------------------------------------------------------------------------ the client


def resolve_api_key(settings) -> SecretStr:
    """The key from the Secret block 'fred-api-key', else INVESTFLOW_FRED_API_KEY."""
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(FRED_API_KEY).get()
    except ValueError:  # no such block: fall back to the setting
        value = None
    if value:
        return SecretStr(str(value))
    if settings.fred_api_key is not None and settings.fred_api_key.get_secret_value():
        return settings.fred_api_key
    raise MissingSetting(
        f"No FRED API key: create a Prefect Secret block named '{FRED_API_KEY}' or set "
        "INVESTFLOW_FRED_API_KEY (environment or .env)"
    )


def error_message(body: bytes) -> str | None:
    """FRED's message from an error body (<error code=".." message=".."/>), if it has one."""
    try:
        return ET.fromstring(body).get("message")
    except ET.ParseError:
        return None


class TimedFred(Fred):
    """fredapi's Fred with a timeout, a polite wait before every request and classified errors.

    One attempt per request: retries belong to the task (ingest_series in flows/macro.py),
    which retries only what FredError marks transient.
    """

    def __init__(
        self,
        api_key: SecretStr,
        base_url: str,
        timeout_s: float,
        *,
        before_request: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(api_key=api_key.get_secret_value())
        self.root_url = base_url.rstrip("/") + "/fred"
        self.timeout_s = timeout_s
        self.before_request = before_request or (lambda: None)

    def __repr__(self) -> str:  # the object holds the key: never show it
        return f"TimedFred(root_url={self.root_url!r})"

    # fredapi sends every call through its private __fetch_data (name-mangled), which has no
    # timeout; overriding it here covers all of fredapi's public methods.
    def _Fred__fetch_data(self, url: str) -> ET.Element:
        where = scrub(url.removeprefix(self.root_url), self.api_key)
        self.before_request()
        try:
            body = self._get(url)
        except HTTPError as exc:
            message = scrub(
                error_message(exc.read()) or f"HTTP {exc.code} {exc.reason}", self.api_key
            )
            if exc.code in (401, 403) or (exc.code == 400 and not self._key_accepted()):
                raise FredKeyError(f"FRED refused the API key: {message}", exc.code) from None
            transient = exc.code == 429 or exc.code >= 500
            raise FredError(
                f"FRED {where}: HTTP {exc.code} ({message})" if transient else message,
                exc.code,
                transient,
            ) from None
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, refusals
            why = scrub(f"{type(exc).__name__}: {exc}", self.api_key)
            raise FredError(f"FRED {where} failed: {why}", None, transient=True) from None
        try:
            return ET.fromstring(body)
        except ET.ParseError:
            raise FredError(f"FRED answered {where} with unreadable XML") from None

    def _get(self, url: str) -> bytes:
        with urlopen(url + "&api_key=" + self.api_key, timeout=self.timeout_s) as resp:
            return resp.read()

    def _key_accepted(self) -> bool:
        """Ask for the root category, which always exists: a 400 there means the key.

        FRED answers 400 both for an unknown series and for an unregistered key; which one
        it was is told by the status of a request that only the key can fail, never by
        reading the message.
        """
        self.before_request()
        try:
            self._get(f"{self.root_url}/category?category_id=0")
        except HTTPError as exc:
            return exc.code != 400
        except (OSError, http.client.HTTPException):
            return True  # cannot tell: report FRED's answer about the series as it is
        return True


def is_transient(exc: BaseException | None) -> bool:
    """Worth a retry: FRED was unreachable, slow, throttling or failing (5xx)."""
    return isinstance(exc, FredError) and exc.transient


def build_client(settings, api_key: SecretStr, **options) -> TimedFred:
    """A client for this run: endpoint and timeout from settings, FRED's shared rate limit."""
    from tasks.limits import polite

    options.setdefault("before_request", lambda: polite("fred"))
    return TimedFred(api_key, settings.fred_base_url, settings.http_timeout_s, **options)


# --------------------------------------------------------------------------- thin I/O


def fetch_info(client: Fred, series_id: str) -> dict:
    """Series metadata as a macro_series row."""
    return parse_series_info(series_id, client.get_series_info(series_id).to_dict())


def fetch_observations(client: Fred, series_id: str, since: dt.date) -> pd.DataFrame:
    """Current observations from since onward."""
    return observations_frame(series_id, client.get_series(series_id, observation_start=since))


def fetch_vintages(client: Fred, series_id: str, since: dt.date) -> pd.DataFrame:
    """Every value observations from since have had, in windows under FRED's vintage limit."""
    windows = vintage_windows(client.get_series_vintage_dates(series_id), since)
    frames = [
        vintages_frame(
            series_id,
            client.get_series_all_releases(series_id, start.isoformat(), end.isoformat()),
            since,
        )
        for start, end in windows
    ]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=VINTAGE_COLUMNS)


def read_vintages(engine: sa.Engine, series_id: str, since: dt.date) -> pd.DataFrame:
    """The stored revision history of observations from since."""
    query = sa.select(*(macro_vintages.c[c] for c in VINTAGE_COLUMNS)).where(
        macro_vintages.c.series_id == series_id, macro_vintages.c.obs_date >= since
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return pd.DataFrame(rows, columns=VINTAGE_COLUMNS)
