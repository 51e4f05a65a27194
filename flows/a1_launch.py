"""Launch the free Ampere A1.Flex instance once Oracle has capacity, and never a second one.

The decisions are tasks/oci/campaign.py's; this flow makes the calls it asks for, sleeps,
records the attempts table, sends the alerts and pauses its own deployment once done.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from blocks.loading import load_block
from blocks.names import OCI_CREDENTIALS
from blocks.oci import OciCredentials
from tasks import clock
from tasks.alerts.notify import send_alert
from tasks.oci import campaign
from tasks.oci.campaign import Step
from tasks.oci.client import (
    OciClients,
    build_clients,
    failure_from,
    find_instance,
    find_public_ip,
    launch_details,
    list_availability_domains,
    try_launch,
)
from tasks.oci.moves import (
    AdsListed,
    Alert,
    Answer,
    Answered,
    Done,
    GiveUp,
    Launch,
    ListAds,
    Listed,
    ListInstances,
    Plan,
    Row,
    Slept,
    Stop,
    Wait,
)
from tasks.oci.state import Pacing, clear_state, load_state, save_state
from tasks.settings import Settings, get_settings


class LaunchRefused(RuntimeError):
    """OCI refused the launch for a reason that retrying will not fix."""


# The schedule fires every 10 minutes and a run stops itself after max_run_minutes (9):
# 15 minutes ends one that hangs, before the next-but-one slot.
@flow(name="launch-a1-instance", timeout_seconds=900)
def launch_a1_instance(
    compartment_id: str,
    subnet_id: str,
    image_id: str,
    display_name: str = "investflow-a1",
    ssh_public_key: str | None = None,
    shape: str = "VM.Standard.A1.Flex",
    ocpus: float = 2,
    memory_gbs: float = 12,
    boot_volume_gbs: int | None = None,
    availability_domains: list[str] | None = None,
    assign_public_ip: bool = True,
    retry_interval_seconds: float = 60,
    retry_jitter_seconds: float = 15,
    throttle_base_seconds: float = 900,
    throttle_max_seconds: float = 3600,
    throttle_jitter_seconds: float = 120,
    limit_exceeded_attempts: int = 10,  # LimitExceeded answers in a row before giving up
    max_run_minutes: float = 9,  # under the 10-minute schedule: runs never overlap
    progress_every: int = 20,
    credentials_block: str = OCI_CREDENTIALS,
    pause_schedule_when_done: bool = True,
) -> dict:
    """Try to launch the instance until it exists or max_run_minutes pass; state carries over."""
    log = get_run_logger()
    settings = get_settings()
    clients = build_clients(
        load_block(OciCredentials, credentials_block),
        settings.oci_endpoint,
        settings.http_timeout_s,
    )
    plan = Plan(
        display_name=display_name,
        shape=shape,
        ocpus=ocpus,
        memory_gbs=memory_gbs,
        availability_domains=tuple(availability_domains or ()),
        pacing=Pacing(
            retry_interval_seconds,
            retry_jitter_seconds,
            throttle_base_seconds,
            throttle_max_seconds,
            throttle_jitter_seconds,
        ),
        limit_exceeded_attempts=limit_exceeded_attempts,
        max_run_minutes=max_run_minutes,
        progress_every=progress_every,
        compartment_id=compartment_id,
        subnet_id=subnet_id,
        image_id=image_id,
        boot_volume_gbs=boot_volume_gbs,
        ssh_public_key=ssh_public_key,
        assign_public_ip=assign_public_ip,
    )
    journal = _Journal(display_name, settings, log)
    try:
        return run_campaign(plan, clients, journal, pause_schedule_when_done)
    finally:
        journal.save_table()


def run_campaign(plan: Plan, clients: OciClients, journal: _Journal, pause_when_done: bool) -> dict:
    """Attempt after attempt, as the campaign's state machine says: done, paused or refused."""
    move = campaign.start(load_state(plan.display_name))
    while True:
        if move.save:
            save_state(plan.display_name, move.run.campaign)
        journal.tell(move)
        match move.action:
            case Done() as done:
                ip = _public_ip(
                    clients, plan.compartment_id, done.instance.id, plan.assign_public_ip
                )
                result = journal.done(done, ip, move.run.campaign.attempts)
                if pause_when_done:
                    _pause_own_deployment(get_run_logger())
                return result
            case Stop(next_attempt_at=next_at):
                at, attempts = campaign.iso(next_at), move.run.campaign.attempts
                return {"status": "waiting", "attempts": attempts, "next_attempt_at": at}
            case GiveUp(reason=reason):
                raise LaunchRefused(reason)
        answer = _answer(move.action, clients, plan)
        move = campaign.step(plan, move.run, answer, clock.wall())


