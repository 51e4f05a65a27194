"""Parameter types for flow signatures: checked before any work, named in the error.

Prefect validates a run's parameters against these (pydantic) when the run starts, and the
server checks the JSON-schema part (ranges, patterns) when `prefect deployment run` creates
the run, so a bad value fails in seconds with the parameter's name, not after retries.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, WithJsonSchema

from tasks import clock


def not_in_future(day: dt.date) -> dt.date:
    """A date on or before today (UTC): no source has data from the future."""
    today = clock.now().date()
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
# run's stored parameters. A refusal must not repeat the value either (it reaches the
# submitter's terminal, the HTTP 422 body and the UI): pydantic's pattern error and
# jsonschema's `pattern` message both quote it, so neither is used. The server-side schema
# says "if it is not a name, then it must be this sentence", and jsonschema's `const` error
# quotes only the sentence.
_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")
DATABASE_NAME_RULE = (
    "a database name on the configured server (letters, digits, _ $ -; at most 63), not a URL: "
    "connection URLs belong in INVESTFLOW_BACKUP_DATABASE_URLS"
)


def database_name(value: str) -> str:
    """value if it is a bare database name; the error never quotes it (it may be a URL)."""
    if not _DATABASE_NAME.match(value):
        raise ValueError(f"expected {DATABASE_NAME_RULE} (value not shown: it may hold a password)")
    return value


DatabaseName = Annotated[
    str,
    AfterValidator(database_name),
    WithJsonSchema(
        {
            "type": "string",
            "if": {"not": {"pattern": _DATABASE_NAME.pattern}},
            "then": {"const": DATABASE_NAME_RULE},
        }
    ),
]
