"""The A1 launch flow end to end: real oci SDK (signing with a fresh key) against a local OCI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogHandler
from pydantic import SecretStr

import tasks.clock
from blocks.oci import OciCredentials
from flows.a1_launch import launch_a1_instance
from tasks.oci.state import load_state
from tasks.settings import PROJECT_ROOT
from tests.fakes.oci import ADS, FakeClock, FakeOci, make_api_key
from tests.fakes.webhook import FakeWebhook

pytestmark = pytest.mark.integration

COMPARTMENT = "ocid1.compartment.oc1..test"


@pytest.fixture(scope="module")
def api_key():
    return make_api_key()


@pytest.fixture
def oci_fake(api_key, monkeypatch):
    with FakeOci(api_key) as server:
        monkeypatch.setenv("INVESTFLOW_OCI_ENDPOINT", server.url)
        yield server


@pytest.fixture
def webhook(monkeypatch):
    with FakeWebhook() as server:
        monkeypatch.setenv("INVESTFLOW_ALERT_WEBHOOK_URL", server.url + "/hook")
        yield server


@pytest.fixture
def creds_block(api_key):
    name = f"oci-test-{uuid.uuid4().hex[:8]}"
    OciCredentials(
        user=api_key.user,
        tenancy=api_key.tenancy,
        fingerprint=api_key.fingerprint,
        region="ap-chuncheon-1",
        private_key=SecretStr(api_key.pem),
    ).save(name)
    return name


@pytest.fixture
def name():
    return f"a1-{uuid.uuid4().hex[:8]}"


def launch(name, block, clock, **params):
    """One run in this process, on the fake clock: its sleeps pass at once and are recorded."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tasks.clock, "wall", clock.time)
        patch.setattr(tasks.clock, "sleep", clock.sleep)
        return launch_a1_instance(
            compartment_id=COMPARTMENT,
            subnet_id="ocid1.subnet.oc1..s",
            image_id="ocid1.image.oc1..i",
            display_name=name,
            ssh_public_key="ssh-ed25519 AAAAC3Nz test",
            credentials_block=block,
            return_state=True,
            **params,
        )


def attempts_table(state) -> list[dict]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    (table,) = [a for a in artifacts if a.key == "a1-launch-attempts"]
    return json.loads(table.data)


def test_capacity_three_times_then_one_launch_cycling_the_ads(oci_fake, webhook, creds_block, name):
    oci_fake.script_launch("capacity", "capacity", "capacity")
    clock = FakeClock()
    state = launch(name, creds_block, clock, retry_interval_seconds=60, retry_jitter_seconds=15)

    result = state.result()
    assert state.is_completed() and result["status"] == "launched"
    assert oci_fake.launches == 4 and oci_fake.bad_signatures == 0
    assert [r.json()["availabilityDomain"] for r in oci_fake.launch_requests] == [
        ADS[0],
        ADS[1],
        ADS[2],
        ADS[0],
    ]
    assert len({r.headers["opc-retry-token"] for r in oci_fake.launch_requests}) == 4
    assert len([i for i in oci_fake.instances if i["displayName"] == name]) == 1
    # the three ADs are tried back to back, then one pause of the interval plus jitter
    assert len(clock.sleeps) == 1 and 60 <= clock.sleeps[0] <= 75
    ready = webhook.matching("A1 instance ready")
    assert len(ready) == 1
    assert result["instance_id"] in ready[0] and ADS[0] in ready[0] and "203.0.113.10" in ready[0]
    assert len(webhook.matching("A1 launch started")) == 1
    rows = attempts_table(state)
    assert [r["outcome"] for r in rows] == ["capacity", "capacity", "capacity", "launched"]
    assert rows[0]["oci_code"] == "500 InternalError" and rows[2]["wait_s"] >= 60
    assert load_state(name).attempts == 0  # campaign cleared once the instance exists


