"""Parameter types for flow signatures: checked before any work, named in the error.

Prefect validates a run's parameters against these (pydantic) when the run starts, and the
server checks the JSON-schema part (ranges, patterns) when `prefect deployment run` creates
the run, so a bad value fails in seconds with the parameter's name, not after retries.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AfterValidator, Field


def not_in_future(day: dt.date) -> dt.date:
    """A date on or before today (UTC): no source has data from the future."""
    today = dt.datetime.now(dt.UTC).date()
    if day > today:
        raise ValueError(f"{day} is in the future (today is {today} UTC)")
    return day


AtLeastOne = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0, le=3600.0)]
PastDate = Annotated[dt.date, AfterValidator(not_in_future)]
MarketCode = Literal["US", "KR"]
Device = Literal["auto", "cpu", "cuda"]
# Yahoo symbols (AAPL, BRK-B, 005930.KS, ^GSPC); the store's own check upper-cases them.
Symbol = Annotated[str, Field(pattern=r"^[A-Za-z0-9.^=-]{1,20}$")]
# A universe the universes flow keeps (tasks/universes/sources.py): sp500, kospi200, ...
UniverseName = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,24}$")]
# A Prefect global concurrency limit used as a request rate (tasks/limits.py): yahoo, yahoo-2.
RateLimitName = Annotated[str, Field(pattern=r"^[a-z0-9-]{1,40}$")]
SeriesId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,40}$")]
# A database on the configured server, by name only: a URL would carry its password into the
# run's stored parameters.
DatabaseName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")]
