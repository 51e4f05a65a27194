"""The health page: one markdown artifact with a stable key that answers "is all well?"."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.health import ARTIFACT_KEY, health_page
from tasks.market.calendars import MARKETS, last_closed_session
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
    assert str(us_last) in us_row and us_row.endswith("| yes |")
    kr_row = next(line for line in text.splitlines() if line.startswith("| KR prices"))
    assert "2024-01-02" in kr_row and "**no**" in kr_row
    assert "newest backup: postgres market, 3.0 h ago" in text
    assert "newest verified restore: market, 3.0 days ago" in text
    assert (
        "us-20241101-abc (mse 0.5, mae 0.4, hit_rate 0.55; baselines: zero_return mse 0.6" in text
    )
    assert "Job success over the last 30 days" in text
    has_flags = sa.inspect(pg_engine).has_table("quality_flags")
    assert ("none recorded" in text) != has_flags