def test_throttling_backs_off_exponentially_within_bounds(oci_fake, webhook, creds_block, name):
    oci_fake.script_launch("throttle", "throttle", "throttle", "throttle")
    clock = FakeClock()
    state = launch(name, creds_block, clock, max_run_minutes=1000)

    assert state.result()["status"] == "launched" and oci_fake.launches == 5
    waits = clock.sleeps
    for wait, step in zip(waits, [900, 1800, 3600, 3600], strict=True):
        assert step <= wait <= step + 120
    assert waits[0] < waits[1] < waits[2]
    # every 429 retried the same AD, and the channel heard of the throttling once, not 4 times
    assert {r.json()["availabilityDomain"] for r in oci_fake.launch_requests} == {ADS[0]}
    assert len(webhook.matching("throttled")) == 1


def test_not_authenticated_stops_after_one_call_and_alerts(oci_fake, webhook, creds_block, name):
    oci_fake.script_launch("auth")
    state = launch(name, creds_block, FakeClock())

    assert state.is_failed() and oci_fake.launches == 1
    error = str(state.result(raise_on_failure=False))
    assert "NotAuthenticated" in error and "opc-request-id fake/" in error
    failed = webhook.matching("A1 launch failed")
    assert len(failed) == 1 and "NotAuthenticated" in failed[0]


@pytest.mark.parametrize("lifecycle", ["RUNNING", "STOPPED"])
def test_an_existing_instance_means_zero_launches(oci_fake, webhook, creds_block, name, lifecycle):
    existing = oci_fake.add_instance(name, lifecycle)
    state = launch(name, creds_block, FakeClock())

    assert state.result()["status"] == "exists"
    assert state.result()["instance_id"] == existing["id"]
    assert oci_fake.launches == 0 and webhook.count() == 0


def ours(oci_fake, name) -> list[dict]:
    return [i for i in oci_fake.instances if i["displayName"] == name]


def lists_between_launches(oci_fake) -> list[int]:
    """How many ListInstances calls came after each LaunchInstance, before the next one."""
    counts: list[int] = []
    for req in oci_fake.requests:
        if req.method == "POST" and req.path.endswith("/instances"):
            counts.append(0)
        elif counts and req.method == "GET" and req.path.endswith("/instances"):
            counts[-1] += 1
    return counts


def test_limit_exceeded_with_no_instance_waits_for_the_counters_and_launches_once(
    oci_fake, webhook, creds_block, name
):
    # The tenancy holds nothing, but OCI's counters still count 4 cores for three launches.
    oci_fake.a1_core_limit = 4
    oci_fake.counters_lag(cores=4, launches=3)
    clock = FakeClock()
    state = launch(name, creds_block, clock, retry_interval_seconds=60, retry_jitter_seconds=0)

    assert state.is_completed() and state.result()["status"] == "launched"
    assert oci_fake.launches == 4 and len(ours(oci_fake, name)) == 1
    assert clock.sleeps == [60, 60, 60]  # a capacity pause after each, not a throttle backoff
    # each LimitExceeded was followed by a look at the compartment (and the pre-attempt list)
    assert lists_between_launches(oci_fake)[:3] == [2, 2, 2]
    assert [r["outcome"] for r in attempts_table(state)] == ["limit"] * 3 + ["launched"]
    assert attempts_table(state)[0]["oci_code"] == "400 LimitExceeded"
    assert webhook.matching("A1 launch failed") == []
    assert len(webhook.matching("A1 instance ready")) == 1
    assert load_state(name).limit_streak == 0


