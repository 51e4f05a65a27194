"""market-prices: a 9,000-symbol market split into child runs of the price deployment, run by a
real process worker against the session's Prefect server and the Yahoo and listing stand-ins."""

from __future__ import annotations

import collections
import datetime as dt
import uuid

import pytest
import sqlalchemy as sa
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from flows.listings import refresh_universes
from flows.market import CHILD_WAIT_S, part_size, split
from tasks.limits import set_limit
from tests.deployments import stack

pytestmark = pytest.mark.integration

FRI = dt.datetime(2024, 6, 14, 22, 0, tzinfo=dt.UTC)


def test_split_covers_every_symbol_once_in_even_parts():
    symbols = [f"S{i:05d}" for i in range(9001)]
    parts = split(symbols + symbols[:10], 1500)
    assert len(parts) == 7 and max(map(len, parts)) - min(map(len, parts)) <= 1
    assert sorted(s for p in parts for s in p) == sorted(symbols)


def test_children_sharing_one_address_get_parts_they_can_fetch_before_their_timeout():
    """Behind one NAT address every child takes the one `yahoo` budget: four children of 1,500
    at a quarter of 4 requests a second each would wait 25 of their 30 minutes."""
    set_limit("test-shared-yahoo", 4, 4.0)
    shared = part_size("test-shared-yahoo", 1500, shared=True, parallel=4)
    assert shared < 1500
    assert shared / (4.0 / 4) <= CHILD_WAIT_S < 30 * 60  # its share of the rate, in time
    assert len(split([f"S{i:05d}" for i in range(9000)], shared)) == -(-9000 // shared)
    # Its own budget, or only two at once, leaves the asked size as it is.
    assert part_size("test-shared-yahoo", 1500, shared=False, parallel=4) == 1500
    assert part_size("test-shared-yahoo", 1500, shared=True, parallel=2) == 1500


def pull_steps() -> list:
    return yaml.safe_load((stack.ROOT / "prefect.yaml").read_text())["pull"]


@pytest.fixture
def process_pool():
    name = f"test-market-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    yield name
    with get_client(sync_client=True) as client:
        client.delete_work_pool(name)


def deploy(client, flow, name: str, pool: str, entrypoint: str) -> uuid.UUID:
    """flow on pool as prefect.yaml deploys it (its pull step), under a test's own name."""
    return client.create_deployment(
        flow_id=client.create_flow(flow),
        name=name,
        work_pool_name=pool,
        entrypoint=entrypoint,
        pull_steps=pull_steps(),
    )


@pytest.mark.slow
# 9,000 symbols through three child processes: about 13 minutes on a loaded 2-core machine.
@pytest.mark.timeout(2400)
@pytest.mark.listing_sizes(nasdaq=5000, nyse=4000)
def test_nine_thousand_symbols_in_child_runs_none_twice_none_missed(
    listings, yahoo, pg_engine, pg_url, process_pool, tmp_path
):
    from flows.market import ingest_market_prices
    from flows.prices import ingest_us_prices

    # The rate limit as good as off (its slots taken a chunk at a time), as the children's
    # copies of it are: this measures nothing of the polite rate, only that the split is whole.
    set_limit("yahoo", 1000, 1000.0)
    refresh_universes.with_options(retries=0)(
        names=["nasdaq", "nyse"], as_of=FRI.date(), retry_delay_s=0.01
    )
    members = {s.replace(".", "-") for s, _ in listings.naver["NASDAQ"] + listings.naver["NYSE"]}
    assert len(members) == 9000

    suffix = process_pool.removeprefix("test-market-")
    with get_client(sync_client=True) as client:
        child = deploy(
            client,
            ingest_us_prices,
            f"us-{suffix}",
            process_pool,
            "flows/prices.py:ingest_us_prices",
        )
        parent = deploy(
            client,
            ingest_market_prices,
            f"market-{suffix}",
            process_pool,
            "flows/market.py:ingest_market_prices",
        )
    env = stack.stack_env(
        **yahoo.env(),
        INVESTFLOW_DATABASE_URL=pg_url,
        INVESTFLOW_HTTP_TIMEOUT_S="10",
        PYTHONPATH=str(stack.ROOT),
    )
    with stack.worker(process_pool, env, tmp_path, limit=4):
        with get_client(sync_client=True) as client:
            run = client.create_flow_run_from_deployment(
                parent,
                parameters={
                    "market": "US",
                    "universes": ["nasdaq", "nyse"],
                    "per_child": 3000,
                    "parallel": 3,
                    "child_deployment": f"us-prices/us-{suffix}",
                    "start": "2024-06-10",
                    "as_of": FRI.isoformat(),
                    "backoff_s": 0.01,
                },
            )
        done = stack.wait_for_final_state(run.id, timeout=1800)
        log = (tmp_path / f"worker-{process_pool}.log").read_text()[-3000:]
        assert done.state_name == "Completed", log

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[child]))
        )
    assert len(children) == 3
    assert all(c.state and c.state.is_final() and c.state_name == "Completed" for c in children)
    # Every member asked of Yahoo exactly once: none twice, none missed.
    asked = collections.Counter(r.path.rsplit("/", 1)[1] for r in yahoo.chart_requests())
    assert set(asked) == members
    assert max(asked.values()) == 1
    with pg_engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT count(DISTINCT symbol), max(trade_date) FROM daily_prices")
        ).one()
    assert stored == (9000, dt.date(2024, 6, 14))
