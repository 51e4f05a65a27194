"""The health page: one markdown artifact with a stable key that answers "is all well?"."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.health import ARTIFACT_KEY, health_page
from flows.prices import ingest_us_prices
from tasks.clock import shown
from tasks.market.calendars import MARKETS, last_closed_session, sessions_between
from tasks.store import schema

pytestmark = pytest.mark.integration


def page() -> str:
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return artifact.data


def test_health_page_shows_freshness_backups_model_and_flags(pg_engine):
    now = dt.datetime.now(dt.UTC)
    us_last = last_closed_session(MARKETS["US"], now)
    with pg_engine.begin() as conn:
        conn.execute(
            schema.instruments.insert(),
            [{"symbol": "AAPL", "market": "US", "currency": "USD"},
             {"symbol": "005930.KS", "market": "KR", "currency": "KRW"}],
        )  # fmt: skip
        conn.execute(
            schema.daily_prices.insert(),
            [{"symbol": "AAPL", "trade_date": us_last, "open": 1, "high": 1, "low": 1,
              "close": 1, "adj_close": 1, "volume": 1, "currency": "USD", "source": "yahoo"},
             {"symbol": "005930.KS", "trade_date": dt.date(2024, 1, 2), "open": 1, "high": 1,
              "low": 1, "close": 1, "adj_close": 1, "volume": 1, "currency": "KRW",
              "source": "yahoo"}],
        )  # fmt: skip
        conn.execute(
            schema.backup_catalog.insert().values(
                kind="postgres", target="market", status="ok",
                finished_at=now - dt.timedelta(hours=3),
            )
        )  # fmt: skip
        conn.execute(
            schema.backup_catalog.insert().values(
                kind="verify", target="market", status="verified",
                verified_at=now - dt.timedelta(days=3),
            )
        )  # fmt: skip
        conn.execute(
            schema.model_versions.insert().values(
                version="us-20241101-abc", market="US", feature_spec={}, window=60,
                sha256="0" * 64, uri="file:///x.pt", promoted=True,
                metrics={"model": {"mse": 0.5, "mae": 0.4, "hit_rate": 0.55},
                         "zero_return": {"mse": 0.6}, "yesterday_return": {"mse": 0.9}},
            )
        )  # fmt: skip

    state = health_page(return_state=True)
    assert state.is_completed(), state.message
    text = page()
    us_row = next(line for line in text.splitlines() if line.startswith("| US prices"))
    assert str(us_last) in us_row and us_row.endswith("| fresh |")
    kr_row = next(line for line in text.splitlines() if line.startswith("| KR prices"))
    assert "2024-01-02" in kr_row and "**STALE: " in kr_row
    # Every time an operator reads is in Asia/Seoul, to the minute.
    three_hours = shown(now - dt.timedelta(hours=3))
    assert f"newest backup: postgres market, {three_hours} (3 h ago)" in text
    assert "newest verified restore: market, " in text and "KST (3 d ago)" in text
    assert "+00:00" not in text and "UTC" not in text
    assert (
        "us-20241101-abc (mse 0.5, mae 0.4, hit_rate 0.55; baselines: zero_return mse 0.6" in text
    )
    assert "Job success over the last 30 days" in text
    has_flags = sa.inspect(pg_engine).has_table("quality_flags")
    assert ("none recorded" in text) != has_flags


def _bar(symbol: str, day: dt.date) -> dict:
    return {"symbol": symbol, "trade_date": day, "open": 1, "high": 1, "low": 1, "close": 1,
            "adj_close": 1, "volume": 1, "currency": "USD", "source": "yahoo"}  # fmt: skip


def _stale_event(since: dt.datetime) -> str:
    """The freshness event the price flow emitted for US prices since `since`: what the
    server's "alert on stale data" automation listens for."""
    from prefect.events.filters import EventFilter, EventOccurredFilter, EventResourceFilter

    event_filter = EventFilter(
        occurred=EventOccurredFilter(since=since),
        resource=EventResourceFilter(id=["investflow.dataset.prices.US"]),
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        with get_client(sync_client=True) as client:
            page = client.read_events(filter=event_filter, limit=5)
        if page.events:
            return page.events[0].event
        time.sleep(0.5)
    raise AssertionError("the price flow emitted no freshness event for US prices")


@pytest.mark.parametrize("behind", [0, 1, 2])
def test_status_page_and_stale_alert_agree_on_freshness(pg_engine, behind):
    """`make status`, the health page and the event behind the stale alert: one verdict."""
    now = dt.datetime.now(dt.UTC)
    market = MARKETS["US"]
    last = last_closed_session(market, now)
    window = sessions_between(market, last - dt.timedelta(days=20), last)
    newest = last if behind == 0 else window[-behind - 1]
    assert len(sessions_between(market, newest, last)) == behind
    with pg_engine.begin() as conn:
        conn.execute(
            schema.instruments.insert(), [{"symbol": "AAPL", "market": "US", "currency": "USD"}]
        )
        conn.execute(schema.daily_prices.insert(), [_bar("AAPL", newest)])

    status = subprocess.run(
        [sys.executable, "-m", "deployments.status"], env=os.environ.copy(),
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    (status_line,) = [line for line in status.splitlines() if "US prices:" in line]

    assert health_page(return_state=True).is_completed()
    (page_row,) = [line for line in page().splitlines() if line.startswith("| US prices")]

    since = dt.datetime.now(dt.UTC)
    # Nothing to fetch up to `end`: the flow only reports how fresh the store is.
    assert ingest_us_prices(symbols=["AAPL"], end=newest)["status"] == "up to date"
    event = _stale_event(since)

    expected = {0: "fresh", 1: "fresh (1 session behind", 2: "STALE: 2 sessions behind"}
    assert expected[behind] in status_line, status_line
    assert expected[behind] in page_row, page_row
    assert event == ("investflow.data.stale" if behind == 2 else "investflow.data.fresh")