def test_limit_exceeded_when_ours_exists_is_done_without_a_second_launch(
    oci_fake, webhook, creds_block, name
):
    # Ours holds the tenancy's 2 A1 cores but the list lags: hidden from the start-of-run
    # check and the pre-attempt list, so the flow launches and OCI answers LimitExceeded.
    existing = oci_fake.add_instance(name, "PROVISIONING", ocpus=2, hidden_lists=2)
    oci_fake.a1_core_limit = 2
    clock = FakeClock()
    state = launch(name, creds_block, clock)

    result = state.result()
    assert result["status"] == "exists" and result["instance_id"] == existing["id"]
    assert oci_fake.launches == 1 and ours(oci_fake, name) == [existing]
    assert clock.sleeps == []  # the list right after the answer found it: no wait
    assert [r["outcome"] for r in attempts_table(state)] == ["limit", "exists"]
    assert len(webhook.matching("A1 instance ready")) == 1
    assert webhook.matching("A1 launch failed") == []


def test_limit_exceeded_past_the_configured_attempts_alerts_once_and_says_why(
    oci_fake, webhook, creds_block, name
):
    # A real limit: another instance holds the tenancy's 4 A1 cores, under another name.
    oci_fake.add_instance("someone-elses-vm", "RUNNING", ocpus=4)
    oci_fake.a1_core_limit = 4
    clock = FakeClock()
    params = dict(
        limit_exceeded_attempts=3,
        retry_interval_seconds=300,
        retry_jitter_seconds=0,
        max_run_minutes=9,
    )
    first = launch(name, creds_block, clock, **params)

    # Two answers fit in this run; the streak is kept for the next one, which goes on counting.
    assert first.result()["status"] == "waiting" and oci_fake.launches == 2
    assert load_state(name).limit_streak == 2
    assert webhook.matching("A1 launch failed") == []

    second = launch(name, creds_block, clock, **params)

    assert second.is_failed() and oci_fake.launches == 3
    assert ours(oci_fake, name) == []
    message = str(second.result(raise_on_failure=False))
    for words in (
        "LimitExceeded 3 times in a row",
        f"no instance named {name!r}",
        "Limits, Quotas and Usage",
        "limit_exceeded_attempts",
        "opc-request-id fake/",
    ):
        assert words in message
    failed = webhook.matching("A1 launch failed")
    assert len(failed) == 1 and "LimitExceeded 3 times in a row" in failed[0]
    assert webhook.count() == 2  # the campaign's start and this one failure, nothing else
    assert load_state(name).limit_streak == 0  # a later run waits through 3 answers again


def test_shape_missing_in_an_ad_drops_it_and_goes_on(oci_fake, webhook, creds_block, name):
    oci_fake.ad_outcome[ADS[0]] = "shape"
    oci_fake.script_launch("capacity")
    state = launch(name, creds_block, FakeClock())

    assert state.result()["availability_domain"] == ADS[2]
    assert [r.json()["availabilityDomain"] for r in oci_fake.launch_requests] == [
        ADS[0],
        ADS[1],
        ADS[2],
    ]