def _answer(action, clients: OciClients, plan: Plan) -> Answer:
    """Make the call the campaign asked for; the answer goes back to it."""
    match action:
        case ListInstances():
            try:
                return Listed(find_instance(clients, plan.compartment_id, plan.display_name))
            except Exception as exc:  # noqa: BLE001 - failure_from re-raises what it cannot classify
                return Listed(failure_from(exc))
        case ListAds():
            return AdsListed(tuple(list_availability_domains(clients)))
        case Launch(ad=ad, token=token):
            return Answered(try_launch(clients, launch_details(plan, ad), token))
        case Wait(seconds=seconds):
            clock.sleep(seconds)
            return Slept()
    raise TypeError(f"no call for {action!r}")


class _Journal:
    """What a run tells: the attempts table, the log and the alert channel."""

    def __init__(self, display_name: str, settings: Settings, log) -> None:
        self.display_name, self.settings, self.log = display_name, settings, log
        self.rows: list[dict] = []

    def tell(self, move: Step) -> None:
        for row in move.rows:
            self.record(row)
        for alert in move.alerts:
            self.alert(alert)
        for level, message in move.logs:
            self.log.log(level, message)

    def record(self, row: Row) -> None:
        self.rows.append(
            {
                "time": campaign.iso(clock.wall()),
                "availability_domain": row.availability_domain,
                "outcome": row.outcome,
                "oci_code": row.oci_code,
                "wait_s": round(row.wait_s, 1),
                "opc_request_id": row.opc_request_id,
            }
        )

    def alert(self, alert: Alert) -> None:
        send_alert(
            alert.title, alert.body, key=alert.key, urgent=alert.urgent, settings=self.settings
        )

    def done(self, done: Done, public_ip: str | None, attempts: int) -> dict:
        """Ours exists: report it once and forget the campaign."""
        instance, how = done.instance, done.how
        ad = instance.availability_domain
        self.record(Row(ad, how, "200" if how == "launched" else ""))
        if done.announce:
            body = (
                f"{instance.id} in {ad} ({instance.lifecycle_state}), public IP "
                f"{public_ip or 'not assigned yet'}, after {attempts} attempt(s)."
            )
            self.alert(Alert(f"A1 instance ready: {self.display_name}", body, urgent=True))
            clear_state(self.display_name)
        self.log.info("Instance %s exists (%s) in %s", instance.id, how, ad)
        return {
            "status": how,
            "instance_id": instance.id,
            "public_ip": public_ip,
            "availability_domain": ad,
        }

    def save_table(self) -> None:
        create_table_artifact(
            key="a1-launch-attempts",
            table=self.rows or [{"time": campaign.iso(clock.wall()), "outcome": "no attempt"}],
            description=f"Launch attempts for {self.display_name!r} in this run",
        )


def _public_ip(clients, compartment_id: str, instance_id: str, wanted: bool) -> str | None:
    """The public IP, when one was asked for; OCI assigns it a little after launch."""
    for attempt in range(3 if wanted else 0):
        try:
            ip = find_public_ip(clients, compartment_id, instance_id)
        except Exception:  # noqa: BLE001 - the instance exists; a missing IP is only news
            ip = None
        if ip:
            return ip
        if attempt < 2:
            clock.sleep(10)
    return None


def _pause_own_deployment(log) -> None:
    """Pause this run's deployment (best effort): the job is done, its schedule is not needed."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import deployment

    if not deployment.id:
        return
    try:
        with get_client(sync_client=True) as client:
            client.pause_deployment(deployment.id)
        log.info("Paused deployment %s: the instance exists", deployment.name)
    except Exception as exc:  # noqa: BLE001 - pausing is a courtesy; the run succeeded anyway
        log.warning("Could not pause deployment %s: %s", deployment.name, exc)
