"""The health page: one markdown artifact (key investflow-health) an operator reads first."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client

from tasks import clock
from tasks.health import page
from tasks.health.freshness import macro_freshness, market_freshness
from tasks.settings import get_settings
from tasks.store.engine import engine_from_settings

ARTIFACT_KEY = "investflow-health"


# Hourly on a light pool; reads only (a few queries and API calls), so ten minutes is ample.
@flow(name="health-page", timeout_seconds=600)
def health_page() -> str:
    """Write the health page: freshness, runs, success rate, backups, model, quality flags."""
    now = clock.now()
    engine = engine_from_settings(get_settings())
    with get_client(sync_client=True) as client:
        deployments, success = page.deployment_runs(client, now)
    facts = {
        "markets": market_freshness(engine, now),
        "macro": macro_freshness(engine, now),
        "deployments": deployments,
        "success": success,
        "backups": page.backups(engine),
        "models": page.promoted_models(engine),
        "flags": page.open_quality_flags(engine),
    }
    markdown = page.render(facts, now)
    create_markdown_artifact(markdown, key=ARTIFACT_KEY, description="investflow at a glance")
    get_run_logger().info("health page written (artifact %s)", ARTIFACT_KEY)
    return markdown
