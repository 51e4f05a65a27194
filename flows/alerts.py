"""Failure alerts: one webhook message per failed, crashed or timed-out run, with its link."""

from __future__ import annotations

from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_UI_URL

from tasks.notify import send_alert
from tasks.redact import known_secrets, redact
from tasks.settings import get_settings


@task(retries=2, retry_delay_seconds=[2, 10])
def describe_run(flow_run_id: str) -> dict:
    """Read the failed run, its flow and deployment from the Prefect API."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        flow_name = client.read_flow(run.flow_id).name
        deployment = client.read_deployment(run.deployment_id).name if run.deployment_id else None
    return {
        "id": str(run.id),
        "name": run.name,
        "flow": flow_name,
        "deployment": deployment,
        "state": run.state.name if run.state else "Unknown",
        "message": (run.state.message if run.state else "") or "",
    }


def format_alert(run: dict, ui_url: str, secrets: list[str]) -> tuple[str, str]:
    """Title and body of the alert; secrets are masked whatever the state message says."""
    where = f"{run['flow']}/{run['deployment']}" if run["deployment"] else run["flow"]
    title = f"investflow: {where} {run['state']}"
    body = "\n".join(
        [
            f"Flow run {run['name']} of {where} ended {run['state']}.",
            f"Message: {redact(run['message'][:1500], secrets) or '(none)'}",
            f"Run: {ui_url.rstrip('/')}/runs/flow-run/{run['id']}",
        ]
    )
    return title, body


@flow(name="notify-failure", retries=1, retry_delay_seconds=5, timeout_seconds=300)
def notify_failure(flow_run_id: str) -> str:
    """Post one alert about the given flow run to the alert webhook."""
    settings = get_settings()
    run = describe_run(flow_run_id)
    title, body = format_alert(
        run, PREFECT_UI_URL.value() or settings.ui_url, known_secrets(settings)
    )
    # One alert per failed run, never held back; a failed delivery fails this run, which
    # then retries once.
    send_alert(title, body, settings=settings, key=flow_run_id, urgent=True, raise_on_failure=True)
    get_run_logger().info("Alert sent for %s (%s)", run["name"], run["state"])
    return body
