"""Launch the free Ampere A1.Flex instance once Oracle has capacity, and never a second one."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from blocks.loading import load_block
from blocks.oci import OciCredentials
from tasks.notify import send_alert
from tasks.oci.client import (
    FATAL,
    LIMIT,
    Failure,
    build_clients,
    failure_from,
    find_instance,
    find_public_ip,
    launch_details,
    limit_persists,
    list_availability_domains,
    try_launch,
)
from tasks.oci.state import (
    LaunchState,
    Pacing,
    after_refusal,
    clear_state,
    interval_wait,
    load_state,
    retry_token,
    save_state,
    throttle_wait,
)
from tasks.settings import get_settings


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
    credentials_block: str = "oci-credentials",
    pause_schedule_when_done: bool = True,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> dict:
    """Try to launch the instance until it exists or max_run_minutes pass; state carries over."""
    clock, sleep = clock or time.time, sleep or time.sleep
    log = get_run_logger()
    settings = get_settings()
    clients = build_clients(
        load_block(OciCredentials, credentials_block),
        settings.oci_endpoint,
        settings.http_timeout_s,
    )
    pacing = Pacing(
        retry_interval_seconds,
        retry_jitter_seconds,
        throttle_base_seconds,
        throttle_max_seconds,
        throttle_jitter_seconds,
    )
    rows: list[dict] = []

    def record(ad: str, outcome: str, code: str = "", wait: float = 0.0, request_id=None):
        rows.append(
            {
                "time": _iso(clock()),
                "availability_domain": ad,
                "outcome": outcome,
                "oci_code": code,
                "wait_s": round(wait, 1),
                "opc_request_id": request_id or "",
            }
        )

    def done(instance, campaign: LaunchState | None, how: str) -> dict:
        """The instance exists: report it once, forget the campaign, pause our schedule."""
        ip = _public_ip(clients, compartment_id, instance.id, assign_public_ip, sleep)
        record(instance.availability_domain, how, "200" if how == "launched" else "")
        if campaign is not None:
            attempts = campaign.attempts
            send_alert(
                f"A1 instance ready: {display_name}",
                f"{instance.id} in {instance.availability_domain} ({instance.lifecycle_state}), "
                f"public IP {ip or 'not assigned yet'}, after {attempts} attempt(s).",
                urgent=True,
                settings=settings,
            )
            clear_state(display_name)
        log.info("Instance %s exists (%s) in %s", instance.id, how, instance.availability_domain)
        if pause_schedule_when_done:
            _pause_own_deployment(log)
        return {
            "status": how,
            "instance_id": instance.id,
            "public_ip": ip,
            "availability_domain": instance.availability_domain,
        }

    def look():
        """List for ours: the instance, None, or the Failure of the list call."""
        try:
            return find_instance(clients, compartment_id, display_name)
        except Exception as exc:  # noqa: BLE001 - failure_from re-raises what it cannot classify
            return failure_from(exc)

    def listing_failed(state: LaunchState, failure: Failure) -> None:
        """A failed pre-attempt list: stop on a refusal, else back off like a launch would."""
        record("-", f"list {failure.kind}", f"{failure.status or '-'} {failure.code or ''}")
        if failure.kind in (FATAL, LIMIT):
            refuse(state, f"OCI refused to list instances: {failure.describe()}")
        if failure.kind == "throttle":
            state.throttle_streak += 1
            wait = throttle_wait(
                state.throttle_streak,
                pacing.throttle_base_s,
                pacing.throttle_max_s,
                pacing.throttle_jitter_s,
            )
        else:
            wait = interval_wait(pacing.retry_interval_s, pacing.retry_jitter_s)
        state.backoff_s, state.next_attempt_at = wait, clock() + wait
        save_state(display_name, state)
        log.warning("Listing instances failed: %s; next try in %.0f s", failure.describe(), wait)

    def refuse(state: LaunchState, reason: str):
        state.last_outcome = reason
        save_state(display_name, state)
        send_alert(f"A1 launch failed: {display_name}", reason, urgent=True, settings=settings)
        raise LaunchRefused(reason)

    try:
        # 1. Ours already exists? Then this run (and the schedule) has nothing left to do.
        state = load_state(display_name)
        existing = look()
        if isinstance(existing, Failure) and existing.kind == FATAL:
            refuse(state, f"OCI refused to list instances: {existing.describe()}")
        if existing is not None and not isinstance(existing, Failure):
            return done(existing, state if state.started_at else None, "exists")

        # 2. Pick up the campaign where the last run left it.
        all_ads = availability_domains or list_availability_domains(clients)
        if state.started_at is None:
            state.started_at = clock()
            save_state(display_name, state)
            send_alert(
                f"A1 launch started: {display_name}",
                f"{shape} {ocpus} OCPU / {memory_gbs} GB in {', '.join(all_ads)}; "
                f"retrying capacity every {retry_interval_seconds:.0f} s.",
                key=f"a1-started-{display_name}",
                settings=settings,
            )
        else:
            log.info(
                "Resuming after %d attempt(s), throttle streak %d",
                state.attempts,
                state.throttle_streak,
            )
        deadline = clock() + max_run_minutes * 60

        while True:
            ads = [ad for ad in all_ads if ad not in state.dropped_ads]
            if not ads:
                refuse(state, f"No availability domain offers {shape}: {', '.join(all_ads)}")

            # 3. Wait out the stored backoff, unless that outlasts this run: the next one resumes.
            wait = max(0.0, state.next_attempt_at - clock())
            if clock() + wait >= deadline:
                log.info(
                    "Next attempt at %s is past this run's end; stopping here",
                    _iso(state.next_attempt_at),
                )
                return {
                    "status": "waiting",
                    "attempts": state.attempts,
                    "next_attempt_at": _iso(state.next_attempt_at),
                }
            if wait > 0:
                log.info("Waiting %.0f s before the next attempt", wait)
                sleep(wait)

            # 4. List before every attempt: never launch when ours is there already.
            existing = look()
            if isinstance(existing, Failure):
                listing_failed(state, existing)
                continue
            if existing is not None:
                return done(existing, state, "exists")

            # 5. One launch. Its retry token follows from the campaign and the attempt number, so
            #    a worker killed mid-call sends the same token again and OCI answers with the
            #    instance it may already have made instead of making a second one.
            ad = state.pending_ad if state.pending_ad in ads else ads[state.ad_cursor % len(ads)]
            if state.pending_ad != ad or not state.pending_token:
                state.pending_token = retry_token(display_name, state, ad)
            state.pending_ad = ad
            details = launch_details(
                display_name=display_name,
                compartment_id=compartment_id,
                availability_domain=ad,
                subnet_id=subnet_id,
                image_id=image_id,
                shape=shape,
                ocpus=ocpus,
                memory_gbs=memory_gbs,
                boot_volume_gbs=boot_volume_gbs,
                ssh_public_key=ssh_public_key,
                assign_public_ip=assign_public_ip,
            )
            result = try_launch(clients, details, state.pending_token)
            state.attempts += 1

            if not isinstance(result, Failure):
                # 6. Launched: confirm by listing again before calling it done.
                state.pending_token = state.pending_ad = None
                save_state(display_name, state)
                confirmed = look()
                confirmed = None if isinstance(confirmed, Failure) else confirmed
                if confirmed is None:
                    log.warning(
                        "Launch of %s answered 200 but the list does not show it yet", result.id
                    )
                return done(confirmed or result, state, "launched")

            code = f"{result.status or '-'} {result.code or ''}".strip()
            state.last_outcome = result.describe()
            if result.kind == FATAL:
                record(ad, result.kind, code, 0.0, result.request_id)
                refuse(state, f"OCI refused the launch in {ad}: {result.describe()}")
            if result.kind == LIMIT:
                # 7. OCI also answers LimitExceeded while its limit counters lag behind: ours
                #    listed means done; none means wait like a capacity round and try again.
                existing = look()
                if existing is not None and not isinstance(existing, Failure):
                    record(ad, result.kind, code, 0.0, result.request_id)
                    return done(existing, state, "exists")

            # 8. Capacity, throttling, a transient error, a missing shape or a lagging limit
            #    counter: retry per policy.
            wait = after_refusal(state, result.kind, ad, len(ads), pacing)
            if result.kind == LIMIT and state.limit_streak >= limit_exceeded_attempts:
                record(ad, result.kind, code, 0.0, result.request_id)
                streak, state.limit_streak = state.limit_streak, 0  # the next run counts afresh
                refuse(state, limit_persists(display_name, streak, ocpus, memory_gbs, result))
            state.backoff_s = wait
            state.next_attempt_at = clock() + wait
            save_state(display_name, state)
            record(ad, result.kind, code, wait, result.request_id)
            log.info(
                "Attempt %d in %s: %s; next attempt in %.0f s",
                state.attempts,
                ad,
                result.describe(),
                wait,
            )
            if result.kind == LIMIT:
                log.warning(
                    "LimitExceeded with none of ours listed (lagging counters?): %d of %d",
                    state.limit_streak,
                    limit_exceeded_attempts,
                )
            if result.kind == "throttle":
                send_alert(
                    f"A1 launch throttled: {display_name}",
                    f"OCI answered 429; backing off {wait:.0f} s "
                    f"({state.throttle_streak} in a row).",
                    key=f"a1-throttled-{display_name}",
                    settings=settings,
                )
            if progress_every and state.attempts % progress_every == 0:
                send_alert(
                    f"A1 launch still trying: {display_name}",
                    f"{state.attempts} attempts so far; last: {result.describe()}.",
                    key=f"a1-progress-{display_name}",
                    settings=settings,
                )
    finally:
        create_table_artifact(
            key="a1-launch-attempts",
            table=rows or [{"time": _iso(clock()), "outcome": "no attempt"}],
            description=f"Launch attempts for {display_name!r} in this run",
        )


def _public_ip(clients, compartment_id, instance_id, wanted: bool, sleep) -> str | None:
    """The public IP, when one was asked for; OCI assigns it a little after launch."""
    for attempt in range(3 if wanted else 0):
        try:
            ip = find_public_ip(clients, compartment_id, instance_id)
        except Exception:  # noqa: BLE001 - the instance exists; a missing IP is only news
            ip = None
        if ip:
            return ip
        if attempt < 2:
            sleep(10)
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


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