def test_a_killed_run_resumes_the_stored_backoff(oci_fake, webhook, creds_block, name):
    oci_fake.default = "throttle"
    code = (
        "from flows.a1_launch import launch_a1_instance as f; "
        f"f(compartment_id={COMPARTMENT!r}, subnet_id='s', image_id='i', display_name={name!r}, "
        f"credentials_block={creds_block!r}, throttle_base_seconds=30, "
        "throttle_jitter_seconds=5)"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 90
        while load_state(name).throttle_streak < 1:
            assert worker.poll() is None and time.time() < deadline, "worker never got a 429"
            time.sleep(0.5)
        worker.kill()  # mid-backoff, like a rebooted node
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    stored = load_state(name)
    assert oci_fake.launches == 1 and stored.attempts == 1

    # A new run: it first waits out what is left of the stored backoff, and the next 429
    # continues the streak (60 s = base * 2), instead of starting over at the base.
    oci_fake.default = "ok"
    oci_fake.script_launch("throttle")
    start = time.time()
    clock = FakeClock(start=start)
    state = launch(name, creds_block, clock, throttle_base_seconds=30, throttle_jitter_seconds=5)

    assert state.result()["status"] == "launched" and oci_fake.launches == 3
    assert 0 < clock.sleeps[0] <= 35
    assert abs(start + clock.sleeps[0] - stored.next_attempt_at) < 0.01
    assert 60 <= clock.sleeps[1] <= 65
    assert len(webhook.matching("A1 launch started")) == 1  # resumed, not restarted


def test_no_private_key_text_in_logs_artifacts_or_alerts(
    oci_fake, webhook, creds_block, name, api_key
):
    oci_fake.script_launch("capacity", "throttle", "unavailable", "auth")
    state = launch(name, creds_block, FakeClock(), progress_every=1, max_run_minutes=1000)
    assert state.is_failed() and oci_fake.launches == 4

    APILogHandler().flush()
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        run = client.read_flow_run(run_id)
    assert any("Attempt 3" in log.message for log in logs)  # the logs did reach the server
    key_lines = [line for line in api_key.pem.splitlines() if "-----" not in line]
    haystacks = {
        "logs": "\n".join(log.message for log in logs),
        "artifact": json.dumps(attempts_table(state)),
        "webhook": b"".join(webhook.raw_bodies).decode(),
        "parameters": json.dumps(run.parameters, default=str),
        "state": f"{run.state.message} {state.result(raise_on_failure=False)}",
    }
    assert webhook.count() >= 4
    for where, text in haystacks.items():
        assert "PRIVATE KEY" not in text, where
        assert not any(line in text for line in key_lines), where


def test_a_gateway_error_replays_the_same_request_and_token(oci_fake, webhook, creds_block, name):
    oci_fake.script_launch("unavailable")
    clock = FakeClock()
    state = launch(name, creds_block, clock, retry_interval_seconds=60, retry_jitter_seconds=0)

    assert state.result()["status"] == "launched" and clock.sleeps[0] == 60
    first, second = oci_fake.launch_requests
    assert first.headers["opc-retry-token"] == second.headers["opc-retry-token"]
    assert first.json() == second.json()


def test_a_run_ends_at_max_run_minutes_and_leaves_the_wait_stored(
    oci_fake, webhook, creds_block, name
):
    oci_fake.default = "capacity"
    clock = FakeClock()
    state = launch(
        name,
        creds_block,
        clock,
        retry_interval_seconds=300,
        retry_jitter_seconds=0,
        max_run_minutes=9,
        progress_every=3,
    )

    result = state.result()
    # two rounds of three ADs fit in 9 minutes (one 300 s pause); a second pause would not
    assert result["status"] == "waiting" and oci_fake.launches == 6
    assert clock.sleeps == [300]
    stored = load_state(name)
    assert stored.attempts == 6 and stored.next_attempt_at == clock.now + 300
    assert len(webhook.matching("still trying")) == 1  # 2 progress alerts, coalesced to one


def test_once_the_instance_exists_the_flow_pauses_its_own_deployment(
    oci_fake, webhook, creds_block, name
):
    from prefect.flow_engine import run_flow

    oci_fake.add_instance(name, "RUNNING")
    parameters = dict(
        compartment_id=COMPARTMENT,
        subnet_id="s",
        image_id="i",
        display_name=name,
        credentials_block=creds_block,
    )
    deployment_id = launch_a1_instance.to_deployment(
        name=f"a1-{name}", parameters=parameters, cron="*/10 * * * *"
    ).apply()
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run_from_deployment(deployment_id)
        assert client.read_deployment(deployment_id).paused is False
        result = run_flow(launch_a1_instance, flow_run=flow_run, parameters=parameters)
        assert result["status"] == "exists" and oci_fake.launches == 0
        assert client.read_deployment(deployment_id).paused is True


def test_the_deployment_form_asks_for_no_clock_or_sleep():
    # time comes from tasks/clock.py's wall() and sleep(), which the tests above replace
    assert {"clock", "sleep"}.isdisjoint(launch_a1_instance.parameters.properties)
    assert "compartment_id" in launch_a1_instance.parameters.properties
