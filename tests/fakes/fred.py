"""A local FRED stand-in: the XML endpoints fredapi calls, with ALFRED-style vintages."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

from tests.fakes.base import FakeServer, Request, Response

EARLIEST = dt.date(1776, 7, 4)
LATEST = dt.date(9999, 12, 31)
MAX_VINTAGES = 2000  # FRED refuses a real-time period holding more vintage dates than this

BAD_KEY = (
    "Bad Request.  The value for variable api_key is not registered.  "
    "Read https://fred.stlouisfed.org/docs/api/api_key.html for more information."
)
NO_SERIES = "Bad Request.  The series does not exist."
TOO_MANY_VINTAGES = (
    "Bad Request.  This request would return more than 2000 vintage dates.  "
    "Narrow the real-time period (realtime_start, realtime_end)."
)
RATE_LIMITED = "Too Many Requests.  Exceeded Rate Limit"


def _date(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def error_xml(status: int, message: str) -> str:
    """An error body as FRED writes it."""
    return (
        '<?xml version="1.0" encoding="utf-8" ?>\n'
        f'<error code="{status}" message={quoteattr(message)}/>'
    )


@dataclass
class FakeSeries:
    """One series: metadata, and per observation date its values with their realtime_start."""

    series_id: str
    title: str = "A test series"
    frequency: str = "Monthly"
    frequency_short: str = "M"
    units: str = "Index 1982-1984=100"
    seasonal_adjustment: str = "Seasonally Adjusted"
    seasonal_adjustment_short: str = "SA"
    last_updated: str = "2024-01-11 07:46:02-06"
    # obs date -> [(realtime_start, value as FRED writes it, '.' for missing)], oldest first
    history: dict[dt.date, list[tuple[dt.date, str]]] = field(default_factory=dict)

    def vintage_dates(self) -> list[dt.date]:
        return sorted({start for values in self.history.values() for start, _ in values})

    def spans(self, obs_date: dt.date):
        """(start, end, value) of each value this observation has had."""
        values = self.history[obs_date]
        for i, (start, value) in enumerate(values):
            end = values[i + 1][0] - dt.timedelta(days=1) if i + 1 < len(values) else LATEST
            yield start, end, value


class FakeFred(FakeServer):
    """FRED at /fred/...: series, series/observations, series/vintagedates; XML like FRED's.

    `leaky_errors=True` makes error messages echo the request URL (key included), as a badly
    behaved proxy might, so tests prove the client scrubs whatever comes back.
    """

    def __init__(
        self,
        api_key: str = "abcdef0123456789abcdef0123456789",
        *,
        today=None,
        leaky_errors: bool = False,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.today = today or dt.date.today()
        self.leaky_errors = leaky_errors
        self.series: dict[str, FakeSeries] = {}

    # -- scripting
    def add_series(
        self, series_id: str, observations: dict, *, lag_days: int = 1, published=None, **meta
    ) -> FakeSeries:
        """Add a series; each value is first published lag_days after its date (or on published)."""
        series = FakeSeries(series_id, **meta)
        for obs_date, value in observations.items():
            obs_date = _date(obs_date)
            start = _date(published) if published else obs_date + dt.timedelta(days=lag_days)
            series.history[obs_date] = [(start, _fred_value(value))]
        self.series[series_id] = series
        return series

    def revise(self, series_id: str, obs_date, value, *, on=None) -> None:
        """Publish a new value for one observation, effective from `on` (default today)."""
        series = self.series[series_id]
        on = _date(on) if on else self.today
        series.history.setdefault(_date(obs_date), []).append((on, _fred_value(value)))
        series.history[_date(obs_date)].sort()
        series.last_updated = f"{on.isoformat()} 07:45:00-05"

    def fail_xml(
        self,
        match: str,
        status: int,
        message: str = RATE_LIMITED,
        times: int = 1,
        delay_s: float = 0.0,
    ) -> None:
        """Answer the next `times` matching requests with a FRED error body (or a stall)."""
        self.fail(match, status, error_xml(status, message), times=times, delay_s=delay_s)

    def stall(self, match: str, delay_s: float, times: int = 1) -> None:
        """Let the next matching requests hang for delay_s before answering (then with 503)."""
        self.fail(match, 503, error_xml(503, "Service Unavailable"), times=times, delay_s=delay_s)

    # -- serving
    def route(self, req: Request) -> Response:
        if req.query.get("api_key") != self.api_key:
            return self._error(req, 400, BAD_KEY)
        handler = {
            "/fred/series": self._series,
            "/fred/series/observations": self._observations,
            "/fred/series/vintagedates": self._vintage_dates,
        }.get(req.path)
        if handler is None:
            return self._error(req, 404, "Not Found.  The requested URL was not found.")
        series = self.series.get(req.query.get("series_id", ""))
        if series is None:
            return self._error(req, 400, NO_SERIES)
        return handler(req, series)

    def _error(self, req: Request, status: int, message: str) -> Response:
        if self.leaky_errors:
            query = "&".join(f"{k}={v}" for k, v in req.query.items())
            message = f"{message} (request: {req.path}?{query})"
        return Response(status, error_xml(status, message), {"Content-Type": "text/xml"})

    def _realtime(self, req: Request) -> tuple[dt.date, dt.date]:
        return (
            _date(req.query.get("realtime_start", self.today)),
            _date(req.query.get("realtime_end", self.today)),
        )

    def _series(self, req: Request, s: FakeSeries) -> Response:
        rt_start, rt_end = self._realtime(req)
        dates = sorted(s.history)
        attrs = {
            "id": s.series_id,
            "realtime_start": rt_start,
            "realtime_end": rt_end,
            "title": s.title,
            "observation_start": dates[0] if dates else "",
            "observation_end": dates[-1] if dates else "",
            "frequency": s.frequency,
            "frequency_short": s.frequency_short,
            "units": s.units,
            "units_short": s.units[:20],
            "seasonal_adjustment": s.seasonal_adjustment,
            "seasonal_adjustment_short": s.seasonal_adjustment_short,
            "last_updated": s.last_updated,
            "popularity": "80",
            "notes": "From the stand-in.",
        }
        return _xml(
            f'<seriess realtime_start="{rt_start}" realtime_end="{rt_end}">\n'
            f"  <series {_attrs(attrs)}/>\n</seriess>"
        )

    def _observations(self, req: Request, s: FakeSeries) -> Response:
        rt_start, rt_end = self._realtime(req)
        if sum(1 for d in s.vintage_dates() if rt_start <= d <= rt_end) > MAX_VINTAGES:
            return self._error(req, 400, TOO_MANY_VINTAGES)
        obs_start = _date(req.query.get("observation_start", EARLIEST))
        obs_end = _date(req.query.get("observation_end", LATEST))
        rows = []
        for obs_date in sorted(s.history):
            if not obs_start <= obs_date <= obs_end:
                continue
            for start, end, value in s.spans(obs_date):
                # Each value's validity clipped to the asked real-time period, as ALFRED does.
                if start <= rt_end and end >= rt_start:
                    rows.append(
                        _attrs(
                            {
                                "realtime_start": max(start, rt_start),
                                "realtime_end": min(end, rt_end),
                                "date": obs_date,
                                "value": value,
                            }
                        )
                    )
        head = _attrs(
            {
                "realtime_start": rt_start,
                "realtime_end": rt_end,
                "observation_start": obs_start,
                "observation_end": obs_end,
                "units": "lin",
                "output_type": "1",
                "file_type": "xml",
                "order_by": "observation_date",
                "sort_order": "asc",
                "count": len(rows),
                "offset": "0",
                "limit": "100000",
            }
        )
        body = "".join(f"  <observation {row}/>\n" for row in rows)
        return _xml(f"<observations {head}>\n{body}</observations>")

    def _vintage_dates(self, req: Request, s: FakeSeries) -> Response:
        dates = s.vintage_dates()
        body = "".join(f"  <vintage_date>{d}</vintage_date>\n" for d in dates)
        return _xml(
            f'<vintage_dates realtime_start="{EARLIEST}" realtime_end="{LATEST}" '
            f'order_by="vintage_date" sort_order="asc" count="{len(dates)}" offset="0" '
            f'limit="10000">\n{body}</vintage_dates>'
        )

    # -- reading what happened
    def times(self, match: str = "/fred/") -> list[float]:
        """Arrival times of the requests whose path contains match."""
        return sorted(r.at for r in self.requests if match in r.path)

    def max_per_second(self, match: str = "/fred/") -> int:
        """The most requests that arrived within any one-second window."""
        times = self.times(match)
        return max((sum(1 for u in times if t <= u < t + 1.0) for t in times), default=0)


def _fred_value(value) -> str:
    if value is None or value == ".":
        return "."
    return str(value)


def _attrs(values: dict) -> str:
    return " ".join(f"{k}={quoteattr(str(v))}" for k, v in values.items())


def _xml(body: str) -> Response:
    return Response(
        200, '<?xml version="1.0" encoding="utf-8" ?>\n' + body, {"Content-Type": "text/xml"}
    )
